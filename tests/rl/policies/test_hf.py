"""HFPolicy on a tiny LlamaForCausalLM built from a config, with a tokenizer built locally.

transformers is an optional extra; the importorskip below is the guard for that extra only.
Tolerance 1e-5 on log-probs: the KV-cache path and the full forward sum the same float32
products in different orders (observed differences ~1e-6 on logits of magnitude < 10).
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from rl.optim import MuonClip  # noqa: E402
from rl.policies.base import check_rollout  # noqa: E402
from rl.policies.hf import HFPolicy, tiny_llama  # noqa: E402
from rl.envs.addition import EOS, PAD, VOCAB_SIZE, AdditionEnv, AdditionTokenizer, answer_targets, encode_problems  # noqa: E402


def _policy(seed=0, **kw) -> HFPolicy:
    torch.manual_seed(seed)
    model = tiny_llama(vocab_size=VOCAB_SIZE, hidden_size=32, num_layers=2, num_heads=2, eos_id=EOS, pad_id=PAD, **kw)
    return HFPolicy(model, AdditionTokenizer().to_hf(), max_new_tokens=5)


def test_locally_built_tokenizer_matches_the_task_ids():
    tok = AdditionTokenizer().to_hf()
    assert tok("37+45=", add_special_tokens=False)["input_ids"] == AdditionTokenizer().encode("37+45=")
    assert tok.eos_token_id == EOS and tok.pad_token_id == PAD
    p = _policy()
    assert (p.eos_id, p.pad_id) == (EOS, PAD)  # taken from the tokenizer


def test_cached_sampling_logp_equals_teacher_forced_log_probs_with_left_padding():
    p = _policy()
    with torch.no_grad():  # sharpen the random model so that EOS appears at different steps
        p.model.get_input_embeddings().weight.mul_(30)
    prompts = torch.randint(0, 12, (6, 6), generator=torch.Generator().manual_seed(3))
    prompts[:2, :3] = PAD
    r = p.sample(prompts, torch.Generator().manual_seed(0), temperature=0.8)
    check_rollout(r)
    lp = p.log_probs(prompts, r.tokens, r.mask, temperature=0.8)
    torch.testing.assert_close(lp, r.logp, rtol=0, atol=1e-5)
    # after the first EOS: mask False, pad tokens, logp 0
    for row in range(6):
        eos_at = (r.tokens[row] == EOS).nonzero()
        if len(eos_at):
            e = int(eos_at[0])
            assert r.mask[row, : e + 1].all() and not r.mask[row, e + 1 :].any()
            assert (r.tokens[row, e + 1 :] == PAD).all() and (r.logp[row, e + 1 :] == 0).all()
        else:
            assert r.mask[row].all()
    # a left-padded prompt scores like the same prompt without padding
    lp0 = p.log_probs(prompts[:1, 3:], r.tokens[:1], r.mask[:1], temperature=0.8)
    torch.testing.assert_close(lp0, lp[:1], rtol=0, atol=1e-5)
    # the same generator seed gives the same rollout
    r2 = p.sample(prompts, torch.Generator().manual_seed(0), temperature=0.8)
    assert torch.equal(r2.tokens, r.tokens)
    ent = p.entropy(prompts, r.tokens, r.mask)
    assert ((ent >= 0) & (ent <= torch.log(torch.tensor(float(VOCAB_SIZE))) + 1e-5)).all()
    assert (ent[~r.mask] == 0).all()


def test_teacher_forcing_trains_the_hf_model_offline():
    p = _policy()
    n = 2
    a = torch.randint(0, 100, (64,), generator=torch.Generator().manual_seed(0))
    b = torch.randint(0, 100, (64,), generator=torch.Generator().manual_seed(1))
    prompts = encode_problems(a, b, n)
    tgt, tmask = answer_targets(a + b, n)
    opt = torch.optim.AdamW(p.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = -(p.log_probs(prompts, tgt, tmask).sum() / tmask.sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    # log(14) = 2.64 at uniform; an untrained model stays there, a trained one drops >= 0.7 nat.
    assert losses[0] > 2.4 and losses[-1] < losses[0] - 0.7, losses


def test_env_builds_an_hf_policy_and_muonclip_finds_llama_heads():
    env = AdditionEnv(quick=True, progress=False)
    p = env.make_policy(backend="hf", pretrained=False)
    assert isinstance(p, HFPolicy) and p.max_new_tokens == env.max_new_tokens
    clip = MuonClip(p, tau=100.0)
    assert [(s.num_heads, s.num_kv_heads, s.head_dim, s.rotary) for s in clip.specs] == [(2, 2, 16, True)]
    # force one head far above tau and take a step: the replay clips it
    attn = p.model.model.layers[0].self_attn
    with torch.no_grad():
        attn.q_proj.weight[:16] *= 300
        attn.k_proj.weight[:16] *= 300
    prompts = env.sample_prompts(8, torch.Generator().manual_seed(0))
    r = p.sample(prompts, torch.Generator().manual_seed(1))
    (-p.log_probs(prompts, r.tokens, r.mask).sum()).backward()
    clip.step()
    assert clip.last_stats["clipped_heads"] == 1 and clip.last_stats["max_logit"] > 100.0
    # measured again (bound |q||k| s under the new weights): at most tau
    (-p.log_probs(prompts, r.tokens, r.mask).sum()).backward()
    clip.recheck = False
    clip.optimizer = torch.optim.SGD(p.parameters(), lr=0.0)
    clip.step()
    assert clip.last_stats["max_logit"] <= 100.0 * (1 + 1e-5)

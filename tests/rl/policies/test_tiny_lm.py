"""Tiny LM policy: KV-cache sampling, teacher-forced log-probs and entropies, padding, bad input.

Tolerances: log-probs from the KV-cache path and from one teacher-forced pass agree to 1e-5
(float32, same products summed in different orders; observed ~3e-6 on logits scaled x10).
The sampling-distribution test is a chi-square goodness-of-fit test at level 1e-3 (its
false-failure rate for a correct sampler), with a fixed seed.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from rl.envs.addition import EOS, PAD, VOCAB_SIZE
from rl.policies.base import check_rollout
from rl.policies.tiny_lm import TinyLMConfig, TinyLMPolicy


CONFIGS = [
    dict(),
    dict(n_kv_heads=2, pos="learned", mlp="gelu", qkv_bias=True),
]


def _policy(seed=0, scale=10.0, max_new_tokens=6, **kw) -> TinyLMPolicy:
    torch.manual_seed(seed)
    pol = TinyLMPolicy(TinyLMConfig(vocab_size=VOCAB_SIZE, d_model=32, n_heads=4, max_seq_len=16, **kw),
                       eos_id=EOS, pad_id=PAD, max_new_tokens=max_new_tokens)
    with torch.no_grad():  # sharpen the random model so that rows stop at different steps
        for p in pol.parameters():
            if p.dim() == 2:
                p.mul_(scale)
    return pol


def _prompts(B=8, P=5, seed=3):
    pr = torch.randint(0, 12, (B, P), generator=torch.Generator().manual_seed(seed))
    pr[:3, :2] = PAD  # left padding on three rows
    return pr


@pytest.mark.parametrize("kw", CONFIGS)
def test_kv_cache_sampling_logp_equals_teacher_forced_log_probs(kw):
    pol = _policy(max_new_tokens=12, **kw)
    prompts = _prompts()
    r = pol.sample(prompts, torch.Generator().manual_seed(1), temperature=1.3)
    check_rollout(r)
    lp = pol.log_probs(prompts, r.tokens, r.mask, temperature=1.3)
    torch.testing.assert_close(lp, r.logp, rtol=0, atol=1e-5)
    lens = r.mask.sum(1)
    assert lens.min() < lens.max()  # the premise: rows really stop at different steps
    for row in range(prompts.shape[0]):
        n = int(lens[row])
        assert r.mask[row, :n].all() and not r.mask[row, n:].any()
        assert (r.tokens[row, n:] == PAD).all() and (r.logp[row, n:] == 0).all()
        if n < r.tokens.shape[1]:
            assert r.tokens[row, n - 1] == EOS and (r.tokens[row, : n - 1] != EOS).all()
    # left padding changes nothing: padded rows score like their unpadded prompts
    lp_short = pol.log_probs(prompts[:3, 2:], r.tokens[:3], r.mask[:3], temperature=1.3)
    torch.testing.assert_close(lp_short, lp[:3], rtol=0, atol=1e-5)


def test_repeated_prompts_share_one_prefill_and_keep_exact_log_probs():
    """Groups of equal prompts (as the trainer sends them) take the shared-prefill path; the
    recorded logp still equals one teacher-forced pass (1e-5, as above)."""
    pol = _policy(max_new_tokens=8)
    prompts = _prompts().repeat_interleave(4, dim=0)
    r = pol.sample(prompts, torch.Generator().manual_seed(1), temperature=0.7)
    torch.testing.assert_close(pol.log_probs(prompts, r.tokens, r.mask, temperature=0.7), r.logp, rtol=0, atol=1e-5)
    assert not all(torch.equal(r.tokens[i], r.tokens[i + 1]) for i in range(0, 32, 4))  # rows still differ


def test_sampling_is_reproducible_and_seed_dependent():
    pol = _policy(scale=3.0)
    prompts = _prompts()
    a = pol.sample(prompts, torch.Generator().manual_seed(5))
    b = pol.sample(prompts, torch.Generator().manual_seed(5))
    c = pol.sample(prompts, torch.Generator().manual_seed(6))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logp, b.logp)
    assert not torch.equal(a.tokens, c.tokens)


def test_first_token_frequencies_follow_the_tempered_softmax():
    pol = _policy(scale=3.0, max_new_tokens=1)
    N, T = 4000, 1.5
    prompts = torch.randint(0, 12, (1, 5), generator=torch.Generator().manual_seed(4)).repeat(N, 1)
    r = pol.sample(prompts, torch.Generator().manual_seed(0), temperature=T)
    with torch.no_grad():
        probs = torch.softmax(pol.model(prompts[:1])[0, -1].double() / T, -1)
    counts = torch.bincount(r.tokens[:, 0], minlength=VOCAB_SIZE).double()
    keep = probs * N >= 5  # chi-square needs expected counts >= 5; pool the rest
    obs = torch.cat([counts[keep], counts[~keep].sum()[None]])
    exp = torch.cat([probs[keep], probs[~keep].sum()[None]]) * N
    obs, exp = obs[exp > 0], exp[exp > 0]
    assert stats.chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue > 1e-3
    # and the recorded logp is log of the tempered probability of the drawn token
    torch.testing.assert_close(r.logp[:, 0].double(), probs.log()[r.tokens[:, 0]], rtol=0, atol=1e-5)


def test_uniform_model_gives_closed_form_log_probs_and_entropy():
    pol = _policy()
    with torch.no_grad():
        pol.model.norm.weight.zero_()  # logits = 0 for every token: the uniform distribution
    prompts = _prompts()
    tokens = torch.randint(0, VOCAB_SIZE, (8, 4), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]] + [[1, 1, 1, 0]] * 5, dtype=torch.bool)
    lp = pol.log_probs(prompts, tokens, mask)
    ent = pol.entropy(prompts, tokens, mask)
    want = torch.where(mask, torch.tensor(-math.log(VOCAB_SIZE)), torch.tensor(0.0))
    torch.testing.assert_close(lp, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(ent, -want, rtol=0, atol=1e-6)


def test_masked_positions_neither_change_values_nor_leak_gradients():
    pol = _policy(scale=1.0)
    prompts = _prompts()
    r = pol.sample(prompts, torch.Generator().manual_seed(2))
    junk = torch.where(r.mask, r.tokens, torch.randint(0, VOCAB_SIZE, r.tokens.shape))
    lp1 = pol.log_probs(prompts, r.tokens, r.mask)
    lp2 = pol.log_probs(prompts, junk, r.mask)
    assert torch.equal(lp1, lp2)
    lp2.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in pol.parameters() if p.grad is not None)


def test_bad_inputs_raise_value_errors():
    pol = _policy()
    prompts = _prompts()
    g = torch.Generator().manual_seed(0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            pol.sample(prompts, g, temperature=bad)
    with pytest.raises(ValueError, match="prompts"):
        pol.sample(None, g)
    with pytest.raises(ValueError, match="mask"):
        pol.log_probs(prompts, torch.zeros(8, 3, dtype=torch.long), torch.ones(8, 3))
    with pytest.raises(ValueError, match="do not match"):
        pol.log_probs(prompts, torch.zeros(4, 3, dtype=torch.long), torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="n_kv_heads"):
        TinyLMConfig(vocab_size=14, n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="pad_id"):
        TinyLMPolicy(TinyLMConfig(vocab_size=14), eos_id=12, pad_id=14, max_new_tokens=3)


def test_a_bfloat16_copy_samples_in_bfloat16_and_its_log_probs_differ_slightly():
    """The reduced-precision sampler of the trainer (sampler_dtype): a bfloat16 copy runs end to
    end in bfloat16 (rotary angles are rounded to the activations' dtype), records float32
    log-probs of its own distribution, and those differ from the float32 model's by bfloat16
    rounding: more than 0, less than 0.1 nats on a sharpened random model (bfloat16 keeps 8
    significant bits: relative error 2^-8 on logits of a few units)."""
    import copy

    pol = _policy(max_new_tokens=8)
    low = copy.deepcopy(pol).to(torch.bfloat16)
    prompts = _prompts()
    r = low.sample(prompts, torch.Generator().manual_seed(2))
    check_rollout(r)
    assert r.logp.dtype == torch.float32 and low.model.embed_tokens.weight.dtype == torch.bfloat16
    gap = (r.logp - pol.log_probs(prompts, r.tokens, r.mask).detach())[r.mask].abs()
    assert 0 < float(gap.max()) < 0.1, float(gap.max())


def test_answer_log_table_is_the_distribution_log_probs_gathers_from():
    pol = _policy(max_new_tokens=6)
    prompts = _prompts()
    r = pol.sample(prompts, torch.Generator().manual_seed(4))
    table = pol.answer_log_table(prompts, r.tokens, r.mask, temperature=0.7)
    assert table.shape == (*r.tokens.shape, VOCAB_SIZE)
    torch.testing.assert_close(table.logsumexp(-1), torch.zeros(r.tokens.shape), rtol=0, atol=1e-5)
    picked = table.gather(-1, torch.where(r.mask, r.tokens, 0)[..., None]).squeeze(-1)
    torch.testing.assert_close(torch.where(r.mask, picked, 0.0), pol.log_probs(prompts, r.tokens, r.mask,
                                                                                temperature=0.7), rtol=0, atol=0)

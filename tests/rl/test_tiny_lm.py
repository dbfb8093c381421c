"""Tiny LM policy (KV-cache sampling, log-probs, padding) and the addition task with its warm start.

Tolerances: log-probs from the KV-cache path and from one teacher-forced pass agree to 1e-5
(float32, same products summed in different orders; observed ~3e-6 on logits scaled x10).
The sampling-distribution test is a chi-square goodness-of-fit test at level 1e-3 (its
false-failure rate for a correct sampler), with a fixed seed.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from scipy import stats

import rl.tasks.addition as addition
from rl.policies.base import check_rollout
from rl.policies.tiny_lm import TinyLMConfig, TinyLMPolicy
from rl.tasks.addition import (
    EOS,
    PAD,
    QUICK_CONFIG,
    VOCAB_SIZE,
    AdditionEnv,
    AdditionTokenizer,
    cache_key,
    encode_problems,
    make_env,
    quick_warm_start,
    score,
    warm_start,
)


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


# ------------------------------------------------------------------------------ addition task


def _answers(strings: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    tok = AdditionTokenizer()
    W = max(len(s) for s in strings) + 2
    ids = torch.full((len(strings), W), PAD)
    mask = torch.zeros(len(strings), W, dtype=torch.bool)
    for i, s in enumerate(strings):
        seq = tok.encode(s.rstrip("$")) + ([EOS] if s.endswith("$") else [])
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = True
    return ids, mask


def test_rewards_exact_and_partial_credit_on_hand_computed_cases():
    a = torch.tensor([37, 37, 37, 37, 0, 99, 5])
    b = torch.tensor([45, 45, 45, 45, 0, 99, 5])
    prompts = encode_problems(a, b, 2)
    assert AdditionTokenizer().decode(prompts[0]) == "37+45="
    # '$' marks EOS. 37+45 = 82, 0+0 = 0, 99+99 = 198, 5+5 = 10.
    tokens, mask = _answers(["82$", "83$", "82", "821$", "0$", "198$", "010$"])
    assert score(prompts, tokens, mask, 2).tolist() == [1, 0, 0, 0, 1, 1, 0]
    partial = score(prompts, tokens, mask, 2, partial_credit=True)
    # matches / max(len(target incl. EOS), len(answer)):
    want = [1, 2 / 3, 2 / 3, 2 / 4, 1, 1, 0 / 4]
    torch.testing.assert_close(partial, torch.tensor(want), rtol=0, atol=1e-7)


def test_env_prompts_rewards_and_factory():
    env = make_env(quick=False, progress=False)
    assert env.name == "tiny-lm" and env.max_new_tokens == 4
    g = torch.Generator().manual_seed(0)
    prompts = env.sample_prompts(200, g)
    assert prompts.shape == (200, 6)
    assert torch.equal(prompts, env.sample_prompts(200, torch.Generator().manual_seed(0)))
    tok = AdditionTokenizer()
    texts = [tok.decode(p) for p in prompts]
    truth = [str(int(t[:2]) + int(t[3:5])) + "$" for t in texts]  # Python's own arithmetic
    tokens, mask = _answers(truth)
    assert env.reward(prompts, tokens, mask).tolist() == [1.0] * 200
    off = [str(int(s[:-1]) + 1) + "$" for s in truth]
    tokens, mask = _answers(off)
    assert env.reward(prompts, tokens, mask).sum() == 0
    with pytest.raises(ValueError, match="addition prompts"):
        env.reward(prompts[:, :5], tokens, mask)
    bad = prompts.clone()
    bad[0, 2] = 11
    with pytest.raises(ValueError, match="malformed"):
        env.reward(bad, tokens, mask)
    with pytest.raises(ValueError, match="backend"):
        env.make_policy(backend="jax")


# ------------------------------------------------------------------------------ warm start

TINY = dataclasses.replace(
    QUICK_CONFIG,
    model=TinyLMConfig(vocab_size=VOCAB_SIZE, d_model=16, n_layers=1, n_heads=2, max_seq_len=8),
    max_steps=20,
    eval_every=10,
    eval_size=32,
    target_success=1.0,
)


def test_cache_key_follows_the_config():
    assert cache_key(TINY) == cache_key(dataclasses.replace(TINY))
    keys = {cache_key(TINY)} | {
        cache_key(dataclasses.replace(TINY, **kw))
        for kw in ({"seed": 1}, {"lr": 2e-3}, {"max_steps": 21},
                   {"model": dataclasses.replace(TINY.model, d_model=24)})
    }
    assert len(keys) == 5


def test_warm_start_is_cached_resumable_and_deterministic(tmp_path, monkeypatch):
    pol, info = warm_start(TINY, cache_dir=tmp_path / "a", progress=False)
    assert not info["cached"] and info["steps"] == 20 and len(info["history"]) == 2
    # A second call loads the cached weights and does not train.
    monkeypatch.setattr(addition, "_train", lambda *a, **k: pytest.fail("retrained a cached config"))
    pol2, info2 = warm_start(TINY, cache_dir=tmp_path / "a", progress=False)
    monkeypatch.undo()
    assert info2["cached"] and info2["success"] == info["success"]
    assert all(torch.equal(v, pol2.state_dict()[k]) for k, v in pol.state_dict().items())

    # Interrupted after its first checkpoint (step 10), then resumed: the same weights as
    # the uninterrupted run above, which also shows that training is deterministic.
    real_save = addition.atomic_save

    def save_then_crash(obj, path):
        real_save(obj, path)
        if "partial" in path.name:
            raise KeyboardInterrupt

    monkeypatch.setattr(addition, "atomic_save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        warm_start(TINY, cache_dir=tmp_path / "b", progress=False)
    monkeypatch.undo()
    pol3, info3 = warm_start(TINY, cache_dir=tmp_path / "b", progress=False)
    assert not info3["cached"] and info3["steps"] == 20
    assert all(torch.equal(v, pol3.state_dict()[k]) for k, v in pol.state_dict().items())
    assert not list((tmp_path / "b" / "tiny_lm_sft").glob("*.partial.pt"))


def test_quick_warm_start_reaches_a_middling_success_rate(tmp_path):
    pol, info = quick_warm_start(cache_dir=tmp_path)
    # The target band of the issue: 20-60% exact match at temperature 1, so RL has room.
    assert 0.2 <= info["success"] <= 0.6, info["success"]
    env = AdditionEnv(QUICK_CONFIG, progress=False, cache_dir=tmp_path)
    prompts = env.sample_prompts(512, torch.Generator().manual_seed(123))
    fresh = addition.success_rate(pol, prompts, QUICK_CONFIG.n_digits, seed=7)
    # Re-measured on fresh prompts: a 512-sample estimate has sd <= 0.022, so +-0.1 is > 4 sd.
    assert abs(fresh - info["success"]) < 0.1
    assert isinstance(env.make_policy(), TinyLMPolicy)


@pytest.mark.slow
def test_short_rl_run_after_the_warm_start_raises_exact_match(tmp_path):
    """30 on-policy GRPO steps (16 prompts x 8 samples) on the quick warm start.

    Success is measured on 1024 fixed prompts, one sample each, before and after; the rise
    must pass a one-sided two-proportion z-test at level 1e-3 (z > 3.09), so evaluation
    noise alone would pass it with probability < 0.1%.
    """
    from rl.trainer import TrainConfig, train

    env = AdditionEnv(QUICK_CONFIG, progress=False, cache_dir=tmp_path)
    prompts = env.sample_prompts(1024, torch.Generator().manual_seed(99))
    before = addition.success_rate(env.make_policy(), prompts, QUICK_CONFIG.n_digits, seed=5)
    # kl_every=0: the post-update KL metric is not needed here and costs a forward pass per step
    cfg = TrainConfig(env="tiny-lm", steps=30, prompts_per_step=16, group_size=8, lr=1e-3, seed=0, exact_every=0,
                      kl_every=0)
    res = train(cfg, env=env)
    after = addition.success_rate(res.policy, prompts, QUICK_CONFIG.n_digits, seed=5)
    pooled = (before + after) / 2
    z = (after - before) / math.sqrt(2 * pooled * (1 - pooled) / 1024)
    assert z > 3.09, (before, after, z)


@pytest.mark.slow
def test_default_rl_run_raises_exact_match():
    """The default configuration learns: the 2-digit warm start (cached in the default cache,
    trained once, ~1 min on a miss) and the environment's default learning rate, 60
    on-policy steps of 8 prompts x 8 samples, for 5 seeds.

    Per seed, exact match is measured before and after on 1024 prompts of that seed (one
    sample each), so each difference carries its own evaluation noise. The rise must pass a
    one-sided paired t-test at level 0.01 (t > 3.747 at 4 df: a policy that does not improve
    passes with probability <= 1%) and average at least 0.02. Measured with these seeds: rises
    0.059, 0.036, 0.063, 0.068, 0.046 (mean 0.054, sd 0.013, t = 9.3). False-failure rate for
    a policy that truly rises that much: ~0.05% (noncentral t, delta = 0.054 / (0.013 / sqrt 5)
    = 9.3); with a pessimistic sd of 0.02 it would be ~7%. Under the warm start ~74% of the
    groups of 8 have mixed rewards, so most groups carry a non-zero advantage.
    """
    from rl.trainer import TrainConfig, train

    env = make_env(progress=False)
    assert env.default_lr == 1e-4 and env.n_digits == 2
    base = env.make_policy()
    rises = []
    for seed in range(5):
        prompts = env.sample_prompts(1024, torch.Generator().manual_seed(1000 + seed))
        before = addition.success_rate(base, prompts, env.n_digits, seed=seed)
        cfg = TrainConfig(env="tiny-lm", steps=60, seed=seed, exact_every=0, kl_every=0)  # lr: the default
        res = train(cfg, env=env)
        after = addition.success_rate(res.policy, prompts, env.n_digits, seed=seed)
        assert math.isfinite(res.records[-1]["loss"]) and res.nonfinite_skips == 0
        rises.append(after - before)
    t = stats.ttest_1samp(rises, 0.0, alternative="greater")
    assert t.pvalue < 0.01 and sum(rises) / len(rises) >= 0.02, (rises, t)

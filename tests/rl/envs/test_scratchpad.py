"""The scratchpad addition task: prompts and answers against Python's integer arithmetic, the
exact-match reward, the checkpoint a seed picks, and the exact objective against an independent
computation (a prefix-by-prefix float64 product, and the sampled reward it is the mean of)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from rl.envs import make_env
from rl.envs.addition import EOS, PAD, VOCAB_SIZE
from rl.envs.scratchpad import (
    QUICK_SCRATCHPAD, ScratchpadAdditionEnv, ScratchpadWarmStart, answers, encode_prompts, exact_objective, score,
)
from rl.policies.tiny_lm import TinyLMConfig, TinyLMPolicy


def _written(a: int, b: int, n: int) -> list[int]:
    """The scratchpad by schoolbook addition in Python integers: s_0 c_1 s_1 c_2 ... EOS."""
    out, carry = [], 0
    for i in range(n):
        t = (a // 10**i) % 10 + (b // 10**i) % 10 + carry
        carry = t // 10
        out += [t % 10, carry]
    return out + [EOS]


def test_prompts_and_answers_follow_schoolbook_addition():
    cases = [(0, 0), (999999, 1), (999999, 999999), (123456, 654321), (500000, 500000), (90817, 9183)]
    a = torch.tensor([x for x, _ in cases])
    b = torch.tensor([y for _, y in cases])
    prompts = encode_prompts(a, b, 6)
    assert prompts.shape == (6, 13) and prompts[1].tolist() == [9, 1] + [9, 0] * 5 + [11]
    got = answers(prompts, 6)
    assert got.shape == (6, 13)  # >= 12 answer tokens, EOS included
    for row, (x, y) in zip(got.tolist(), cases):
        assert row == _written(x, y, 6)
        digits, carries = row[0:12:2], row[1:12:2]
        assert sum(d * 10**i for i, d in enumerate(digits)) + carries[-1] * 10**6 == x + y
    g = torch.Generator().manual_seed(0)
    many_a, many_b = torch.randint(0, 10**6, (300,), generator=g), torch.randint(0, 10**6, (300,), generator=g)
    rows = answers(encode_prompts(many_a, many_b, 6), 6).tolist()
    assert rows == [_written(x, y, 6) for x, y in zip(many_a.tolist(), many_b.tolist())]


def test_reward_is_exact_match_of_the_whole_scratchpad():
    prompts = encode_prompts(torch.tensor([58, 58, 58, 58, 58]), torch.tensor([67, 67, 67, 67, 67]), 2)
    right = answers(prompts, 2)  # 58 + 67 = 125: s0 5 c1 1 s1 2 c2 1 EOS
    assert right[0].tolist() == [5, 1, 2, 1, EOS]
    tokens = torch.full((5, 7), PAD)
    mask = torch.zeros(5, 7, dtype=torch.bool)
    tokens[:, :5], mask[:, :5] = right, True
    tokens[1, 1] = 0                       # a wrong carry, the sum digits right
    mask[2, 4] = False                     # no EOS
    tokens[3, 5], mask[3, 5] = 3, True     # a token after EOS
    tokens[4, 0] = 6                       # a wrong digit
    assert score(prompts, tokens, mask, 2).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert score(prompts, tokens[:, :4], mask[:, :4], 2).tolist() == [0.0] * 5  # too short to be right


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="operands"):
        encode_prompts(torch.tensor([100]), torch.tensor([1]), 2)
    prompts = encode_prompts(torch.tensor([12]), torch.tensor([34]), 2)
    with pytest.raises(ValueError, match=r"\[B, 5\]"):
        answers(prompts[:, :4], 2)
    bad = prompts.clone()
    bad[0, 4] = 3
    with pytest.raises(ValueError, match="malformed"):
        score(bad, answers(prompts, 2), torch.ones(1, 5, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="bool"):
        score(prompts, answers(prompts, 2), torch.ones(1, 5), 2)
    with pytest.raises(ValueError, match="warm_starts"):
        ScratchpadAdditionEnv(warm_starts=0)
    for kw, match in [({"label_smoothing": 1.0}, "label_smoothing"), ({"decay_steps": 5000}, "decay_steps"),
                      ({"model": TinyLMConfig(vocab_size=9)}, "vocab_size")]:
        with pytest.raises(ValueError, match=match):
            ScratchpadWarmStart(**kw)


def test_registry_entry_and_the_checkpoint_a_seed_picks():
    env = make_env("tiny-lm-scratchpad", seed=4, warm_starts=3, progress=False)
    assert isinstance(env, ScratchpadAdditionEnv) and env.name == "tiny-lm-scratchpad"
    assert env.max_new_tokens == 13 and env.checkpoint == 1 and env.config.seed == 1
    assert [ScratchpadAdditionEnv(seed=s, warm_starts=3).config.seed for s in range(6)] == [0, 1, 2, 0, 1, 2]
    assert ScratchpadAdditionEnv().config == ScratchpadWarmStart()  # no seed: checkpoint 0
    # every checkpoint is judged on the same held-out prompts
    assert torch.equal(ScratchpadAdditionEnv(seed=1).config.eval_prompts(), ScratchpadWarmStart().eval_prompts())
    prompts = env.sample_prompts(64, torch.Generator().manual_seed(0))
    assert prompts.shape == (64, 13)
    assert env.reward(prompts, answers(prompts, 6), torch.ones(64, 13, dtype=torch.bool)).tolist() == [1.0] * 64


def _sharp_policy(seed: int = 0) -> TinyLMPolicy:
    torch.manual_seed(seed)
    pol = TinyLMPolicy(TinyLMConfig(vocab_size=VOCAB_SIZE, d_model=32, n_layers=2, n_heads=2, max_seq_len=16),
                       eos_id=EOS, pad_id=PAD, max_new_tokens=5)
    with torch.no_grad():  # spread the random model's next-token distributions
        for p in pol.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    return pol


def test_exact_objective_equals_a_prefix_by_prefix_float64_product():
    """J by one batched teacher-forced float32 pass against the product, in float64, of the
    next-token probabilities from one full forward pass per prefix (no shared pass, no cache);
    greedy accuracy against an argmax loop of the same passes. Float32 against float64 over 5
    factors: relative error ~1e-6; 1e-4 leaves room and is still far below any J margin."""
    pol = _sharp_policy()
    prompts = encode_prompts(torch.arange(0, 99, 3), torch.arange(99, 0, -3), 2)
    targets = answers(prompts, 2)
    ref = copy.deepcopy(pol.model).double()
    prob = torch.ones(prompts.shape[0], dtype=torch.float64)
    greedy_ids = prompts
    with torch.no_grad():
        for t in range(targets.shape[1]):
            nxt = ref(torch.cat([prompts, targets[:, :t]], dim=1))[:, -1].softmax(-1)
            prob *= nxt.gather(1, targets[:, t : t + 1]).squeeze(1)
            greedy_ids = torch.cat([greedy_ids, ref(greedy_ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    greedy = greedy_ids[:, prompts.shape[1]:]
    got = exact_objective(pol, prompts, targets)
    assert got["exact_reward"] == pytest.approx(float(prob.mean()), rel=1e-4)
    assert 0 < got["exact_reward"]  # the premise: a non-trivial J to compare
    # EOS ends an answer: right means equal up to and including the first EOS
    assert got["greedy_accuracy"] == pytest.approx(float((greedy == targets).all(-1).double().mean()))


def test_exact_reward_is_the_mean_of_the_sampled_reward(quick_scratchpad_cache):
    """J is E[reward] over the held-out prompts: 16 sampled answers per prompt estimate it with
    a binomial standard error of at most sqrt(J (1 - J) / 4096); 4.5 standard errors is a
    false-failure rate below 1e-5. The quick warm start is the policy (J well inside (0, 1))."""
    env = ScratchpadAdditionEnv(quick=True, cache_dir=quick_scratchpad_cache, progress=False)
    pol = env.make_policy()
    m = env.exact_metrics(pol)
    j = m["exact_reward"]
    assert 0.05 < j < 0.95, m
    prompts = env.config.eval_prompts().repeat_interleave(16, dim=0)
    r = pol.sample(prompts, torch.Generator().manual_seed(3))
    sampled = float(env.reward(prompts, r.tokens, r.mask).mean())
    assert abs(sampled - j) < 4.5 * math.sqrt(j * (1 - j) / prompts.shape[0]), (sampled, j)


def test_an_ulp_scale_perturbation_of_the_checkpoint_moves_j_far_less_than_the_margin(quick_scratchpad_cache):
    """Reproducibility across machines: another CPU rounds the same arithmetic differently, by
    about one float32 ulp (relative 2^-23) per operation. Weights perturbed by that much,
    w (1 + 2^-23 z) with z ~ N(0, 1), 100 ulps for a margin of error, five draws, change the
    checkpoint's exact objective by < 1e-4, a hundredth of the 0.01 margin a verdict needs;
    J itself has no sampling noise (teacher forcing) that could add to it."""
    env = ScratchpadAdditionEnv(quick=True, cache_dir=quick_scratchpad_cache, progress=False)
    pol = env.make_policy()
    j = env.exact_metrics(pol)["exact_reward"]
    shifts = []
    for seed in range(5):
        moved = copy.deepcopy(pol)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for q in moved.parameters():
                q.mul_(1 + 100 * 2.0**-23 * torch.randn(q.shape, generator=g))
        shifts.append(abs(env.exact_metrics(moved)["exact_reward"] - j))
    assert max(shifts) < 1e-4 and max(shifts) > 0, shifts  # > 0: the perturbation reached J

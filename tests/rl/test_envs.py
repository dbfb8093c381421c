"""Environments and the enumeration oracle (the bandit policies: tests/rl/policies/test_tabular.py).

Closed forms used below (derived by hand, not read off the implementation):
- uniform policy on [0, V)^T: E[count reward] = 1/V, E[all-or-nothing] = V^-T, and the K-armed
  bandit's expected reward is the mean of the arm means;
- tabular independent softmax pi_t = softmax(theta_t), count reward J = (1/T) sum_t pi_t(y*_t):
  dJ/dtheta_{t,v} = (1/T) pi_t(y*_t) ([v = y*_t] - pi_t(v))   (softmax Jacobian);
- all-or-nothing J = prod_t pi_t(y*_t): dJ/dtheta_{t,v} = J ([v = y*_t] - pi_t(v)).
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from rl.envs import (
    ContextualSequenceBandit, KArmedBandit, SequenceBandit, enumerate_answers, exact_expected_reward,
    exact_policy_gradient, make_env, supports_oracle,
)
from rl.policies.tabular import AutoregressivePolicy, TabularPolicy


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ones(tokens: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(tokens, dtype=torch.bool)


# ---- rewards ---------------------------------------------------------------------------------------

def test_sequence_bandit_count_and_all_or_nothing_rewards():
    env = SequenceBandit(vocab=5, length=4, target_seed=3)
    tgt = env.target
    other = (tgt + 1) % 5
    answers = torch.stack([tgt, other, torch.cat([tgt[:2], other[2:]]), torch.cat([other[:1], tgt[1:]])])
    pr = env.sample_prompts(4, gen())
    assert pr.shape == (4, 0)
    r = env.reward(pr, answers, ones(answers))
    assert r.dtype == torch.float32
    assert r.tolist() == [1.0, 0.0, 0.5, 0.75]
    env2 = SequenceBandit(vocab=5, length=4, reward="all-or-nothing", target_seed=3)
    assert env2.reward(pr, answers, ones(answers)).tolist() == [1.0, 0.0, 0.0, 0.0]


def test_k_armed_bandit_rewards_are_the_arm_means():
    env = KArmedBandit(arms=4, means=[0.1, 0.7, 0.3, 0.2])
    a = torch.tensor([[0], [1], [2], [3], [1]])
    assert torch.allclose(env.reward(env.sample_prompts(5, gen()), a, ones(a)),
                          torch.tensor([0.1, 0.7, 0.3, 0.2, 0.7]))
    default = KArmedBandit(arms=5, target_seed=1)
    assert sorted(default.means.tolist()) == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


def test_contextual_targets_depend_on_the_prompt():
    env = ContextualSequenceBandit(vocab=6, length=5, contexts=4, target_seed=0)
    assert len({tuple(t.tolist()) for t in env.targets}) > 1
    prompts = torch.arange(4).unsqueeze(1)
    r = env.reward(prompts, env.targets.clone(), ones(env.targets))
    assert r.tolist() == [1.0] * 4
    shifted = env.targets.roll(1, dims=0)  # each context answered with another context's target
    differ = (shifted != env.targets).any(-1)
    assert (env.reward(prompts, shifted, ones(shifted))[differ] < 1).all()
    drawn = env.sample_prompts(4000, gen(1))
    # uniform contexts: chi-square goodness of fit, false-failure rate 0.001
    counts = torch.bincount(drawn[:, 0], minlength=4).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3


def test_gaussian_noise_is_unbiased_and_flip_noise_flips_at_rate_q():
    n = 20000
    env = SequenceBandit(vocab=4, length=2, noise="gaussian", noise_scale=0.5, seed=1)
    y = env.target.expand(n, -1).clone()
    r = env.reward(env.sample_prompts(n, gen()), y, ones(y)).double()
    # clean reward is 1; z-test of the mean, two-sided, false-failure rate 1e-4 (|z| < 3.89)
    assert abs(float(r.mean()) - 1.0) / (0.5 / math.sqrt(n)) < 3.89
    assert float(r.std()) == pytest.approx(0.5, rel=0.05)
    env = SequenceBandit(vocab=4, length=2, reward="all-or-nothing", noise="flip", noise_scale=0.2, seed=1)
    r = env.reward(env.sample_prompts(n, gen()), y, ones(y))
    flips = int((r == 0).sum())
    assert set(r.unique().tolist()) <= {0.0, 1.0}
    # binomial test, two-sided, false-failure rate 1e-4
    assert stats.binomtest(flips, n, 0.2).pvalue > 1e-4
    assert float(env.mean_reward(None, y[:1], ones(y[:1]))) == pytest.approx(0.8)


def test_noise_state_round_trips():
    env = SequenceBandit(noise="gaussian", noise_scale=1.0, seed=5)
    y = torch.zeros(8, 4, dtype=torch.long)
    env.reward(None, y, ones(y))
    st = env.state_dict()
    a = env.reward(None, y, ones(y))
    env.load_state_dict(st)
    assert torch.equal(a, env.reward(None, y, ones(y)))


@pytest.mark.parametrize("kw", [
    dict(vocab=1), dict(length=0), dict(reward="partial"), dict(noise="laplace"),
    dict(noise="gaussian", noise_scale=-1.0), dict(noise="flip", noise_scale=1.5),
    dict(noise="gaussian", noise_scale=float("nan")),
])
def test_sequence_bandit_rejects_bad_options(kw):
    with pytest.raises(ValueError):
        SequenceBandit(**kw)


def test_bad_inputs_raise_value_errors():
    env = SequenceBandit(vocab=4, length=3)
    with pytest.raises(ValueError, match="tokens"):
        env.reward(None, torch.zeros(2, 2, dtype=torch.long), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        env.reward(None, torch.zeros(2, 3, dtype=torch.long), torch.tensor([[True, True, False]] * 2))
    with pytest.raises(ValueError, match="arms"):
        KArmedBandit(arms=1)
    with pytest.raises(ValueError, match="means"):
        KArmedBandit(arms=3, means=[0.1, 0.2])
    with pytest.raises(ValueError, match="contexts"):
        ContextualSequenceBandit(contexts=1)
    with pytest.raises(ValueError, match="context ids"):
        ContextualSequenceBandit(contexts=3).reward(torch.tensor([[3]]), torch.zeros(1, 4, dtype=torch.long),
                                                    torch.ones(1, 4, dtype=torch.bool))


def test_registry():
    assert isinstance(make_env("bandit"), KArmedBandit)
    assert isinstance(make_env("seq-bandit", vocab=3, length=2), SequenceBandit)
    assert isinstance(make_env("contextual-bandit", seed=1), ContextualSequenceBandit)
    with pytest.raises(ValueError, match="unknown environment"):
        make_env("chess")
    with pytest.raises(ValueError, match="bad options"):
        make_env("seq-bandit", vocabulary=3)


# ---- the enumeration oracle -----------------------------------------------------------------------------

def test_enumerate_answers():
    a = enumerate_answers(3, 2)
    assert a.tolist() == [[i, j] for i in range(3) for j in range(3)]
    assert enumerate_answers(2, 10).unique(dim=0).shape == (1024, 10)
    with pytest.raises(ValueError, match="exceeds"):
        enumerate_answers(10, 6)


def test_exact_reward_of_uniform_policies():
    for v, t in [(2, 1), (4, 3), (7, 4)]:
        pol = TabularPolicy(v, t)
        assert exact_expected_reward(SequenceBandit(v, t), pol) == pytest.approx(1 / v, rel=1e-12)
        assert exact_expected_reward(SequenceBandit(v, t, "all-or-nothing"), pol) == pytest.approx(v**-t, rel=1e-12)
    env = KArmedBandit(arms=4, means=[0.1, 0.7, 0.3, 0.2])
    assert exact_expected_reward(env, TabularPolicy(4, 1)) == pytest.approx(0.325, rel=1e-12)
    flip = SequenceBandit(4, 3, noise="flip", noise_scale=0.1)
    assert exact_expected_reward(flip, TabularPolicy(4, 3)) == pytest.approx(0.9 * 0.25 + 0.1 * 0.75, rel=1e-12)


@pytest.mark.parametrize("reward", ["count", "all-or-nothing"])
def test_exact_gradient_matches_softmax_closed_form(reward):
    torch.manual_seed(1)
    env = SequenceBandit(vocab=5, length=3, reward=reward, target_seed=2)
    pol = TabularPolicy(5, 3, init_scale=1.0)
    pi = torch.softmax(pol.logits[0].detach().double(), -1)  # [T, V]
    onehot = torch.nn.functional.one_hot(env.target, 5).double()
    hit = pi.gather(-1, env.target[:, None])  # pi_t(y*_t), [T, 1]
    if reward == "count":
        closed = hit * (onehot - pi) / 3
        j = float(hit.mean())
    else:
        j = float(hit.prod())
        closed = j * (onehot - pi)
    assert exact_expected_reward(env, pol) == pytest.approx(j, rel=1e-12)
    g = exact_policy_gradient(env, pol)["logits"][0]
    torch.testing.assert_close(g, closed, rtol=1e-10, atol=1e-14)


def test_exact_gradient_of_contextual_and_autoregressive_policy_by_finite_differences():
    # central differences in float64 with step 1e-5: truncation error O(h^2) ~ 1e-10
    torch.manual_seed(0)
    env = ContextualSequenceBandit(vocab=3, length=3, contexts=2)
    pol = AutoregressivePolicy(3, 3, 2, hidden=4)
    grads = exact_policy_gradient(env, pol)
    pold = pol.double()
    h = 1e-5
    w = pold.w_h.weight
    for idx in [(0, 0), (1, 2), (3, 1)]:
        with torch.no_grad():
            w[idx] += h
        jp = exact_expected_reward(env, pold)
        with torch.no_grad():
            w[idx] -= 2 * h
        jm = exact_expected_reward(env, pold)
        with torch.no_grad():
            w[idx] += h
        assert grads["w_h.weight"][idx].item() == pytest.approx((jp - jm) / (2 * h), abs=1e-8)


def test_supports_oracle():
    assert supports_oracle(SequenceBandit(8, 4))
    assert not supports_oracle(SequenceBandit(16, 8))
    with pytest.raises(ValueError, match="enumeration"):
        exact_expected_reward(SequenceBandit(16, 8), TabularPolicy(16, 8))

"""rl/envs/oracle.py: enumeration of answers, exact J and grad J by enumeration, the analytic
J and grad J of a factorized policy, and which of the two routes exact_expected_reward takes.

Closed forms used below (derived by hand, not read off the implementation):
- uniform policy on [0, V)^T: E[count reward] = 1/V, E[all-or-nothing] = V^-T, and the K-armed
  bandit's expected reward is the mean of the arm means;
- tabular independent softmax pi_t = softmax(theta_t), count reward J = (1/T) sum_t pi_t(y*_t):
  dJ/dtheta_{t,v} = (1/T) pi_t(y*_t) ([v = y*_t] - pi_t(v))   (softmax Jacobian);
- all-or-nothing J = prod_t pi_t(y*_t): dJ/dtheta_{t,v} = J ([v = y*_t] - pi_t(v));
- prefix, uniform policy: J = (1/T) sum_{k=1}^T V^-k.
"""

from __future__ import annotations

import pytest
import torch

from rl.envs import (
    ContextualSequenceBandit, KArmedBandit, SequenceBandit, enumerate_answers, exact_expected_reward,
    exact_policy_gradient, supports_oracle,
)
from rl.envs.bandits import REWARD_KINDS
from rl.envs.oracle import analytic_objective, analytic_policy_gradient
from rl.policies.tabular import AutoregressivePolicy, TabularPolicy


# ---- the enumeration oracle -----------------------------------------------------------------------------

def test_enumerate_answers():
    a = enumerate_answers(3, 2)
    assert a.tolist() == [[i, j] for i in range(3) for j in range(3)]
    assert enumerate_answers(2, 10).unique(dim=0).shape == (1024, 10)
    with pytest.raises(ValueError, match="exceeds"):
        enumerate_answers(10, 6)


@pytest.mark.parametrize("method", ["auto", "enumeration", "analytic"])
def test_exact_reward_of_uniform_policies(method):
    for v, t in [(2, 1), (4, 3), (7, 4)]:
        pol = TabularPolicy(v, t)
        assert exact_expected_reward(SequenceBandit(v, t), pol, method=method) == pytest.approx(1 / v, rel=1e-12)
        assert exact_expected_reward(SequenceBandit(v, t, "all-or-nothing"), pol, method=method) == pytest.approx(
            v**-t, rel=1e-12)
    flip = SequenceBandit(4, 3, noise="flip", noise_scale=0.1)
    assert exact_expected_reward(flip, TabularPolicy(4, 3), method=method) == pytest.approx(0.9 * 0.25 + 0.1 * 0.75,
                                                                                           rel=1e-12)
    env = KArmedBandit(arms=4, means=[0.1, 0.7, 0.3, 0.2])  # not a sequence bandit: no closed form
    if method == "analytic":
        with pytest.raises(ValueError, match="SequenceBandit"):
            exact_expected_reward(env, TabularPolicy(4, 1), method=method)
    else:
        assert exact_expected_reward(env, TabularPolicy(4, 1), method=method) == pytest.approx(0.325, rel=1e-12)


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
    for method in ("enumeration", "analytic"):
        assert exact_expected_reward(env, pol, method=method) == pytest.approx(j, rel=1e-12)
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
    from rl.envs.oracle import oracle_method

    assert supports_oracle(SequenceBandit(8, 4))
    assert not supports_oracle(SequenceBandit(16, 8))
    with pytest.raises(ValueError, match="enumeration"):
        exact_expected_reward(SequenceBandit(16, 8), TabularPolicy(16, 8), method="enumeration")
    # Given the policy: a factorized one is known in closed form at any length, another only by
    # enumeration, where that is possible.
    long_env = SequenceBandit(8, 32, "prefix")
    assert supports_oracle(long_env, policy=TabularPolicy(8, 32))
    assert oracle_method(long_env, TabularPolicy(8, 32)) == "analytic"
    assert not supports_oracle(long_env, policy=AutoregressivePolicy(8, 32))
    with pytest.raises(ValueError, match="enumeration"):
        exact_expected_reward(long_env, AutoregressivePolicy(8, 32))
    assert oracle_method(SequenceBandit(3, 2), AutoregressivePolicy(3, 2)) == "enumeration"
    assert oracle_method(KArmedBandit(arms=3), TabularPolicy(3, 1)) == "enumeration"
    assert oracle_method(SequenceBandit(3, 2), TabularPolicy(3, 3)) == "enumeration"  # shapes differ
    with pytest.raises(ValueError, match="method"):
        exact_expected_reward(SequenceBandit(3, 2), TabularPolicy(3, 2), method="exact")


# ---- the analytic objective of a factorized policy ------------------------------------------------------

def test_analytic_prefix_objective_of_the_uniform_policy():
    for v, t in [(2, 1), (3, 4), (5, 6), (3, 64)]:
        want = sum(v ** -k for k in range(1, t + 1)) / t
        assert analytic_objective(SequenceBandit(v, t, "prefix"), TabularPolicy(v, t)) == pytest.approx(want, rel=1e-13)


@pytest.mark.parametrize("reward", REWARD_KINDS)
@pytest.mark.parametrize("noise", [None, "flip"])
def test_analytic_objective_and_gradient_equal_enumeration(reward, noise):
    torch.manual_seed(4)
    env = ContextualSequenceBandit(vocab=3, length=4, reward=reward, contexts=2, target_seed=1, noise=noise,
                                   noise_scale=0.2 if noise else 0.0)
    pol = TabularPolicy(3, 4, n_contexts=2, init_scale=1.0)
    # float64 sums of 162 products: agreement to a few ulps of J
    assert analytic_objective(env, pol) == pytest.approx(exact_expected_reward(env, pol, method="enumeration"),
                                                         rel=1e-13)
    torch.testing.assert_close(analytic_policy_gradient(env, pol)["logits"], exact_policy_gradient(env, pol)["logits"],
                               rtol=1e-12, atol=1e-15)


def test_analytic_prefix_gradient_by_hand():
    # T = 2: J = (q1 + q1 q2) / 2, dJ/dtheta_1 = (q1 + q1 q2)/2 (e - pi_1), dJ/dtheta_2 = (q1 q2 / 2) (e - pi_2)
    env = SequenceBandit(vocab=2, length=2, reward="prefix", target_seed=0)
    pol = TabularPolicy(2, 2)
    with torch.no_grad():
        pol.logits.copy_(torch.tensor([[[0.3, -0.4], [1.1, 0.2]]]))
    pi = torch.softmax(pol.logits[0].detach().double(), -1)
    q = [float(pi[t, env.target[t]]) for t in range(2)]
    e = torch.nn.functional.one_hot(env.target, 2).double()
    want = torch.stack([(q[0] + q[0] * q[1]) / 2 * (e[0] - pi[0]), q[0] * q[1] / 2 * (e[1] - pi[1])])
    assert analytic_objective(env, pol) == pytest.approx((q[0] + q[0] * q[1]) / 2, rel=1e-15)
    torch.testing.assert_close(analytic_policy_gradient(env, pol)["logits"][0], want, rtol=1e-14, atol=0)


def test_analytic_objective_at_lengths_beyond_enumeration():
    # T = 64: no enumeration; all-or-nothing of a policy with pi_t(y*_t) = q at every position is q^64
    env = SequenceBandit(vocab=3, length=64, reward="all-or-nothing", target_seed=2)
    pol = TabularPolicy(3, 64)
    with torch.no_grad():
        pol.logits.zero_()
        pol.logits[0, torch.arange(64), env.target] = 2.0
    q = torch.softmax(torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64), 0)[0].item()
    assert analytic_objective(env, pol) == pytest.approx(q**64, rel=1e-12)


@pytest.mark.parametrize("length", [4, 8, 16, 32])
@pytest.mark.parametrize("reward", REWARD_KINDS)
def test_exact_reward_at_study_lengths_uses_the_closed_form(length, reward):
    # T up to 32 with V = 8 (8^32 answers): exact_expected_reward answers through the closed form;
    # where enumeration is possible (T = 4) it agrees with it. Independent check at every T: the
    # product form of all-or-nothing and the sums of the others from q_t = pi_t(y*_t) by hand.
    torch.manual_seed(length)
    env = SequenceBandit(vocab=8, length=length, reward=reward, target_seed="seed", seed=length)
    pol = TabularPolicy(8, length, init_scale=1.5)
    q = torch.softmax(pol.logits[0].detach().double(), -1).gather(-1, env.target[:, None]).squeeze(-1).tolist()
    prefix_products = [float(torch.tensor(q[:k + 1], dtype=torch.float64).prod()) for k in range(length)]
    want = {"count": sum(q) / length, "all-or-nothing": prefix_products[-1],
            "prefix": sum(prefix_products) / length}[reward]
    got = exact_expected_reward(env, pol)
    assert got == pytest.approx(want, rel=1e-12)
    if length == 4:
        assert got == pytest.approx(exact_expected_reward(env, pol, method="enumeration"), rel=1e-13)


def test_analytic_objective_rejects_what_it_cannot_compute():
    with pytest.raises(ValueError, match="TabularPolicy"):
        analytic_objective(SequenceBandit(3, 2), AutoregressivePolicy(3, 2))
    with pytest.raises(ValueError, match="SequenceBandit"):
        analytic_objective(KArmedBandit(arms=3), TabularPolicy(3, 1))
    with pytest.raises(ValueError, match="does not match"):
        analytic_policy_gradient(SequenceBandit(3, 2), TabularPolicy(3, 3))

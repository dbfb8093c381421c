"""rl/envs/estimator.py: moments of the single-answer gradient of every loss variant.

References, none of them the code under test: a hand computation in plain Python floats for two
tokens over two symbols (every answer, weight, ratio, coefficient and score written out); autograd
through rl.losses.policy_loss on one answer at a time; the oracle's exact and analytic gradients;
the theorems of proofs/theorems_estimator.py (TE1-TE6), held here against the code as properties.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rl.envs import SequenceBandit
from rl.envs.bandits import REWARD_KINDS
from rl.envs.estimator import (
    ESTIMATOR_LEVELS, MOMENT_KEYS, _generic_score, _tabular_score, estimator_moments, moments, prepare_answers,
)
from rl.envs.oracle import exact_policy_gradient
from rl.losses import AGG_MODES, policy_loss
from rl.policies.tabular import AutoregressivePolicy, TabularPolicy

VARIANTS = [("sequence", -2.0), ("sequence", -1.0), ("sequence", 0.0), ("sequence", 0.5), ("sequence", 1.0),
            ("sequence", 2.0), ("sequence-token", -1.0), ("token", 0.0), ("gmpo", 0.0), ("gmpo", -1.0),
            ("is-product", 0.0)]


def tabular(V: int, T: int, logits) -> TabularPolicy:
    pol = TabularPolicy(V, T)
    with torch.no_grad():
        pol.logits.copy_(torch.as_tensor(logits, dtype=torch.float32).reshape(1, T, V))
    return pol


def pair(V: int, T: int, seed: int, shift: float = 1.0) -> tuple[TabularPolicy, TabularPolicy]:
    """(behaviour, policy): policy logits N(0, 1), behaviour = policy + shift N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    th = torch.randn(T * V, generator=g)
    return tabular(V, T, th + shift * torch.randn(T * V, generator=g)), tabular(V, T, th)


# ---- a hand computation: V = 2, T = 2 -------------------------------------------------------------------

def _softmax2(a: float, b: float) -> list[float]:
    m = max(a, b)
    ea, eb = math.exp(a - m), math.exp(b - m)
    return [ea / (ea + eb), eb / (ea + eb)]


def hand_moments(pi_logits, mu_logits, target, level: str, p: float, eps: float | None):
    """Everything by hand for V = T = 2, count reward, baseline J(mu), one answer per batch.

    Coefficients c_t = -d loss / d log pi_t of the single-answer loss (seq-mean-token-mean):
    sequence: loss = -A clip(s) with s = M_p(r1, r2); unclipped c_t = A s w_t, w = softmax(p l);
    token: loss = -(1/2) sum_t A clip(r_t); unclipped c_t = A r_t / 2;
    is-product: c_t = A r1 r2. Clipped (the PPO minimum picks the clipped branch): c = 0.
    Gradient on theta[t, v]: c_t ([v = y_t] - pi_t(v)).
    """
    pi = [_softmax2(*pi_logits[t]) for t in range(2)]
    mu = [_softmax2(*mu_logits[t]) for t in range(2)]
    answers = list(itertools.product((0, 1), repeat=2))
    r = {y: sum(y[t] == target[t] for t in range(2)) / 2 for y in answers}
    mu_y = {y: mu[0][y[0]] * mu[1][y[1]] for y in answers}
    pi_y = {y: pi[0][y[0]] * pi[1][y[1]] for y in answers}
    J_mu = sum(mu_y[y] * r[y] for y in answers)
    true = [[sum(pi_y[y] * r[y] * ((v == y[t]) - pi[t][v]) for y in answers) for v in range(2)] for t in range(2)]
    lo, hi = (math.log(1 - eps), math.log(1 + eps)) if eps else (-math.inf, math.inf)
    mean = [[0.0, 0.0], [0.0, 0.0]]
    second = 0.0
    ess = 0.0
    for y in answers:
        A = r[y] - J_mu
        lr = [math.log(pi[t][y[t]]) - math.log(mu[t][y[t]]) for t in range(2)]
        ratio = [math.exp(x) for x in lr]
        if level == "is-product":
            c = [A * ratio[0] * ratio[1]] * 2
            w = [0.5, 0.5]
        elif level == "token":
            c = [0.0 if (A > 0 and lr[t] > hi) or (A < 0 and lr[t] < lo) else A * ratio[t] / 2 for t in range(2)]
            w = [ratio[0] / sum(ratio), ratio[1] / sum(ratio)]
        else:
            if p == 0:
                log_s, w = (lr[0] + lr[1]) / 2, [0.5, 0.5]
            else:
                e0, e1 = math.exp(p * lr[0]), math.exp(p * lr[1])
                log_s, w = math.log((e0 + e1) / 2) / p, [e0 / (e0 + e1), e1 / (e0 + e1)]
            clipped = (A > 0 and log_s > hi) or (A < 0 and log_s < lo)
            c = [0.0 if clipped else A * math.exp(log_s) * w[t] for t in range(2)]
        g = [[c[t] * ((v == y[t]) - pi[t][v]) for v in range(2)] for t in range(2)]
        for t in range(2):
            for v in range(2):
                mean[t][v] += mu_y[y] * g[t][v]
        second += mu_y[y] * sum(g[t][v] ** 2 for t in range(2) for v in range(2))
        ess += mu_y[y] / (2 * (w[0] ** 2 + w[1] ** 2))
    flat = [x for row in mean for x in row]
    tflat = [x for row in true for x in row]
    dot = sum(a * b for a, b in zip(flat, tflat))
    mn, tn = math.sqrt(sum(a * a for a in flat)), math.sqrt(sum(b * b for b in tflat))
    kl = sum(mu_y[y] * (math.log(mu_y[y]) - math.log(pi_y[y])) for y in answers) / 2
    return {"mean_grad": flat, "true_grad": tflat, "cosine": dot / (mn * tn),
            "rel_bias": math.sqrt(sum((a - b) ** 2 for a, b in zip(flat, tflat))) / tn,
            "trace_var": second - mn * mn, "ess": ess, "kl_per_token": kl}


# dyadic values: exact in the policies' float32 logits, so both sides start from the same numbers
PI_LOGITS = [[0.375, -0.25], [-1.125, 0.625]]
MU_LOGITS = [[0.875, -0.75], [-1.0, 0.5]]  # some ratios inside the 0.2 window, some outside, for every variant


@pytest.mark.parametrize("level,p", [("sequence", -1.0), ("sequence", 0.0), ("sequence", 1.0), ("sequence", 2.0),
                                     ("token", 0.0), ("is-product", 0.0)])
@pytest.mark.parametrize("eps", [None, 0.2])
def test_moments_equal_a_hand_computation_for_two_tokens_and_two_symbols(level, p, eps):
    env = SequenceBandit(2, 2, "count", target_seed=0)
    target = env.target.tolist()
    want = hand_moments(PI_LOGITS, MU_LOGITS, target, level, p, eps)
    if eps is not None and level != "is-product":
        # the window bites on some answer here, so the clipped branch is exercised
        assert want["cosine"] != pytest.approx(hand_moments(PI_LOGITS, MU_LOGITS, target, level, p, None)["cosine"])
    got = estimator_moments(env, tabular(2, 2, MU_LOGITS), tabular(2, 2, PI_LOGITS), level=level, p=p,
                            eps_low=eps or math.inf, eps_high=eps or math.inf)
    # float64 arithmetic on four answers on both sides: a few ulps, relative to the largest entry
    for k in ("mean_grad", "true_grad"):
        ref = torch.tensor(want[k], dtype=torch.float64)
        torch.testing.assert_close(got[k], ref, rtol=0, atol=1e-13 * float(ref.abs().max()))
    for k in ("cosine", "rel_bias", "trace_var", "ess", "kl_per_token"):
        assert got[k] == pytest.approx(want[k], rel=1e-11, abs=1e-15), k
    assert got["mc_error"] == 0.0 and got["exact"] is True
    assert set(got) == set(MOMENT_KEYS)
    cos = want["cosine"]
    assert got["scaled_bias"] == pytest.approx(math.sqrt(max(0.0, 1 - cos * cos)) if cos > 0 else 1.0, abs=1e-7)


# ---- the batched rows are single-answer losses ------------------------------------------------------------

@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("kind", ["tabular", "autoregressive"])
def test_mean_and_second_moment_equal_one_answer_at_a_time(agg, kind):
    """E g and E|g|^2 against a loop: policy_loss on a batch of one answer, autograd on the policy."""
    torch.manual_seed(3)
    V, T = 2, 3
    env = SequenceBandit(V, T, "prefix", target_seed=1)
    if kind == "tabular":
        mu, pi = pair(V, T, 0)
    else:
        pi, mu = AutoregressivePolicy(V, T, hidden=3), AutoregressivePolicy(V, T, hidden=3)
    ans = prepare_answers(env, mu, pi)
    pol = pi.double()
    beh = mu.double()
    J_mu = sum(float(ans.weight[i]) * float(env.mean_reward(None, ans.tokens[i:i + 1], torch.ones(1, T, dtype=torch.bool)))
               for i in range(ans.tokens.shape[0]))
    for level, p in [("sequence", -1.0), ("token", 0.0), ("gmpo", 0.5)]:
        got = moments(ans, level=level, p=p, eps_low=0.2, eps_high=0.3, agg=agg)
        mean = 0.0
        second = 0.0
        for i in range(ans.tokens.shape[0]):
            y = ans.tokens[i:i + 1]
            m = torch.ones_like(y, dtype=torch.bool)
            with torch.no_grad():
                old = beh.log_probs(None if kind == "autoregressive" else torch.zeros(1, 0, dtype=torch.long), y, m)
                w = float(old.sum().exp())
                A = env.mean_reward(None, y, m).double() - J_mu
            pol.zero_grad()
            lp = pol.log_probs(torch.zeros(1, 0, dtype=torch.long), y, m)
            loss, _ = policy_loss(lp, old, A, m, level=level, p=p, eps_low=0.2, eps_high=0.3, agg=agg)
            loss.backward()
            g = -torch.cat([q.grad.reshape(-1) for q in pol.parameters()])
            mean = mean + w * g
            second += w * float(g @ g)
        # sums of 8 answers in float64: agreement to rounding, relative to |E g|
        torch.testing.assert_close(got["mean_grad"], mean, rtol=0, atol=1e-12 * float(mean.abs().max()))
        assert got["trace_var"] == pytest.approx(second - float(mean @ mean), rel=1e-9, abs=1e-15)


def test_tabular_closed_form_scores_equal_the_generic_jacobian():
    """The factorized policy's score e_y - pi_t (scatter and diagonal Gram) against forward-mode autograd."""
    mu, pi = pair(3, 3, 5)
    pi64 = pi.double()
    tokens = torch.tensor(list(itertools.product(range(3), repeat=3)))
    prompts = torch.zeros(tokens.shape[0], 0, dtype=torch.long)
    vjp_t, gram_t = _tabular_score(pi64, prompts, tokens)
    vjp_g, gram_g = _generic_score(pi64, prompts, tokens)
    assert gram_g.shape == (27, 3, 3)
    torch.testing.assert_close(torch.diag_embed(gram_t), gram_g, rtol=1e-13, atol=1e-15)
    coef = torch.randn(27, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(vjp_t(coef), vjp_g(coef), rtol=1e-13, atol=1e-14)


def test_true_grad_is_the_oracle_gradient():
    torch.manual_seed(0)
    env = SequenceBandit(3, 4, "all-or-nothing", target_seed=2)
    pi, mu = AutoregressivePolicy(3, 4, hidden=4), AutoregressivePolicy(3, 4, hidden=4)
    ans = prepare_answers(env, mu, pi)
    want = torch.cat([g.reshape(-1) for g in exact_policy_gradient(env, pi).values()])
    torch.testing.assert_close(ans.true_grad, want, rtol=1e-11, atol=1e-16)


def test_ess_is_the_loss_metric_weighted_by_mu():
    """ess = sum_y mu(y) ESS(y), ESS(y) the loss's token_weight_ess of a batch of that answer alone."""
    mu, pi = pair(2, 3, 1, shift=1.5)
    env = SequenceBandit(2, 3, "count", target_seed=0)
    ans = prepare_answers(env, mu, pi)
    for level, p in [("sequence", -2.0), ("token", 0.0), ("gmpo", 1.0), ("sequence", 0.0)]:
        want = 0.0
        for i in range(ans.tokens.shape[0]):
            _, met = policy_loss(ans.logp[i:i + 1], ans.old_logp[i:i + 1], ans.advantage[i:i + 1],
                                 torch.ones(1, 3, dtype=torch.bool), level=level, p=p, eps_low=0.2)
            want += float(ans.weight[i]) * met["token_weight_ess"]
        assert moments(ans, level=level, p=p, eps_low=0.2, eps_high=0.2)["ess"] == pytest.approx(want, rel=1e-12)


# ---- the theorems, held against the code ------------------------------------------------------------------

@settings(max_examples=15)
@given(V=st.integers(2, 3), T=st.integers(1, 3), seed=st.integers(0, 10**6), reward=st.sampled_from(REWARD_KINDS),
       variant=st.sampled_from(VARIANTS), agg=st.sampled_from(AGG_MODES), clip=st.sampled_from([None, 0.2, 3e-4]))
def test_on_policy_every_variant_has_cosine_one_and_the_aggregations_length_factor(V, T, seed, reward, variant, agg,
                                                                                    clip):
    """TE1: at mu = pi, E g = (kappa/T) grad J: kappa = T for seq-mean-token-sum (and is-product), else 1."""
    _, pi = pair(V, T, seed)
    env = SequenceBandit(V, T, reward, target_seed=seed)
    level, p = variant
    m = estimator_moments(env, pi, pi, level=level, p=p, eps_low=clip or math.inf, eps_high=clip or math.inf, agg=agg)
    if float(m["true_grad"].norm()) < 1e-12:
        return  # a reward constant on the answer space (possible for T = 1): no direction to compare
    # float64 sums over at most 27 answers: cosine 1 to ~1e-15
    assert m["cosine"] == pytest.approx(1.0, abs=1e-12)
    assert m["scaled_bias"] <= 2e-6  # sqrt(1 - cos^2) amplifies the rounding of cos: sqrt(2e-12)
    want = 0.0 if level == "is-product" or agg == "seq-mean-token-sum" else 1.0 - 1.0 / T
    assert m["rel_bias"] == pytest.approx(want, abs=1e-12)


@settings(max_examples=15)
@given(V=st.integers(2, 3), T=st.integers(1, 4), seed=st.integers(0, 10**6), reward=st.sampled_from(REWARD_KINDS),
       shift=st.floats(0.1, 2.0), kind=st.sampled_from(["tabular", "autoregressive"]))
def test_is_product_control_is_unbiased_for_every_behaviour(V, T, seed, reward, shift, kind):
    """TE2: rel_bias 0 for every mu (tabular and RNN policies)."""
    if kind == "tabular":
        mu, pi = pair(V, T, seed, shift)
    else:
        torch.manual_seed(seed)
        pi, mu = AutoregressivePolicy(V, T, hidden=2), AutoregressivePolicy(V, T, hidden=2)
    env = SequenceBandit(V, T, reward, target_seed=seed)
    m = estimator_moments(env, mu, pi, level="is-product")
    if float(m["true_grad"].norm()) < 1e-12:
        return
    # importance weights up to e^{2 T shift}: float64 sums accurate to ~1e-13 relative
    assert m["rel_bias"] <= 1e-10


@settings(max_examples=15)
@given(V=st.integers(2, 4), T=st.integers(1, 4), seed=st.integers(0, 10**6), shift=st.floats(0.1, 2.0),
       variant=st.sampled_from([("sequence", 1.0), ("token", 0.0)]))
def test_additive_reward_arithmetic_mean_points_along_grad_J(V, T, seed, shift, variant):
    """TE3: factorized policy, count reward: p = 1 and token-level GRPO give E g = grad J / T for every mu."""
    mu, pi = pair(V, T, seed, shift)
    env = SequenceBandit(V, T, "count", target_seed=seed)
    m = estimator_moments(env, mu, pi, level=variant[0], p=variant[1])
    torch.testing.assert_close(m["mean_grad"], m["true_grad"] / T, rtol=1e-10, atol=1e-13)


@settings(max_examples=10)
@given(seed=st.integers(0, 10**6), reward=st.sampled_from(["all-or-nothing", "prefix"]),
       p=st.sampled_from([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]))
def test_non_additive_rewards_leave_every_mean_biased(seed, reward, p):
    """TE4: with a real policy shift no p points exactly along grad J for the non-additive rewards."""
    mu, pi = pair(3, 3, seed, shift=1.5)
    env = SequenceBandit(3, 3, reward, target_seed=seed)
    m = estimator_moments(env, mu, pi, level="sequence", p=p)
    assert m["cosine"] < 1.0 - 1e-9


def test_noise_without_policy_shift_keeps_every_direction_up_to_the_monte_carlo_error():
    """TE6: mu = pi, tau = 1: every p has cosine 1 in expectation; measured within ~mc_error^2."""
    _, pi = pair(3, 4, 7)
    env = SequenceBandit(3, 4, "all-or-nothing", target_seed=7)
    ans = prepare_answers(env, pi, pi)
    for level, p in [("sequence", -1.0), ("sequence", 0.0), ("sequence", 1.0), ("token", 0.0)]:
        m = moments(ans, level=level, p=p, noise_tau=1.0, noise_draws=256, seed=3)
        assert 0 < m["mc_error"] < 0.2
        # the deficit of a cosine measured with relative RMS error e is about e^2/2: allow 4 e^2
        assert 1 - m["cosine"] <= 4 * m["mc_error"] ** 2
    # and the is-product control is then exp(T tau^2 / 2) grad J (TE2), within its Monte Carlo error
    m = moments(ans, level="is-product", noise_tau=0.3, noise_draws=256, seed=3)
    scale = float(m["mean_grad"].norm() / m["true_grad"].norm())
    assert scale == pytest.approx(math.exp(4 * 0.09 / 2), rel=4 * m["mc_error"])


def test_ess_of_gaussian_log_ratios_tends_to_exp_minus_p2_sigma2():
    """TE5 on the loss's metric: T = 4096 i.i.d. N(0, sigma^2) log-ratios, 32 rows."""
    g = torch.Generator().manual_seed(0)
    B, T = 32, 4096
    for sigma in (0.3, 0.7):
        l = sigma * torch.randn(B, T, generator=g, dtype=torch.float64)
        mask = torch.ones(B, T, dtype=torch.bool)
        for p in (-2.0, -1.0, 0.5, 1.0):
            _, met = policy_loss(l, torch.zeros_like(l), torch.ones(B, dtype=torch.float64), mask, p=p, eps_low=1.0,
                                 eps_high=math.inf)
            # ESS_T = (mean e^{pl})^2 / mean e^{2pl}: delta-method sd ~ sqrt(e^{4 p^2 s^2} / T) per row, /sqrt(B)
            # over rows, plus the O(1/T) bias; 5 of those is a false-failure rate far below 1e-4
            tol = 5 * math.sqrt(math.exp(4 * p * p * sigma * sigma) / (T * B)) + 4.0 / T
            assert met["token_weight_ess"] == pytest.approx(math.exp(-p * p * sigma * sigma), abs=tol)


# ---- Monte Carlo against enumeration ----------------------------------------------------------------------

@pytest.mark.parametrize("reward", REWARD_KINDS)
def test_monte_carlo_agrees_with_enumeration_within_its_stated_error(reward):
    mu, pi = pair(3, 4, 11, shift=0.8)
    env = SequenceBandit(3, 4, reward, target_seed=11)
    exact = prepare_answers(env, mu, pi)
    mc = prepare_answers(env, mu, pi, mc_samples=20000, seed=2)
    assert mc.kl_per_token == pytest.approx(exact.kl_per_token, rel=1e-12)  # both exact (closed form / enumeration)
    torch.testing.assert_close(mc.true_grad, exact.true_grad, rtol=1e-12, atol=1e-15)
    for level, p in [("sequence", -1.0), ("sequence", 0.0), ("sequence", 1.0), ("is-product", 0.0)]:
        a, b = moments(exact, level=level, p=p), moments(mc, level=level, p=p)
        # |cos_MC - cos| <= angle(E_MC g, E g) <~ |E_MC g - E g| / |E g|, whose RMS is mc_error: 4 of them
        assert abs(a["cosine"] - b["cosine"]) <= 4 * b["mc_error"]
        err = float((a["mean_grad"] - b["mean_grad"]).norm() / a["mean_grad"].norm())
        assert err <= 4 * b["mc_error"]
        assert b["trace_var"] == pytest.approx(a["trace_var"], rel=0.5)


# ---- bad input --------------------------------------------------------------------------------------------

def test_bad_input_is_a_clear_value_error():
    mu, pi = pair(2, 2, 0)
    env = SequenceBandit(2, 2)
    assert "is-product" in ESTIMATOR_LEVELS
    cases = [
        (dict(level="geometric"), "level"), (dict(eps_low=1.5), "eps_low"), (dict(eps_high=-1.0), "eps_high"),
        (dict(noise_tau=-0.1), "noise_tau"), (dict(noise_tau=float("nan")), "noise_tau"),
        (dict(noise_draws=0), "noise_draws"), (dict(mc_samples=1), "mc_samples"), (dict(bogus=1), "bogus"),
    ]
    for kw, word in cases:
        with pytest.raises(ValueError, match=word):
            estimator_moments(env, mu, pi, **kw)
    with pytest.raises(ValueError, match="TabularPolicies"):
        estimator_moments(env, AutoregressivePolicy(2, 2), AutoregressivePolicy(2, 2), mc_samples=100)
    with pytest.raises(ValueError, match="same kind"):
        estimator_moments(env, AutoregressivePolicy(2, 2), pi)
    with pytest.raises(ValueError, match="length"):
        estimator_moments(env, TabularPolicy(2, 3), TabularPolicy(2, 3))
    with pytest.raises(ValueError, match="cannot be enumerated"):
        estimator_moments(SequenceBandit(16, 5), TabularPolicy(16, 5), TabularPolicy(16, 5))
    ans = prepare_answers(env, mu, pi)
    with pytest.raises(ValueError, match="another policy"):
        prepare_answers(env, mu, mu, reuse=ans)
    with pytest.raises(ValueError, match="log mu"):
        prepare_answers(env, tabular(2, 2, [[0.0, -math.inf], [0.0, 0.0]]), pi)


def test_reuse_gives_the_same_moments_as_a_fresh_answer_set():
    mu, pi = pair(3, 3, 2)
    mu2, _ = pair(3, 3, 9)
    env, env2 = SequenceBandit(3, 3, "count", target_seed=0), SequenceBandit(3, 3, "prefix", target_seed=0)
    base = prepare_answers(env, mu, pi)
    for e, m in ((env2, mu), (env, mu2)):
        a = moments(prepare_answers(e, m, pi, reuse=base), level="sequence", p=-1.0)
        b = moments(prepare_answers(e, m, pi), level="sequence", p=-1.0)
        for k in ("cosine", "trace_var", "ess", "kl_per_token"):
            assert a[k] == b[k]
        assert torch.equal(a["mean_grad"], b["mean_grad"])


def test_importance_weights_beyond_float64_keep_the_control_unbiased():
    """mu gives answer (1, 1) probability ~e^-800 (0 in float64) where pi gives it 1/4: its importance
    weight e^800 overflows, its weighted contribution A pi(y) does not; the variance is honestly inf."""
    pi = tabular(2, 2, [[0.0, 0.0], [0.0, 0.0]])
    mu = tabular(2, 2, [[0.0, -400.0], [0.0, -400.0]])
    env = SequenceBandit(2, 2, "all-or-nothing", target_seed=0)
    target = env.target.tolist()
    if target != [1, 1]:  # put the unreachable answer on the target, where the reward is
        mu = tabular(2, 2, [[-400.0 * (t == 0), -400.0 * (t == 1)] for t in target])
    m = estimator_moments(env, mu, pi, level="is-product")
    assert m["rel_bias"] < 1e-12 and m["cosine"] == pytest.approx(1.0, abs=1e-12)
    assert m["trace_var"] == math.inf
    # a mean-based variant never sees that answer: no reward ever, E g points nowhere useful
    g = estimator_moments(env, mu, pi, level="sequence", p=0.0)
    assert math.isfinite(g["cosine"]) and g["rel_bias"] == pytest.approx(1.0, abs=1e-12)

"""proofs/theorems_estimator.py: the estimator theorems TE1-TE6, their exact counterexample held against
rl.envs.estimator, and checks that bite when meantheory's weights are wrong.

(The generic tests of every theorem, status earned and numeric form against the torch code on
hypothesis-drawn cases, are in tests/proofs/test_proofs_theorems.py; the properties against
estimator_moments are in tests/rl/envs/test_estimator.py.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch

import meantheory
from proofs import BY_ID, DEFAULT_IMPL, RngDrawer, Status, check_theorem
from proofs.theorems_estimator import TE4_PS, THEOREMS, _nonadditive_gradients
from rl.envs import SequenceBandit
from rl.envs.estimator import estimator_moments, prepare_answers, moments
from rl.policies.tabular import TabularPolicy

IDS = [th.id for th in THEOREMS]


def test_the_estimator_theorems_are_in_the_catalogue_with_their_statuses():
    assert all(i in BY_ID for i in IDS)
    assert [BY_ID[i].expected for i in IDS] == [Status.PROVED_N, Status.PROVED_N, Status.PROVED_N, Status.REFUTED,
                                                 Status.PROVED, Status.PROVED_N]


def _two_by_two(a, q) -> tuple[TabularPolicy, TabularPolicy]:
    """(mu, pi) with V = T = 2 and pi_t(1) = a_t, mu_t(1) = q_t (logits log of the probabilities)."""
    def pol(probs):
        pt = TabularPolicy(2, 2)
        with torch.no_grad():
            pt.logits.copy_(torch.tensor([[[math.log(1 - x), math.log(x)] for x in probs]]))
        return pt
    return pol(q), pol(a)


@pytest.mark.parametrize("reward", ["all-or-nothing", "prefix"])
@pytest.mark.parametrize("pv", [-1, 0, 1, 2])
def test_TE4_counterexample_is_what_the_estimator_computes(reward, pv, derivations):
    """The exact (E g, grad J) of TE4's counterexample against estimator_moments on the same instance."""
    assert derivations["TE4-nonadditive-biased"].status == Status.REFUTED
    est, gj = _nonadditive_gradients(reward, sp.nsimplify(pv))
    env = SequenceBandit(2, 2, reward, target_seed=0)
    # TE4 puts the target at token 1 on both positions: relabel through the bandit's own target
    t = env.target.tolist()
    a, q = [1 / 2, 1 / 3], [1 / 4, 1 / 2]
    mu, pi = _two_by_two([x if t[k] == 1 else 1 - x for k, x in enumerate(a)],
                         [x if t[k] == 1 else 1 - x for k, x in enumerate(q)])
    m = estimator_moments(env, mu, pi, level="sequence", p=float(pv))
    # the policy's gradient on logits (v = 0, v = 1) of position t is (-d, +d) times the gradient in
    # z_t = logit_1 - logit_0 (softmax of two): d/dz_t = half the difference, with the sign of the target
    g = m["mean_grad"].reshape(2, 2)
    gt = m["true_grad"].reshape(2, 2)
    sign = [1 if t[k] == 1 else -1 for k in range(2)]
    got_est = [sign[k] * float(g[k, 1] - g[k, 0]) / 2 for k in range(2)]
    got_j = [sign[k] * float(gt[k, 1] - gt[k, 0]) / 2 for k in range(2)]
    # float32 logits of the probabilities: relative error ~1e-7 in every input
    np.testing.assert_allclose(got_est, [float(x) for x in est], rtol=2e-6)
    np.testing.assert_allclose(got_j, [float(x) for x in gj], rtol=2e-6)
    assert m["cosine"] < 1 - 1e-6


def test_TE4_covers_the_studied_exponents():
    assert {float(x) for x in TE4_PS} == {-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0}


def _bites(tid: str, impl, derivations, cases: int = 20) -> bool:
    """True when the theorem's numeric check fails under ``impl``."""
    th = BY_ID[tid]
    res = check_theorem(th, derivations[tid], RngDrawer(np.random.default_rng(0)), impl, cases)
    return res is not None and not res.passed


def test_checks_pass_with_the_real_functions_and_fail_with_wrong_weights(derivations):
    uniform = DEFAULT_IMPL.with_(mean_weights=lambda l, p, **kw: meantheory.mean_weights(l, 0.0, **kw))
    flipped = DEFAULT_IMPL.with_(mean_weights=lambda l, p, **kw: meantheory.mean_weights(l, -p, **kw))
    for tid in ("TE3-additive-arithmetic-unbiased", "TE5-ess-limit", "TE6-noise-exchangeable"):
        assert not _bites(tid, DEFAULT_IMPL, derivations), tid
    # TE3: uniform weights at p = 1 are the geometric mean's, biased for the count reward
    assert _bites("TE3-additive-arithmetic-unbiased", uniform, derivations)
    # TE5: the ESS identity needs softmax(p l), not softmax(-p l)
    assert _bites("TE5-ess-limit", flipped, derivations)
    # TE6: a log_power_mean that ignores the second token breaks the exchangeability the check measures
    first_only = DEFAULT_IMPL.with_(log_power_mean=lambda l, p, **kw: l[..., 0] * 1.0)
    assert _bites("TE6-noise-exchangeable", first_only, derivations)


def test_TE3_with_noise_the_arithmetic_mean_is_scaled_not_bent():
    """TE3, noise part, against the code: E g = e^{tau^2/2} grad J / T for the count reward, within mc_error."""
    g = torch.Generator().manual_seed(1)
    pi, mu = TabularPolicy(3, 3), TabularPolicy(3, 3)
    with torch.no_grad():
        pi.logits.copy_(torch.randn(1, 3, 3, generator=g))
        mu.logits.copy_(pi.logits + torch.randn(1, 3, 3, generator=g))
    env = SequenceBandit(3, 3, "count", target_seed=4)
    ans = prepare_answers(env, mu, pi)
    tau = 0.5
    m = moments(ans, level="sequence", p=1.0, noise_tau=tau, noise_draws=256, seed=0)
    want = math.exp(tau**2 / 2) * m["true_grad"] / 3
    err = float((m["mean_grad"] - want).norm() / want.norm())
    assert err <= 4 * m["mc_error"]
    assert m["cosine"] > 1 - 4 * m["mc_error"] ** 2

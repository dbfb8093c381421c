"""Theorems about the power mean itself (proofs/theorems_means.py): their checks bite, and their references keep their digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from proofs import DEFAULT_IMPL, theorems_means

from tests.proofs.proofs_helpers import assert_caught, assert_key_steps_verified, sqrt_ah_geometric


def naive_log_power_mean(log_x, p, dim=-1, *, weights=None, mask=None, keepdim=False, check=True):
    """log(mean(x**p))/p in float64: the textbook formula that loses every digit as p -> 0."""
    u = torch.as_tensor(log_x, dtype=torch.float64)
    w = torch.full_like(u, 1.0 / u.shape[-1]) if weights is None else weights / weights.sum()
    if isinstance(p, torch.Tensor):
        return torch.log((w * torch.exp(p * u)).sum()) / p
    if p == 0:
        return (w * u).sum()
    if math.isinf(p):
        return u.max() if p > 0 else u.min()
    return torch.log((w * torch.exp(p * u)).sum()) / p


def no_root_mean(log_x, p, dim=-1, *, weights=None, mask=None, keepdim=False, check=True):
    """log mean(x^p) without the 1/p: not monotone in p (seed 002's table has this flavour)."""
    u = torch.as_tensor(log_x, dtype=torch.float64)
    w = torch.full_like(u, 1.0 / u.shape[-1]) if weights is None else weights / weights.sum()
    if not isinstance(p, torch.Tensor) and math.isinf(p):
        return u.max() if p > 0 else u.min()
    return torch.logsumexp(p * u + torch.log(w), dim=-1)


def reversed_p_mean(log_x, p, *args, **kw):
    """M_{-p}: a mean, but decreasing in p."""
    return DEFAULT_IMPL.log_power_mean(log_x, -p, *args, **kw)


def softmax_ignoring_p(log_x, p, dim=-1, *, weights=None, mask=None, check=True):
    return torch.softmax(torch.as_tensor(log_x, dtype=torch.float64), dim=-1)


def nan_geometric_mean(x, dim=-1, *, weights=None, mask=None, keepdim=False, check=True):
    """NaN for every input: a check that let a NaN error lose to a finite one would pass it."""
    return torch.full((), math.nan, dtype=torch.float64)


WRONG = [
    ("T1-limits", "log_power_mean", naive_log_power_mean),
    ("T4-cumulant-series", "log_power_mean", naive_log_power_mean),
    ("T1-limits", "geometric_mean", sqrt_ah_geometric),
    ("T1-limits", "geometric_mean", nan_geometric_mean),
    ("T2-monotone", "log_power_mean", no_root_mean),
    ("T2-monotone", "log_power_mean", reversed_p_mean),
    ("T3-sensitivity", "mean_weights", softmax_ignoring_p),
    ("T14-risk", "power_mean", lambda x, p, **kw: DEFAULT_IMPL.power_mean(x, 1.0 - p, **kw)),
]


@pytest.mark.parametrize("tid,field,wrong", WRONG, ids=[f"{t}:{f}:{w.__name__}" for t, f, w in WRONG])
def test_wrong_implementation_is_caught(tid, field, wrong, derivations):
    assert_caught(tid, field, wrong, derivations)


def textbook_dlogdp(log_x, p, dim=-1, *, weights=None, mask=None, keepdim=False, check=True):
    """(E_pi[u] - log M_p)/p: exact in exact arithmetic, but its two terms agree to -log10(|p| spread) digits."""
    u = torch.as_tensor(log_x, dtype=torch.float64)
    pi = DEFAULT_IMPL.mean_weights(u, p, weights=weights)
    return ((pi * u).sum(-1) - DEFAULT_IMPL.log_power_mean(u, p, weights=weights)) / p


@pytest.mark.parametrize("u,p", [([-5.0, 1.0, 4.5, 0.3], 1e-6), ([-5.0, 1.0, 4.5, 0.3], -1e-5), ([-4.0, 3.9], 1e-7),
                                 ([2.0, -1.0, -3.0, 4.0, 0.5], 1e-5)])
def test_T2_tolerance_rejects_the_cancelling_textbook_derivative(u, p, derivations):
    """T2's d/dp tolerance follows meantheory's error model (no 1/|p| allowance below |p| spread = 1e-3),
    so the textbook form, which loses ~eps max|u| / |p|, fails it by 30-3000x on these cases. The
    earlier tolerance, 1 + min(1e3 spread, 1/|p|) times term (1), let it pass here (error/tolerance
    0.003 to 0.4)."""
    from proofs.core import Case
    from proofs.theorems_means import eval_monotone

    case = Case(u=np.array(u), p=p)
    err, tol = eval_monotone(derivations["T2-monotone"], case, DEFAULT_IMPL)
    assert err <= tol
    err, tol = eval_monotone(derivations["T2-monotone"], case, DEFAULT_IMPL.with_(dlog_power_mean_dp=textbook_dlogdp))
    assert err > 10 * tol


@pytest.mark.parametrize("p", [2.3e-135, -1e-300, 1e-20])
def test_risk_reference_keeps_its_digits_at_tiny_p(p):
    """T14's mpmath certainty equivalent cancels |log10 p| digits; at 50 fixed digits a drawn
    p = 2.3e-135 gave 1 instead of e (relative error 0.63). The torch mean must match it."""
    from proofs.core import Case
    from proofs.theorems_means import eval_risk

    err, tol = eval_risk(None, Case(u=np.array([1.0, -0.5, 0.3]), p=p), DEFAULT_IMPL)
    assert err <= tol


#: the steps sympy must verify in each theorem's derivation (at least those its statement rests on), held
#: here apart from ``Theorem.key_steps`` so that a step demoted to a remark is caught in either place
VERIFIED = {
    "T1-limits": {"p->0", "p->+inf", "p->-inf"},
    "T2-monotone": {"dlogM/dp=KL/p^2", "gibbs", "p=0"},
    "T3-sensitivity": {"dlogM/du=softmax", "dM/dx"},
    "T4-cumulant-series": {"coef-p0", "coef-p1", "coef-p2", "coef-p3", "coef-p4", "coef-p5", "harmonic"},
    "T5-homogeneity-duality": {"homogeneity", "duality"},
    "T5b-symmetry": {f"n={n}" for n in range(2, 9)},
    "T14-risk": {"certainty-equivalent", "rra=1-p"},
}


@pytest.mark.parametrize("tid", sorted(VERIFIED))
def test_sympy_verifies_the_key_steps(tid, derivations):
    assert_key_steps_verified(VERIFIED, theorems_means, tid, derivations)

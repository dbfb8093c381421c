"""The checks are known to bite: deliberately wrong implementations fail the very checks
`hmpo verify` runs, while the project's functions pass them on the same cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from proofs import BY_ID, DEFAULT_IMPL, RngDrawer, check_theorem


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


def sqrt_ah_geometric(x, dim=-1, *, weights=None, mask=None, keepdim=False, check=True):
    """sqrt(A H) passed off as the geometric mean (seed 000's RMI limit)."""
    a = DEFAULT_IMPL.arithmetic_mean(x, weights=weights)
    h = DEFAULT_IMPL.harmonic_mean(x, weights=weights)
    return torch.sqrt(a * h)


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


def mask_ignoring(log_x, p, dim=-1, *, weights=None, mask=None, keepdim=False, check=True):
    """Pads are averaged in (as the seed's len(ratios) does)."""
    u = torch.nan_to_num(torch.as_tensor(log_x, dtype=torch.float64), nan=0.0)
    return DEFAULT_IMPL.log_power_mean(u, p, weights=weights)


WRONG = [
    ("T1-limits", "log_power_mean", naive_log_power_mean),
    ("T4-cumulant-series", "log_power_mean", naive_log_power_mean),
    ("T1-limits", "geometric_mean", sqrt_ah_geometric),
    ("T7-ah-from-AH", "geometric_mean", sqrt_ah_geometric),
    ("T2-monotone", "log_power_mean", no_root_mean),
    ("T2-monotone", "log_power_mean", reversed_p_mean),
    ("T3-sensitivity", "mean_weights", softmax_ignoring_p),
    ("T9-seq-gradient", "log_power_mean", mask_ignoring),
    ("T6-pair-iteration", "arithmetic_harmonic_iteration", DEFAULT_IMPL.gauss_agm),
    ("T14-risk", "power_mean", lambda x, p, **kw: DEFAULT_IMPL.power_mean(x, 1.0 - p, **kw)),
]


@pytest.mark.parametrize("tid,field,wrong", WRONG, ids=[f"{t}:{f}:{w.__name__}" for t, f, w in WRONG])
def test_wrong_implementation_is_caught(tid, field, wrong, derivations):
    th = BY_ID[tid]
    d = derivations[tid]
    good = check_theorem(th, d, RngDrawer(np.random.default_rng(7)), DEFAULT_IMPL, cases=30)
    bad = check_theorem(th, d, RngDrawer(np.random.default_rng(7)), DEFAULT_IMPL.with_(**{field: wrong}), cases=30)
    assert good.passed, good.worst
    assert not bad.passed, f"{wrong.__name__} slipped through {tid}: worst ratio {bad.max_ratio}"
    assert bad.max_ratio > 10, "caught by a clear margin, not by rounding"

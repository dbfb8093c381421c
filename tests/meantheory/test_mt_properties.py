"""Mathematical properties of the power mean (hypothesis), checked on the implementation.

Each identity holds exactly in real arithmetic; the tolerance is the float64 accuracy
bound (mt_helpers.tol64) on each side, so a failure means one side is outside its bound.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from meantheory import dlog_power_mean_dp, log_power_mean, mean_weights, power_mean
from tests.meantheory.mt_helpers import DEVICES, any_p, finite_p, rows, tol64

T = torch.tensor


def lpm(u, p, **kw):
    return log_power_mean(T(np.asarray(u), dtype=torch.float64), p, **kw).item()


@given(rows(lim=300), finite_p, finite_p)
def test_monotone_in_p(u, p1, p2):
    lo, hi = sorted((p1, p2))
    assert lpm(u, lo) <= lpm(u, hi) + 2 * tol64(u)


@given(rows(), any_p)
def test_between_min_and_max(u, p):
    v = lpm(u, p)
    assert u.min() - tol64(u) <= v <= u.max() + tol64(u)


@given(st.floats(-700, 700), st.integers(1, 20), any_p)
def test_constant_input(c, n, p):
    assert abs(lpm(np.full(n, c), p) - c) <= tol64([c])


@given(rows(lim=300), st.floats(-300, 300), any_p)
def test_homogeneity(u, c, p):
    """M_p(e^c x) = e^c M_p(x), i.e. a shift of u shifts log M_p."""
    assert abs(lpm(u + c, p) - (lpm(u, p) + c)) <= 2 * tol64(np.abs(u) + abs(c))


@given(rows(), any_p, st.randoms(use_true_random=False))
def test_permutation_invariance(u, p, rnd):
    perm = list(range(len(u)))
    rnd.shuffle(perm)
    assert abs(lpm(u[perm], p) - lpm(u, p)) <= tol64(u)


@given(rows(), any_p)
def test_duality(u, p):
    """M_p(x) = 1 / M_{-p}(1/x): log M_p(u) = -log M_{-p}(-u)."""
    assert abs(lpm(u, p) + lpm(-u, -p)) <= 2 * tol64(u)


@given(rows(n_max=6), st.lists(st.integers(0, 4), min_size=6, max_size=6), any_p)
def test_integer_weights_equal_repetition(u, counts, p):
    k = np.asarray(counts[: len(u)])
    assume(k.sum() > 0)
    weighted = lpm(u, p, weights=T(k, dtype=torch.float64))
    repeated = lpm(np.repeat(u, k), p)
    assert abs(weighted - repeated) <= 2 * tol64(u[k > 0])


@given(rows(n_min=2), any_p, st.data())
def test_masking_equals_dropping(u, p, data):
    keep = np.asarray(data.draw(st.lists(st.booleans(), min_size=len(u), max_size=len(u))))
    assume(keep.any())
    padded = u.copy()
    padded[~keep] = data.draw(st.sampled_from([math.nan, -math.inf, math.inf, 1e300]))
    assert abs(lpm(padded, p, mask=T(keep)) - lpm(u[keep], p)) <= tol64(u[keep])


@given(rows(lim=50))
def test_continuity_at_zero_and_limits(u):
    g = lpm(u, 0.0)
    spread = u.max() - u.min()
    for p in (1e-12, -1e-12, 1e-300):
        # |log M_p - log G| <= |p| Var/2 + ... <= |p| spread^2 for small |p| spread.
        assert abs(lpm(u, p) - g) <= abs(p) * spread**2 + tol64(u)
    n = len(u)
    for p in (1e3, 1e5, 1e7):
        # max - log(n)/p <= M_p <= max, and the mirror image for -p.
        assert u.max() - math.log(n) / p - tol64(u) <= lpm(u, p) <= u.max() + tol64(u)
        assert u.min() - tol64(u) <= lpm(u, -p) <= u.min() + math.log(n) / p + tol64(u)
    assert lpm(u, math.inf) == u.max() and lpm(u, -math.inf) == u.min()


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=20)
@given(st.integers(1, 5), st.integers(1, 9), any_p, st.integers(0, 2**31 - 1))
def test_batched_equals_row_by_row_and_p_per_row(device, b, n, p, seed):
    rng = np.random.default_rng(seed)
    u = T(rng.normal(size=(b, n)) * rng.choice([1e-8, 1, 30]), dtype=torch.float64, device=device)
    m = T(rng.random((b, n)) > 0.3, device=device)
    m[:, 0] = True
    batched = log_power_mean(u, p, mask=m)
    for i in range(b):
        assert torch.equal(batched[i], log_power_mean(u[i][m[i]], p)) or \
            abs((batched[i] - log_power_mean(u[i][m[i]], p)).item()) <= tol64(u[i].cpu().numpy())
    # one p per row: a tensor of different exponents equals each row at its own p
    ps = [p, 0.0, -1.0, 1e-9, math.inf][:b]
    per_row = log_power_mean(u, T(ps, dtype=torch.float64, device=device), mask=m)
    for i in range(b):
        assert abs((per_row[i] - log_power_mean(u[i], ps[i], mask=m[i])).item()) <= tol64(u[i].cpu().numpy())


@given(rows(n_max=8), finite_p)
def test_float32_agrees_with_float64(u, p):
    u32 = np.float32(u)
    a = log_power_mean(T(u32), p).item()
    b = log_power_mean(T(u32.astype(np.float64)), p).item()
    assert abs(a - b) <= 2e-5 * max(1.0, float(np.abs(u32).max()))


@settings(max_examples=40)
@given(rows(n_max=8, lim=300), finite_p, st.booleans())
def test_autograd_equals_closed_forms(u, p, mask_first):
    ut = T(u, dtype=torch.float64).requires_grad_()
    m = T(np.arange(len(u)) != 0) if (mask_first and len(u) > 1) else None
    pt = T(p, dtype=torch.float64, requires_grad=True)
    gu, gp = torch.autograd.grad(log_power_mean(ut, pt, mask=m), [ut, pt])
    assert torch.allclose(gu, mean_weights(T(u), p, mask=m), rtol=0, atol=1e-13)
    cf = dlog_power_mean_dp(T(u), p, mask=m)
    assert abs(gp - cf) <= 1e-10 * abs(cf) + 1e-300
    assert cf >= 0  # KL / p^2 >= 0: the monotonicity theorem


def test_power_mean_special_cases_and_kinds():
    x = [1.0, 2.0, 4.0, 8.0]
    assert abs(power_mean(x, 1.0) - 3.75) < 1e-15
    assert abs(power_mean(x, 0.0) - 8.0 ** 0.5) < 1e-15
    assert abs(power_mean(x, -1.0) - 4 / (1 + 0.5 + 0.25 + 0.125)) < 1e-15
    assert isinstance(power_mean(x, 1.0), float)
    out = power_mean(np.array([x, x]), 2.0)
    assert isinstance(out, np.ndarray) and out.shape == (2,)
    assert isinstance(power_mean([x, x], 2.0), list)
    assert isinstance(power_mean(T(x), 2.0), torch.Tensor)
    assert power_mean(T([[1.0], [2.0]]), 1.0, dim=0, keepdim=True).shape == (1, 1)

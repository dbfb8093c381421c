"""Two-number iterations and the n-value pair iteration of seed 000 (meantheory/iterations.py)."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st

from meantheory import arithmetic_harmonic_iteration, gauss_agm, mean_pair_iteration
from meantheory import reference as ref

pos = st.floats(1e-6, 1e6)


@given(pos, pos)
def test_arithmetic_harmonic_product_invariant_and_quadratic_gap(a, b):
    tr = arithmetic_harmonic_iteration(a, b)
    assert tr.converged
    # the product a_k h_k is invariant (each step rounds: a few ulps per step)
    for hi, lo in zip(tr.upper, tr.lower):
        assert abs(hi * lo / (a * b) - 1) <= 8e-16 * (tr.steps + 1)
    # gap recursion g_{k+1} = g_k^2 / (2 (a_k + h_k)), checked against the exact pairs
    exact = ref.mp_arithmetic_harmonic(a, b, tr.steps)
    with mpmath.workdps(60):
        for k in range(tr.steps):
            ak, hk = exact[k]
            a1, h1 = exact[k + 1]
            assert abs((a1 - h1) - (ak - hk) ** 2 / (2 * (ak + hk))) <= mpmath.mpf(10) ** -50 * ak
    for k, (ak, hk) in enumerate(exact):
        assert abs(tr.upper[k] - float(max(ak, hk))) <= 4e-16 * (k + 1) * tr.upper[k]
    assert abs(tr.limit - math.sqrt(a * b)) <= 2e-16 * math.sqrt(a * b)
    assert abs(tr.upper[-1] - tr.limit) <= 2e-16 * (tr.steps + 1) * tr.limit  # an ulp or so per step
    # linear (halving) phase while a >> h, then quadratic: about log2(ratio)/2 + 5 steps
    assert tr.steps <= math.log2(max(a, b) / min(a, b)) / 2 + 7


@settings(max_examples=30)
@given(pos, pos)
def test_gauss_agm_matches_mpmath_and_the_elliptic_form(a, b):
    tr = gauss_agm(a, b)
    exact = ref.mp_gauss_agm(a, b)
    assert abs(tr.limit / float(exact) - 1) <= 4e-15
    assert abs(float(exact / ref.mp_agm_elliptic(a, b)) - 1) <= 1e-40
    lo, hi = sorted((a, b))
    if hi / lo > 1 + 1e-6:  # strictly between G and A
        assert math.sqrt(a * b) < tr.limit < (a + b) / 2


def _pair_gap_sign(x):
    """Sign of sum sinh(u - mean u) (equal weights), exactly in mpmath."""
    with mpmath.workdps(60):
        u = [mpmath.log(mpmath.mpf(v)) for v in x]
        ub = mpmath.fsum(u) / len(u)
        s = mpmath.fsum(mpmath.sinh(v - ub) for v in u)
        return (s > 0) - (s < 0), s


@settings(max_examples=30)
@given(st.lists(st.floats(0.01, 100), min_size=1, max_size=8))
def test_mean_pair_iteration_limit_is_sqrt_AH(x):
    res = mean_pair_iteration(torch.tensor(x, dtype=torch.float64), steps=14)  # ratio <= 1e4: <= 12 steps
    with mpmath.workdps(50):
        a = mpmath.fsum(mpmath.mpf(v) for v in x) / len(x)
        h = len(x) / mpmath.fsum(1 / mpmath.mpf(v) for v in x)
        lim = mpmath.sqrt(a * h)
        g = mpmath.exp(mpmath.fsum(mpmath.log(mpmath.mpf(v)) for v in x) / len(x))
    assert abs(float(res.limit) / float(lim) - 1) <= 1e-14
    assert abs(float(res.trace_upper[-1]) / float(lim) - 1) <= 1e-14
    assert abs(float(res.geometric) / float(g) - 1) <= 1e-14
    # the gap has the sign of sum sinh(u - mean u) wherever that sign is resolvable
    sign, s = _pair_gap_sign(x)
    if abs(s) > 1e-10:
        assert np.sign(float(res.gap)) == sign


def test_hypothesis_finds_where_the_pair_iteration_misses_the_geometric_mean():
    """Seed 000 conjectures the A-H iteration from (A, H) converges to G; it does not."""
    x = find(st.lists(st.floats(0.1, 10), min_size=3, max_size=6),
             lambda v: abs(float(mean_pair_iteration(v).relative_gap)) > 1e-3)
    res = mean_pair_iteration(x)
    sign, _ = _pair_gap_sign(x)
    assert abs(float(res.relative_gap)) > 1e-3
    assert np.sign(float(res.gap)) == sign
    # and the documented examples: right-skewed (1, 1, 4) above G, left-skewed (1, 4, 4) below
    assert mean_pair_iteration([1.0, 1.0, 4.0]).gap > 0
    assert mean_pair_iteration([1.0, 4.0, 4.0]).gap < 0
    # symmetric in log space (the seed's demonstration): no gap
    assert abs(mean_pair_iteration([0.5, 1.0, 2.0]).gap) < 1e-15


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: arithmetic_harmonic_iteration(1.0, -2.0), r"b: .*> 0"),
        (lambda: arithmetic_harmonic_iteration(1.0, 2.0, steps=-1), r"steps"),
        (lambda: gauss_agm(0.0, 2.0), r"a: .*> 0"),
        (lambda: mean_pair_iteration([1.0, 2.0], steps=1.5), r"steps"),
    ],
)
def test_bad_input_names_the_problem(call, match):
    """Bad pairs and step counts raise a ValueError that names the problem."""
    with pytest.raises(ValueError, match=match):
        call()


def _mp_pairs(a, b, steps, step):
    """The first ``steps`` pairs of a two-number iteration at 60 digits, ordered (upper, lower)."""
    with mpmath.workdps(60):
        hi, lo = max(mpmath.mpf(a), mpmath.mpf(b)), min(mpmath.mpf(a), mpmath.mpf(b))
        out = [(hi, lo)]
        for _ in range(steps):
            hi, lo = step(hi, lo)
            out.append((hi, lo))
        return out


def _agm_step(x, y):
    return (x + y) / 2, mpmath.sqrt(x * y)


@pytest.mark.parametrize("steps", [0, 1, 2, 5, None])
def test_gauss_agm_limit_and_trace_for_any_steps(steps):
    """The stated limit is agm(a, b) however many steps the trace shows (steps = 0: 26.2167
    for (1, 100), not the starting 100); the trace is the iteration itself."""
    tr = gauss_agm(1.0, 100.0, steps=steps)
    exact = float(ref.mp_gauss_agm(1.0, 100.0))
    assert abs(exact - 26.2166887202249) < 1e-12
    assert abs(tr.limit / exact - 1) <= 4e-15
    if steps is not None:
        assert tr.steps == steps and len(tr.upper) == len(tr.lower) == len(tr.gaps) == steps + 1
        assert tr.converged is (steps >= 6)  # the gap of (1, 100) falls below 4 eps only at step 6
    for k, (hi, lo) in enumerate(_mp_pairs(1.0, 100.0, tr.steps, _agm_step)):
        # each step rounds twice (a sum, a square root of a product): about an ulp per step
        assert abs(tr.upper[k] / float(hi) - 1) <= 4e-16 * (k + 1)
        assert abs(tr.lower[k] / float(lo) - 1) <= 4e-16 * (k + 1)
        assert tr.gaps[k] == tr.upper[k] - tr.lower[k]


@pytest.mark.parametrize("steps", [0, 1, 3, None])
def test_arithmetic_harmonic_limit_and_trace_for_any_steps(steps):
    tr = arithmetic_harmonic_iteration(100.0, 1.0, steps=steps)
    assert tr.limit == 10.0  # sqrt(a b), correctly rounded
    exact = ref.mp_arithmetic_harmonic(100.0, 1.0, tr.steps)
    if steps is not None:
        assert tr.steps == steps and len(tr.upper) == steps + 1
    for k, (ak, hk) in enumerate(exact):
        assert abs(tr.upper[k] / float(max(ak, hk)) - 1) <= 4e-16 * (k + 1)
        assert abs(tr.lower[k] / float(min(ak, hk)) - 1) <= 4e-16 * (k + 1)


def test_arithmetic_harmonic_stops_at_the_relative_tolerance():
    tr = arithmetic_harmonic_iteration(1.0, 100.0, tol=1e-6)
    assert tr.converged
    assert tr.gaps[-1] <= 1e-6 * tr.upper[-1] < tr.gaps[-2]  # the first step within tol, not later
    assert tr.steps == 7


@pytest.mark.parametrize("steps", [0, 1, 3])
def test_mean_pair_iteration_trace_with_weights_and_mask(steps):
    """Every iterate, weighted and masked, against the iteration run in mpmath from the
    weighted (A, H) of the unmasked values; the limit sqrt(A H) even before convergence."""
    x = np.array([[1.0, 4.0, 0.25, 9.0, 100.0], [2.0, 2.5, 3.0, 50.0, 7.0]])
    w = np.array([[1.0, 2.0, 0.5, 3.0, 1.0], [0.0, 1.0, 1.0, 2.0, 4.0]])
    m = np.array([[True, True, True, True, False], [True, True, True, True, True]])
    res = mean_pair_iteration(torch.tensor(x), steps=steps, weights=torch.tensor(w), mask=torch.tensor(m))
    assert tuple(res.trace_upper.shape) == (steps + 1, 2)
    for i in range(2):
        keep = m[i] & (w[i] > 0)
        with mpmath.workdps(60):
            xs = [mpmath.mpf(v) for v in x[i][keep]]
            ws = [mpmath.mpf(v) for v in w[i][keep]]
            tot = mpmath.fsum(ws)
            a = mpmath.fsum(wj * xj for wj, xj in zip(ws, xs)) / tot
            h = tot / mpmath.fsum(wj / xj for wj, xj in zip(ws, xs))
            g = mpmath.exp(mpmath.fsum(wj * mpmath.log(xj) for wj, xj in zip(ws, xs)) / tot)
        exact = ref.mp_arithmetic_harmonic(a, h, steps)
        for k, (ak, hk) in enumerate(exact):
            # A and H carry the log-space means' error (a few ulps), then ~an ulp per step
            assert abs(float(res.trace_upper[k, i]) / float(ak) - 1) <= 1e-14
            assert abs(float(res.trace_lower[k, i]) / float(hk) - 1) <= 1e-14
        assert abs(float(res.limit[i]) / float(mpmath.sqrt(a * h)) - 1) <= 1e-14
        assert abs(float(res.geometric[i]) / float(g) - 1) <= 1e-14
        assert abs(float(res.arithmetic[i]) / float(a) - 1) <= 1e-14
        assert abs(float(res.harmonic[i]) / float(h) - 1) <= 1e-14

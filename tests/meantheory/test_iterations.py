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

"""proofs/forms.py: the working precision grows with the cancellation, the lambdified forms agree with an
independent mpmath oracle (meantheory.reference) even at tiny p, and the small converters keep their contracts."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import sympy as sp
import torch

from meantheory.reference import mp_log_power_mean
from proofs.forms import PerN, concrete, dps_for, grad_or_none, mp_eval, mp_moments, normalised, p, t64, to_float, weights_t
from proofs.theorems_means import log_mean_form


@pytest.mark.parametrize("pv,power,expected", [
    (0.0, 1, 40), (2.0, 1, 40), (float("inf"), 1, 40), (0.5, 1, 40 + 1 + 5),
    (1e-7, 1, 40 + 7 + 5), (-1e-7, 2, 40 + 14 + 5), (3e-300, 1, 40 + 300 + 5),
])
def test_dps_grows_with_the_digits_lost_to_cancellation(pv, power, expected):
    assert dps_for(pv, power=power) == expected


@pytest.mark.parametrize("pv", [1.7, -0.3, 1e-9, -2e-40, 1e-200])
def test_the_lambdified_log_mean_matches_meantheory_s_oracle(pv):
    """L_n = log(sum w e^{p u})/p cancels -log10|p| digits; at dps_for(p) it keeps 30 digits
    (compared at 30 significant digits against mpmath's own evaluation in meantheory.reference)."""
    u = np.array([0.7, -1.3, 2.1])
    w = np.array([0.2, 0.5, 0.3])
    got = mp_eval(log_mean_form()(3), [*u, *w, pv], dps_for(pv))
    ref = mp_log_power_mean(u.tolist(), pv, weights=w.tolist(), dps=60)
    with mpmath.workdps(60):
        assert abs(got - ref) <= abs(ref) * mpmath.mpf(10) ** -30


def test_normalised_weights_sum_to_one_symbolically():
    _, w = concrete(3)
    assert sp.simplify(sum(normalised(w)) - 1) == 0
    assert all(s.is_positive for s in w)


def test_per_n_builds_each_n_once_and_lazily():
    calls = []

    def builder(nn):
        calls.append(nn)
        u, _ = concrete(nn)
        return (*u, p), sum(u) * p

    form = PerN(builder)
    assert calls == []
    f2 = form(2)
    assert form(2) is f2 and calls == [2]
    assert float(mp_eval(form(3), [1.0, 2.0, 3.0, 0.5])) == pytest.approx(3.0, abs=0)  # args: u1..u3 and p
    assert calls == [2, 3]


def test_mp_moments_are_the_normalised_raw_moments():
    u = np.array([1.0, -2.0, 0.5])
    w = np.array([1.0, 2.0, 1.0])  # not normalised: mp_moments normalises
    ms = mp_moments(u, w, 3)
    wn = w / 4
    for k, m in enumerate(ms, start=1):
        assert float(m) == pytest.approx(float(np.sum(wn * u**k)), rel=1e-15)


def test_converters():
    x = t64([1.0, 2.0], requires_grad=True)
    assert x.dtype == torch.float64 and x.requires_grad
    assert weights_t(None) is None and weights_t(np.array([0.5, 1.0])).dtype == torch.float64
    y = (x * 3).sum()
    assert to_float(y) == 9.0 and to_float(np.float32(0.5)) == 0.5
    unused = t64([1.0], requires_grad=True)
    assert grad_or_none(y, unused) is None
    assert grad_or_none((x * 3).sum(), x).tolist() == [3.0, 3.0]

"""Accuracy of log_power_mean / power_mean and their gradients against the mpmath oracle.

Tolerances are stated and justified in mt_helpers.py.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from meantheory import dlog_power_mean_dp, log_power_mean, mean_weights, power_mean
from meantheory import reference as ref
from tests.meantheory.mt_helpers import DEVICES, SPECIAL_P, any_p, finite_p, mask_for, rows, tol32, tol64, weights_for, with_padding


@st.composite
def cases(draw, p_strategy=any_p, n_max=10):
    u = draw(rows(n_max=n_max))
    n = len(u)
    w = draw(weights_for(n))
    m = draw(mask_for(n))
    if w is not None and m is not None and not (w[m] > 0).any():
        w[np.argmax(m)] = 1.0
    return u, draw(p_strategy), w, m


def _support(n, w, m):
    s = np.ones(n, dtype=bool)
    if w is not None:
        s &= w > 0
    if m is not None:
        s &= m
    return s


def _t(a, device, dtype=torch.float64):
    return None if a is None else torch.as_tensor(a, dtype=dtype if a.dtype != bool else torch.bool, device=device)


@settings(max_examples=80)
@given(cases())
def test_log_power_mean_matches_oracle_float64(case):
    u, p, w, m = case
    got = log_power_mean(_t(with_padding(u, m), "cpu"), p, weights=_t(w, "cpu"), mask=_t(m, "cpu")).item()
    exact = ref.mp_log_power_mean(u.tolist(), p, None if w is None else w.tolist(), None if m is None else m.tolist())
    assert math.isfinite(got)
    assert abs(got - float(exact)) <= tol64(u, _support(len(u), w, m))


@settings(max_examples=40)
@given(cases(p_strategy=finite_p))
def test_power_mean_relative_error(case):
    u, p, w, m = case
    u = np.clip(u, -700, 700)
    x = np.exp(u)
    got = power_mean(torch.tensor(x), p, weights=_t(w, "cpu"), mask=_t(m, "cpu")).item()
    exact = ref.mp_power_mean(x.tolist(), p, None if w is None else w.tolist(), None if m is None else m.tolist())
    if exact == 0:  # exp(u) underflowed to 0 for u < -745: handled as an exact zero
        assert got == 0.0
        return
    # exp of the log amplifies an absolute log error into the same relative error.
    assert abs(got / float(exact) - 1) <= tol64(u, _support(len(u), w, m)) + 4 * 2.0**-52


@settings(max_examples=25)
@given(cases(p_strategy=finite_p, n_max=8), st.booleans())
def test_gradients_match_closed_forms_oracle(case, p_tensor):
    u, p, w, m = case
    ut = _t(with_padding(u, m), "cpu").requires_grad_()
    pt = torch.tensor(p, dtype=torch.float64, requires_grad=True) if p_tensor else p
    val = log_power_mean(ut, pt, weights=_t(w, "cpu"), mask=_t(m, "cpu"))
    grads = torch.autograd.grad(val, [ut, pt] if p_tensor else [ut])
    wl = None if w is None else w.tolist()
    ml = None if m is None else m.tolist()
    pi = np.array([float(v) for v in ref.mp_mean_weights(u.tolist(), p, wl, ml)])
    assert np.all(np.isfinite(grads[0].numpy()))
    assert np.abs(grads[0].numpy() - pi).max() <= 1e-12
    assert np.abs(mean_weights(_t(with_padding(u, m), "cpu"), p, weights=_t(w, "cpu"), mask=_t(m, "cpu")).numpy() - pi).max() <= 1e-12
    exact = float(ref.mp_dlog_power_mean_dp(u.tolist(), p, wl, ml))
    closed = float(dlog_power_mean_dp(_t(with_padding(u, m), "cpu"), p, weights=_t(w, "cpu"), mask=_t(m, "cpu")))
    for got in [closed] + ([grads[1].item()] if p_tensor else []):
        assert abs(got - exact) <= 1e-7 * abs(exact), (got, exact)


@pytest.mark.parametrize("p", [1e-7, -1e-7, 3e-7, 1e-9])
def test_dp_where_naive_closed_form_cancels(p):
    """|p| ~ 1e-7 with a spread of order 1-10: (E_pi u - log M)/p keeps ~7 digits at best."""
    rng = np.random.default_rng(1)
    u = rng.normal(size=64) * 3.0
    pt = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(log_power_mean(torch.tensor(u), pt), pt)
    exact = float(ref.mp_dlog_power_mean_dp(u.tolist(), p))
    assert abs(g.item() - exact) <= 1e-7 * exact
    assert abs(float(dlog_power_mean_dp(torch.tensor(u), p)) - exact) <= 1e-7 * exact


def test_dp_of_a_tiny_variance_at_a_large_offset():
    """Var ~ 1e-22 around 300: a mean rounded to one ulp of 300 would add ulp^2 ~ 3e-27
    to Var -- relative 1e-5 -- unless the moments are taken about a nearby point."""
    u = 300.0 + np.array([0.0, 2.7e-11, -1.3e-11])
    for p in (0.0, 1e-9, -2.0):
        exact = float(ref.mp_dlog_power_mean_dp(u.tolist(), p))
        assert abs(float(dlog_power_mean_dp(torch.tensor(u), p)) - exact) <= 1e-7 * exact


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", [0.0, -1e-16, 1e-7, -0.3, 1.0, -1000.0, math.inf])
def test_n4096_fixed_rows(device, p):
    """n = 4096 on two fixed rows (log-ratio-like and wide), with weights and a mask."""
    rng = np.random.default_rng(7)
    u = np.stack([0.3 * rng.normal(size=4096), np.clip(40 * rng.normal(size=4096) + 100, -700, 700)])
    w = rng.uniform(0.1, 2.0, size=u.shape)
    m = rng.random(u.shape) > 0.2
    got = log_power_mean(_t(with_padding(u, m), device), p, weights=_t(w, device), mask=_t(m, device)).cpu().numpy()
    exact = ref.log_power_mean_rows(u, p, w, m)
    for i in range(2):
        assert abs(got[i] - exact[i]) <= tol64(u[i], m[i])
    if p in (-1e-16, 1.0, -1000.0):  # and without weights or mask (the oracle is slow)
        got_nw = log_power_mean(_t(u, device), p).cpu().numpy()
        exact_nw = ref.log_power_mean_rows(u, p)
        for i in range(2):
            assert abs(got_nw[i] - exact_nw[i]) <= tol64(u[i])


@pytest.mark.parametrize("device", DEVICES)
def test_n4096_gradients(device):
    rng = np.random.default_rng(8)
    u = 0.5 * rng.normal(size=(1, 4096))
    m = rng.random(u.shape) > 0.1
    for p in (-1.0, 1e-7):
        ut = _t(with_padding(u, m), device).requires_grad_()
        pt = torch.tensor([p], dtype=torch.float64, device=device, requires_grad=True)
        gu, gp = torch.autograd.grad(log_power_mean(ut, pt, mask=_t(m, device)).sum(), [ut, pt])
        pi = ref.mean_weights_rows(u, p, None, m)
        assert np.abs(gu.cpu().numpy() - pi).max() <= 1e-12
        exact = ref.dlog_power_mean_dp_rows(u, p, None, m)[0]
        assert abs(gp.item() - exact) <= 1e-7 * exact


@settings(max_examples=40)
@given(cases(n_max=10))
def test_float32_relative_error(case):
    u, p, w, m = case
    u32 = np.float32(u).astype(np.float64)  # the oracle sees exactly the float32 inputs
    w32 = None if w is None else np.float32(w).astype(np.float64)
    got = log_power_mean(torch.tensor(with_padding(u32, m), dtype=torch.float32), p,
                         weights=None if w is None else torch.tensor(w32, dtype=torch.float32), mask=_t(m, "cpu"))
    assert got.dtype == torch.float32
    exact = float(ref.mp_log_power_mean(u32.tolist(), float(np.float32(p)), None if w is None else w32.tolist(),
                                        None if m is None else m.tolist()))
    assert math.isfinite(got.item())
    assert abs(got.item() - exact) <= tol32(u32[_support(len(u), w32, m)])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_is_computed_in_float32(dtype):
    rng = np.random.default_rng(3)
    u = torch.tensor(rng.normal(size=(3, 50)), dtype=dtype)
    for p in (0.0, -1.0, 1e-6, 2.0):
        got = log_power_mean(u, p)
        assert got.dtype == torch.float32
        assert torch.equal(got, log_power_mean(u.float(), p))
        exact = ref.log_power_mean_rows(u.double().numpy(), p)
        assert np.abs(got.double().numpy() - exact).max() <= tol32(u.double().numpy())


def test_oracle_is_self_consistent():
    """The oracle's series branch and its direct branch agree where both are valid."""
    u = [0.1, -0.4, 0.25, 1.0]
    with mpmath.workdps(120):
        p = mpmath.mpf("1e-13")
        direct = mpmath.log(mpmath.fsum(mpmath.exp(p * mpmath.mpf(v)) for v in u) / 4) / p
    assert abs(float(ref.mp_log_power_mean(u, 1e-13)) - float(direct)) < 1e-30


def test_no_overflow_where_the_naive_formula_overflows():
    """x^p overflows float64 for p log x > 709; the shifted form does not."""
    u = torch.tensor([700.0, 690.0, -700.0], dtype=torch.float64)
    for p in (1000.0, -1000.0, 2.0, -2.0):
        exact = float(ref.mp_log_power_mean(u.tolist(), p))
        assert abs(log_power_mean(u, p).item() - exact) <= tol64(u.numpy())


@pytest.mark.parametrize("p", SPECIAL_P)
def test_zeros_against_oracle(p):
    """A zero entry (log_x = -inf): 0 for p <= 0, exact for p > 0."""
    u = np.array([-np.inf, 0.3, -1.2, 2.0])
    got = log_power_mean(torch.tensor(u), p).item()
    exact = float(ref.mp_log_power_mean(u.tolist(), p))
    if p <= 0:
        assert got == -math.inf and exact == -math.inf
    else:
        # For tiny p the value is log(3/4)/p ~ -1e16: a few ulps of the value itself.
        assert abs(got - exact) <= max(tol64(u), 4 * 2.0**-52 * abs(exact))

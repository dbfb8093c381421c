"""log_power_mean, power_mean, mean_weights and dlog_power_mean_dp (meantheory/power_mean.py).

Accuracy against the mpmath oracle, gradients (gradcheck, closed forms, padding that must not
leak, zeros and empty rows), the mathematical properties (hypothesis), and bad input.
Tolerances are stated and justified in mt_helpers.py. Every computation path against the
oracle: test_paths.py.
"""

from __future__ import annotations

import functools
import math
import warnings

import mpmath
import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck, gradgradcheck

from meantheory import dlog_power_mean_dp, geometric_mean, log_power_mean, mean_weights, power_mean
from meantheory import reference as ref
from tests.meantheory.mt_helpers import (
    DEVICES,
    SPECIAL_P,
    any_p,
    finite_p,
    mask_for,
    rows,
    tol32,
    tol64,
    weights_for,
    with_padding,
)

D = torch.float64
T = torch.tensor
U = torch.tensor([[0.1, -0.5, 0.3], [1.0, 2.0, -1.0]], dtype=torch.float64)


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


def lpm(u, p, **kw):
    return log_power_mean(T(np.asarray(u), dtype=torch.float64), p, **kw).item()


def _grad_inputs(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(4, 5, generator=g, dtype=D).to(device).requires_grad_()
    w = (torch.rand(4, 5, generator=g, dtype=D) + 0.1).to(device)
    m = torch.tensor([[True] * 5, [True, False, True, True, False], [False, True, True, True, True],
                      [True, True, False, True, True]], device=device)
    return u, w, m


# -------------------------------------------------- accuracy against the oracle


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


def test_no_overflow_where_the_naive_formula_overflows():
    """x^p overflows float64 for p log x > 709; the shifted form does not."""
    u = torch.tensor([700.0, 690.0, -700.0], dtype=torch.float64)
    for p in (1000.0, -1000.0, 2.0, -2.0):
        exact = float(ref.mp_log_power_mean(u.tolist(), p))
        assert abs(log_power_mean(u, p).item() - exact) <= tol64(u.numpy())


def _p_as(p: float, how: str, rows: int):
    """p as a Python number, a 0-d tensor, or one tensor entry per row (the tensor-p path)."""
    if how == "float":
        return p
    return torch.tensor(p, dtype=D) if how == "0-d" else torch.full((rows,), p, dtype=D)


P_AS = ["float", "0-d", "per-row"]


@pytest.mark.parametrize("p_as", P_AS)
@pytest.mark.parametrize("p", SPECIAL_P)
def test_zeros_against_oracle(p, p_as):
    """A zero entry (log_x = -inf): 0 for p <= 0, exact for p > 0; p given in every form."""
    u = np.array([-np.inf, 0.3, -1.2, 2.0])
    got = log_power_mean(torch.tensor(np.stack([u, u])), _p_as(p, p_as, 2))
    exact = float(ref.mp_log_power_mean(u.tolist(), p))
    for v in got.tolist():
        if p <= 0:
            assert v == -math.inf and exact == -math.inf
        else:
            # For tiny p the value is log(3/4)/p ~ -1e16: a few ulps of the value itself.
            assert abs(v - exact) <= max(tol64(u), 4 * 2.0**-52 * abs(exact))


# ------------------------------------- gradients, padding, zeros and empty rows


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ps", [[0.7, -1.3, 1e-7, -2e-9], [0.0, 3.0, -0.2, 1e-300], [1e-6, -1e-6, 0.49, -0.51]])
def test_gradcheck_and_gradgradcheck(device, ps):
    u, w, m = _grad_inputs(device)
    p = torch.tensor(ps, dtype=D, device=device, requires_grad=True)

    def f(u, p):
        return log_power_mean(u, p, weights=w, mask=m)

    assert gradcheck(f, (u, p), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert gradgradcheck(f, (u, p), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", [1.0, -1.0, 0.0, 1e-7, 0.3, -5.0])
def test_gradgradcheck_scalar_p(device, p):
    u, _, m = _grad_inputs(device, seed=1)
    assert gradcheck(lambda u: log_power_mean(u, p, mask=m), (u,), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert gradgradcheck(lambda u: log_power_mean(u, p, mask=m), (u,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradcheck_in_the_weights():
    u, w, m = _grad_inputs("cpu", seed=2)
    w = w.requires_grad_()
    for p in (1.5, -0.4, 0.0):
        assert gradcheck(lambda u, w: log_power_mean(u, p, weights=w, mask=m), (u, w), eps=1e-6, atol=1e-7)


def test_gradgradcheck_in_the_weights():
    """Second derivatives in log_x, p and the weights together (learned weights, learned p)."""
    u, w, m = (t[1:3, :4].detach() for t in _grad_inputs("cpu", seed=6))  # a masked and a full row
    u, w = u.requires_grad_(), w.requires_grad_()
    for p in (1.5, -0.4, 0.0, 1e-4):
        assert gradgradcheck(lambda u, w: log_power_mean(u, p, weights=w, mask=m), (u, w), eps=1e-6, atol=1e-6, rtol=1e-4)
    p = torch.tensor([-1e-7, 2.0], dtype=D, requires_grad=True)
    assert gradcheck(lambda u, p, w: log_power_mean(u, p, weights=w, mask=m), (u, p, w), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert gradgradcheck(lambda u, p, w: log_power_mean(u, p, weights=w, mask=m), (u, p, w), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradcheck_power_mean():
    x = (torch.rand(3, 4, dtype=D, generator=torch.Generator().manual_seed(3)) + 0.2).requires_grad_()
    for p in (2.0, -1.0, 0.0, 1e-8):
        assert gradcheck(lambda x: power_mean(x, p), (x,), eps=1e-7, atol=1e-7)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fill", [math.nan, -math.inf, math.inf, 1e308])
@pytest.mark.parametrize("p", [1.0, -1.0, 0.0, 1e-7, -0.3, math.inf, -math.inf])
@pytest.mark.parametrize("check", [True, False])
def test_masked_padding_never_leaks(device, fill, p, check):
    u, w, m = _grad_inputs(device, seed=4)
    pt = torch.tensor(p, dtype=D, device=device, requires_grad=math.isfinite(p))
    clean = log_power_mean(u.detach(), pt.detach(), weights=w, mask=m)
    padded = u.detach().masked_fill(~m, fill).requires_grad_()
    val = log_power_mean(padded, pt, weights=w, mask=m, check=check)
    # A p that requires grad takes the log1p form on every row (see _fast_dlogdp), so
    # agreement is to the accuracy bound rather than bitwise.
    assert torch.allclose(val, clean, rtol=0, atol=64 * 2.0**-52 * 3)
    grads = torch.autograd.grad(val.sum(), [padded, pt] if pt.requires_grad else [padded])
    assert all(torch.isfinite(g).all() for g in grads)
    assert (grads[0][~m] == 0).all()


@pytest.mark.parametrize("p_as", P_AS)
@pytest.mark.parametrize("device", DEVICES)
def test_zeros(device, p_as):
    u = torch.tensor([[-math.inf, 0.0, 1.0], [0.5, 0.5, -math.inf]], dtype=D, device=device)
    on = functools.partial(_p_as, how=p_as, rows=2)
    for p in (-1.0, -1e-9, 0.0, -math.inf):
        ut = u.clone().requires_grad_()
        v = log_power_mean(ut, on(p))
        assert (v == -math.inf).all()
        (g,) = torch.autograd.grad(v.sum(), ut)
        assert (g == 0).all()
        assert (power_mean(u.exp(), on(p)) == 0).all()
    # p > 0: the zero contributes w * 0^p = 0 exactly.
    v = log_power_mean(u, on(2.0))
    assert abs(v[0].item() - 0.5 * math.log((1 + math.e**2) / 3)) < 1e-15
    # everything zero: 0 for every p
    allz = torch.full((2, 3), -math.inf, dtype=D, device=device)
    for p in (2.0, 1e-9, -1.0, 0.0, math.inf):
        assert (log_power_mean(allz, on(p)) == -math.inf).all()


def test_power_mean_gradient_at_a_zero_entry():
    """dM/dx_i = w_i x_i^(p-1) M^(1-p) at x_i = 0: inf (0<p<1), w_i (p=1), 0 (p>1 or p<=0)."""
    for p, expect in ((1.0, 1 / 3), (2.0, 0.0), (0.5, math.inf), (-1.0, 0.0), (0.0, 0.0)):
        x = torch.tensor([0.0, 1.0, 4.0], dtype=D, requires_grad=True)
        (g,) = torch.autograd.grad(power_mean(x, p), x)
        assert g[0].item() == expect, (p, g)
        assert torch.isfinite(g[1:]).all()
    # away from the zero, p = 1 gives w_i everywhere
    x = torch.tensor([0.0, 1.0, 4.0], dtype=D, requires_grad=True)
    (g,) = torch.autograd.grad(power_mean(x, 1.0), x)
    assert torch.allclose(g, torch.full((3,), 1 / 3, dtype=D), atol=1e-15)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", [1.0, 0.0, -1.0, 1e-7, math.inf])
def test_empty_row_is_nan_with_zero_gradient(device, p):
    u = torch.tensor([[1.0, 2.0], [math.nan, 3.0]], dtype=D, device=device, requires_grad=True)
    m = torch.tensor([[True, True], [False, False]], device=device)
    pt = torch.tensor(p, dtype=D, device=device, requires_grad=math.isfinite(p))
    v = log_power_mean(u, pt, mask=m)
    assert math.isfinite(v[0].item()) and math.isnan(v[1].item())
    grads = torch.autograd.grad(v[0] + 0 * v[1].nan_to_num(), [u, pt] if pt.requires_grad else [u],
                                retain_graph=True)
    assert all(torch.isfinite(g).all() for g in grads)
    (g_empty,) = torch.autograd.grad(v[1], u, allow_unused=True)
    assert (g_empty == 0).all()
    assert (mean_weights(u.detach(), p, mask=m)[1] == 0).all()
    assert dlog_power_mean_dp(u.detach(), p, mask=m)[1].item() == 0


def test_learnable_p_gradient_step_moves_p():
    """A p that requires grad gets d log M / dp = KL/p^2 >= 0: gradient ascent raises p."""
    u = torch.randn(8, 16, dtype=D, generator=torch.Generator().manual_seed(5))
    p = torch.tensor(-1.0, dtype=D, requires_grad=True)
    log_power_mean(u, p).sum().backward()
    assert p.grad.item() > 0


@pytest.mark.parametrize("p", [1000.0, -1000.0, 300.0])
@pytest.mark.parametrize("u", [[8.0, float(np.nextafter(8.0, 9.0))], [300.0, 300.0 + 1e-11, 300.0 - 3e-12]])
def test_tensor_p_gradient_exact_for_large_p_and_tiny_spread(u, p):
    """|p| spread below the series threshold with large |p|: the backward's log-normaliser
    must not be rebuilt as p (log M - m), which multiplies the value's rounding by p
    (seen: 4.4e-13 off at p = 1000). Bound: a few ulps of weights that are about 1/n."""
    ut = torch.tensor(u, dtype=torch.float64, requires_grad=True)
    pt = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    (gu,) = torch.autograd.grad(log_power_mean(ut, pt), [ut])
    pi_exact = torch.tensor(ref.mean_weights_rows(np.array(u), p))
    assert (gu - pi_exact).abs().max().item() <= 4 * 2.0**-52


# ------------------------------------------------------ mathematical properties


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


# -------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: power_mean(torch.tensor([1.0, -2.0]), 1.0), r"x: .*>= 0.*-2\.0.*\(1,\)"),
        (lambda: power_mean([1.0, math.nan], 1.0), r"x: .*nan"),
        (lambda: log_power_mean(torch.tensor([0.0, math.nan]), 1.0), r"log_x: NaN at unmasked index \(1,\)"),
        (lambda: log_power_mean(torch.tensor([0.0, math.inf]), -1.0), r"log_x: \+inf"),
        (lambda: log_power_mean(U, torch.tensor([1.0, math.nan])), r"p: NaN at index \(1,\)"),
        (lambda: log_power_mean(U, True), r"p: .*bool"),
        (lambda: log_power_mean(U, 1.0, weights=torch.tensor([1.0, -1.0, 1.0])), r"weights: .*non-negative.*-1\.0"),
        (lambda: log_power_mean(U, 1.0, weights=torch.tensor([0.0, 0.0, 0.0])), r"weights: all weights of a row are zero"),
        (lambda: log_power_mean(U, torch.ones(3)), r"p: shape \(3,\) does not broadcast to the reduced shape \(2,\)"),
        (lambda: dlog_power_mean_dp(U, 1.0, weights=-torch.ones(3)), r"weights"),
    ],
)
def test_bad_input_names_the_problem(call, match):
    """Bad values, weights and exponents raise a ValueError that names the problem."""
    with pytest.raises(ValueError, match=match):
        call()


def test_masked_bad_values_are_not_errors():
    u = torch.tensor([0.0, math.nan, math.inf])
    m = torch.tensor([True, False, False])
    assert log_power_mean(u, 1.0, mask=m).item() == 0.0
    assert power_mean(torch.tensor([1.0, -5.0]), 1.0, mask=torch.tensor([True, False])).item() == 1.0
    # negative weights where masked are ignored too
    w = torch.tensor([1.0, -1.0, 2.0])
    assert log_power_mean(u, 1.0, mask=m, weights=w).item() == 0.0


def test_check_false_skips_the_checks():
    """check=False does no validation (and no device sync): bad values are the caller's."""
    v = log_power_mean(torch.tensor([0.0, math.nan]), 1.0, check=False)
    assert math.isnan(v.item())
    log_power_mean(U, 1.0, weights=torch.tensor([1.0, -1.0, 1.0]), check=False)  # no raise
    log_power_mean(U, torch.tensor([1.0, math.nan]), check=False)


# ------------------------------------------------------------------ defects of issue 10


@pytest.mark.parametrize("p", SPECIAL_P)
def test_an_all_masked_row_with_weights_is_nan(p):
    """Issue 10, defect 1: an empty support is NaN with zero gradient, with weights too
    (the weighted p = 0 branch summed the zero weights to 0 and answered G = 1)."""
    assert math.isnan(geometric_mean(np.array([2.0, 3.0]), weights=np.array([1.0, 1.0]), mask=np.array([False, False])))
    u = torch.tensor([[2.0, 3.0], [0.5, -1.0]], dtype=D, requires_grad=True)
    w = torch.tensor([[1.0, 1.0], [2.0, 1.0]], dtype=D)
    m = torch.tensor([[False, False], [True, True]])
    v = log_power_mean(u, p, weights=w, mask=m)
    assert math.isnan(v[0].item()) and math.isfinite(v[1].item())
    (g,) = torch.autograd.grad(v, u, torch.ones(2, dtype=D))
    assert (g[0] == 0).all()


@pytest.mark.parametrize("p", SPECIAL_P)
def test_a_zero_length_row_is_nan_like_scipy(p):
    """Issue 10, defect 2: reducing a dimension of length 0 is an empty row: NaN of the
    reduced shape with zero gradient (it raised IndexError from amax for p != 0), as scipy's
    hmean/pmean/gmean answer (their test_empty)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if p == 0:
            peer = scipy.stats.gmean(np.zeros((2, 0)), axis=-1)
        elif math.isfinite(p):
            peer = scipy.stats.pmean(np.zeros((2, 0)), p, axis=-1)
        else:  # scipy has no +-inf mean; the max/min of nothing is undefined too
            peer = np.full(2, np.nan)
    assert np.isnan(peer).all() and peer.shape == (2,)
    assert np.isnan(power_mean(np.zeros(0), p))
    got = power_mean(np.zeros((2, 0)), p)
    assert got.shape == peer.shape and np.isnan(got).all()
    for p_in in (p, torch.tensor(p, dtype=D, requires_grad=True), torch.full((3,), p, dtype=D, requires_grad=True)):
        u = torch.zeros(3, 0, dtype=D, requires_grad=True)
        w = torch.ones(3, 0, dtype=D)
        for weights in (None, w):
            v = log_power_mean(u, p_in, weights=weights)
            assert v.shape == (3,) and torch.isnan(v).all()
            ins = [u] + ([p_in] if isinstance(p_in, torch.Tensor) else [])
            grads = torch.autograd.grad(v, ins, torch.ones(3, dtype=D))
            assert grads[0].shape == (3, 0)
            assert all((g == 0).all() for g in grads[1:])
        assert mean_weights(u.detach(), p).shape == (3, 0)
        assert (dlog_power_mean_dp(u.detach(), p) == 0).all()
    assert log_power_mean(torch.zeros(0, 4, dtype=D), p).shape == (0,)


@pytest.mark.parametrize("w_dtype", [None, np.float32, np.float64])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64])
def test_numpy_input_keeps_its_dtype_like_scipy(dtype, w_dtype):
    """Issue 10, defect 5: a float32 ndarray came back float64. NumPy input is answered in
    NumPy's result dtype of the values and the weights, as scipy.stats.pmean/gmean/hmean do
    (integers become float64); the computation itself runs in float64."""
    x = np.array([[1.0, 2.0, 4.0], [3.0, 5.0, 0.5]])
    w = None if w_dtype is None else np.array([1.0, 2.0, 1.0], dtype=w_dtype)
    xs = x.astype(dtype)
    for ours, peer in ((power_mean(xs, 1.42, weights=w), scipy.stats.pmean(xs, 1.42, axis=-1, weights=w)),
                       (geometric_mean(xs, weights=w), scipy.stats.gmean(xs, axis=-1, weights=w)),
                       (power_mean(xs, -1.0, weights=w), scipy.stats.hmean(xs, axis=-1, weights=w))):
        assert isinstance(ours, np.ndarray) and ours.dtype == peer.dtype, (ours.dtype, peer.dtype)
        # computed in float64 and rounded once: within half an ulp of the answer's dtype plus
        # the float64 error
        exact = np.asarray(ours, dtype=np.float64)
        assert np.allclose(exact, peer.astype(np.float64), rtol=4 * np.finfo(peer.dtype).eps, atol=0)
    lx = np.log(x).astype(dtype) if dtype != np.int64 else np.log(x).astype(np.float64)
    assert log_power_mean(lx, 0.5).dtype == lx.dtype
    assert mean_weights(lx, 0.5).dtype == lx.dtype
    assert dlog_power_mean_dp(lx, 0.5).dtype == lx.dtype
    # a single row answers a 0-d array of that dtype
    assert power_mean(x[0].astype(dtype), 2.0).dtype == scipy.stats.pmean(x[0].astype(dtype), 2.0).dtype


# --------------------------------------------------------- defects found by test_paths.py


@pytest.mark.parametrize("p", [-1.0, -1e-9, 0.0, -math.inf])
@pytest.mark.parametrize("weighted", [False, True])
def test_double_backward_ready_gradient_of_a_zero_row_is_zero(p, weighted):
    """A row that is 0 because of a zero (p <= 0) has zero gradient in log_x, also when the
    backward builds a graph (create_graph=True); it returned mean_weights' limit there (all
    mass on the zeros, or w at p = 0)."""
    u = torch.tensor([[-math.inf, 0.3, -1.2], [0.5, 1.0, -0.2]], dtype=D, requires_grad=True)
    w = torch.tensor([[1.0, 2.0, 0.5], [1.0, 1.0, 3.0]], dtype=D) if weighted else None
    for p_in in (p, torch.full((2,), p, dtype=D)):
        v = log_power_mean(u, p_in, weights=w)
        (g_first,) = torch.autograd.grad(v, u, torch.ones(2, dtype=D), retain_graph=True)
        (g_graph,) = torch.autograd.grad(v, u, torch.ones(2, dtype=D), create_graph=True)
        assert (g_first[0] == 0).all() and (g_graph[0] == 0).all()
        assert torch.allclose(g_first[1], g_graph[1], rtol=0, atol=1e-15)


def test_p_gradient_of_a_row_with_a_zero_counts_the_zero():
    """d log M / dp = KL(pi || w) / p^2 with pi = 0 on a zero entry: its term w_0 phi(-inf)
    = w_0 belongs to the sum (0.3049 at p = 2, not 0.2549), by the first-order backward too."""
    u = torch.tensor([-math.inf, 0.3, -1.2, 2.0, 0.7], dtype=D, requires_grad=True)
    for p in (2.0, 0.3, 1e-3):
        exact = mpmath.diff(lambda q: mpmath.log(mpmath.fsum(mpmath.exp(q * mpmath.mpf(v)) for v in u.tolist()
                                                            if math.isfinite(v)) / 5) / q, mpmath.mpf(p))
        pt = torch.tensor(p, dtype=D, requires_grad=True)
        (gp,) = torch.autograd.grad(log_power_mean(u, pt), pt)
        assert abs(gp.item() - float(exact)) <= 1e-7 * abs(float(exact)), (p, gp.item(), float(exact))
        assert abs(dlog_power_mean_dp(u.detach(), p).item() - float(exact)) <= 1e-7 * abs(float(exact))


@pytest.mark.parametrize("p", [1e-300, -1e-300, 1e-50])
def test_a_python_p_acts_as_its_value_in_the_compute_dtype(p):
    """float32 input with a Python p that float32 rounds to 0 (1e-300): p = 0 there, so a
    zero gives log M = -inf (the float32 value of log(3/4)/1e-300 too); it gave NaN."""
    u = torch.tensor([[-math.inf, 0.3, -1.2, 2.0], [0.1, 0.3, -1.2, 2.0]], dtype=torch.float32, requires_grad=True)
    v = log_power_mean(u, p)
    assert v[0].item() == -math.inf
    assert v[1].item() == log_power_mean(u[1].detach(), 0.0).item()
    (g,) = torch.autograd.grad(v, u, torch.ones(2))
    assert torch.isfinite(g).all() and (g[0] == 0).all()

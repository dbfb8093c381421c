"""gradcheck / gradgradcheck, padding that must not leak, zeros and empty rows."""

from __future__ import annotations

import math

import numpy as np

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from meantheory import dlog_power_mean_dp, log_power_mean, mean_weights, power_mean, reference
from tests.meantheory.mt_helpers import DEVICES

D = torch.float64


def _inputs(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(4, 5, generator=g, dtype=D).to(device).requires_grad_()
    w = (torch.rand(4, 5, generator=g, dtype=D) + 0.1).to(device)
    m = torch.tensor([[True] * 5, [True, False, True, True, False], [False, True, True, True, True],
                      [True, True, False, True, True]], device=device)
    return u, w, m


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ps", [[0.7, -1.3, 1e-7, -2e-9], [0.0, 3.0, -0.2, 1e-300], [1e-6, -1e-6, 0.49, -0.51]])
def test_gradcheck_and_gradgradcheck(device, ps):
    u, w, m = _inputs(device)
    p = torch.tensor(ps, dtype=D, device=device, requires_grad=True)

    def f(u, p):
        return log_power_mean(u, p, weights=w, mask=m)

    assert gradcheck(f, (u, p), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert gradgradcheck(f, (u, p), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", [1.0, -1.0, 0.0, 1e-7, 0.3, -5.0])
def test_gradgradcheck_scalar_p(device, p):
    u, _, m = _inputs(device, seed=1)
    assert gradcheck(lambda u: log_power_mean(u, p, mask=m), (u,), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert gradgradcheck(lambda u: log_power_mean(u, p, mask=m), (u,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradcheck_in_the_weights():
    u, w, m = _inputs("cpu", seed=2)
    w = w.requires_grad_()
    for p in (1.5, -0.4, 0.0):
        assert gradcheck(lambda u, w: log_power_mean(u, p, weights=w, mask=m), (u, w), eps=1e-6, atol=1e-7)


def test_gradcheck_power_mean():
    x = (torch.rand(3, 4, dtype=D, generator=torch.Generator().manual_seed(3)) + 0.2).requires_grad_()
    for p in (2.0, -1.0, 0.0, 1e-8):
        assert gradcheck(lambda x: power_mean(x, p), (x,), eps=1e-7, atol=1e-7)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fill", [math.nan, -math.inf, math.inf, 1e308])
@pytest.mark.parametrize("p", [1.0, -1.0, 0.0, 1e-7, -0.3, math.inf, -math.inf])
@pytest.mark.parametrize("check", [True, False])
def test_masked_padding_never_leaks(device, fill, p, check):
    u, w, m = _inputs(device, seed=4)
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


@pytest.mark.parametrize("device", DEVICES)
def test_zeros(device):
    u = torch.tensor([[-math.inf, 0.0, 1.0], [0.5, 0.5, -math.inf]], dtype=D, device=device)
    for p in (-1.0, -1e-9, 0.0, -math.inf):
        ut = u.clone().requires_grad_()
        v = log_power_mean(ut, p)
        assert (v == -math.inf).all()
        (g,) = torch.autograd.grad(v.sum(), ut)
        assert (g == 0).all()
        assert (power_mean(u.exp(), p) == 0).all()
    # p > 0: the zero contributes w * 0^p = 0 exactly.
    v = log_power_mean(u, 2.0)
    assert abs(v[0].item() - 0.5 * math.log((1 + math.e**2) / 3)) < 1e-15
    # everything zero: 0 for every p
    allz = torch.full((1, 3), -math.inf, dtype=D, device=device)
    for p in (2.0, 1e-9, -1.0, 0.0, math.inf):
        assert log_power_mean(allz, p).item() == -math.inf


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
    ref = torch.tensor(reference.mean_weights_rows(np.array(u), p))
    assert (gu - ref).abs().max().item() <= 4 * 2.0**-52

"""The research options of rl.losses: fast power-mean path accuracy, RMI, multi-scale means,
adaptive p, learnable p (theorem 13), bias-corrected clipping.

Accuracy is measured against mpmath (meantheory.reference, 60 digits) or hand formulas in
float64; tolerances are stated where they are used.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from meantheory import reference
from rl.losses import (
    ADAPTIVE_THRESHOLDS,
    LearnablePowerMean,
    multiscale_log_ratio,
    policy_loss,
    power_log_ratio,
    rmi_log_ratio,
)

F64 = torch.float64
NAN = float("nan")


def t64(rows, pad=NAN, dtype=F64):
    T = max(len(r) for r in rows)
    x = torch.full((len(rows), T), pad, dtype=dtype)
    m = torch.zeros(len(rows), T, dtype=torch.bool)
    for i, r in enumerate(rows):
        x[i, : len(r)] = torch.tensor(r, dtype=dtype)
        m[i, : len(r)] = True
    return x, m


# --------------------------------------------------------------------------- sequence ratio accuracy
# power_log_ratio is meantheory's log_power_mean (p != 0) or the masked mean (p == 0), each
# held to mpmath here as the loss calls it.

ACCURACY_PS = [-300.0, -7.0, -1.0, -0.3, -1e-6, -1e-15, 0.0, 1e-15, 1e-6, 0.3, 1.0, 7.0, 300.0]


@pytest.mark.parametrize("scale", [1e-6, 1e-2, 1.0, 30.0])
def test_power_log_ratio_matches_mpmath_float64(scale):
    g = torch.Generator().manual_seed(11)
    l = scale * torch.randn(5, 9, generator=g, dtype=F64) + 0.5
    mask = torch.rand(5, 9, generator=g) < 0.8
    mask[:, 0] = True
    lm = torch.where(mask, l, NAN)
    # Both routes to the weights: meantheory.mean_weights (no graph) and the backward of
    # log_s (l requires grad).
    for p, lx in itertools.product(ACCURACY_PS, (lm, lm.clone().requires_grad_())):
        log_s, pi = power_log_ratio(lx, mask, p, check=False)
        ref = reference.log_power_mean_rows(l.numpy(), p, mask=mask.numpy())
        ref_w = reference.mean_weights_rows(l.numpy(), p, mask=mask.numpy())
        # Bound: a few ulps of the largest magnitude involved (max |l|, at least 1).
        tol = 16 * np.finfo(np.float64).eps * max(1.0, float(l.abs().max()))
        np.testing.assert_allclose(log_s.detach().numpy(), ref, rtol=0, atol=tol)
        np.testing.assert_allclose(pi.numpy(), ref_w, rtol=0, atol=16 * np.finfo(np.float64).eps)


@pytest.mark.parametrize("p", [-2.0, -1.0, 0.0, 1e-3, 1.0, 4.0])
def test_power_log_ratio_float32_value_gradient_and_weights(p):
    g = torch.Generator().manual_seed(12)
    l = 0.3 * torch.randn(6, 40, generator=g)
    mask = torch.rand(6, 40, generator=g) < 0.6
    mask[:, 0] = True
    lr = torch.where(mask, l, NAN).requires_grad_()  # padding holds NaN and must not leak
    log_s, pi = power_log_ratio(lr, mask, p, check=False)
    ref = reference.log_power_mean_rows(l.double().numpy(), p, mask=mask.numpy())
    ref_w = reference.mean_weights_rows(l.double().numpy(), p, mask=mask.numpy())
    # float32: within 4 ulps of max(1, max|l|).
    np.testing.assert_allclose(log_s.double().detach().numpy(), ref, rtol=0, atol=4 * 2**-23 * max(1.0, float(l.abs().max())))
    log_s.sum().backward()
    # The gradient is softmax(p l): its exponents p (l - m) carry |p| spread 2^-24 absolute
    # error (a relative error of each exponential), the sum and division a few ulps more.
    spread = float(l[mask].max() - l[mask].min())
    rtol = (8 + 2 * abs(p) * spread) * 2**-24
    for got in (lr.grad, pi):
        np.testing.assert_allclose(got.double().numpy(), ref_w, rtol=rtol, atol=0)
    assert (lr.grad[~mask] == 0).all() and (pi[~mask] == 0).all()


def test_per_row_tensor_p_including_zero_and_learnable_path_agree():
    g = torch.Generator().manual_seed(13)
    l = 0.5 * torch.randn(6, 7, generator=g, dtype=F64)
    mask = torch.rand(6, 7, generator=g) < 0.8
    mask[:, 0] = True
    ps = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0], dtype=F64)
    fast, w_fast = power_log_ratio(l, mask, ps)
    slow, w_slow = power_log_ratio(l, mask, ps.clone().requires_grad_())  # meantheory path
    ref = reference.log_power_mean_rows(l.numpy(), ps.numpy(), mask=mask.numpy())
    np.testing.assert_allclose(fast.numpy(), ref, rtol=0, atol=1e-14)
    np.testing.assert_allclose(slow.detach().numpy(), ref, rtol=0, atol=1e-14)
    torch.testing.assert_close(w_fast, w_slow, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------- RMI


def rmi_by_hand(ls: list[float], steps: int) -> float:
    r = [math.exp(x) for x in ls]
    a = sum(r) / len(r)
    h = len(r) / sum(1 / x for x in r)
    for _ in range(steps):
        a, h = (a + h) / 2, 2 * a * h / (a + h)
    return math.log(a)


@pytest.mark.parametrize("steps", [0, 1, 2, 5])
def test_rmi_matches_the_seed_iteration(steps):
    rows = [[0.1, -0.3, 0.5], [0.0, 0.0, math.log(4.0)], [0.2], [-1.0, 2.0]]
    l, mask = t64(rows)
    log_s, _ = rmi_log_ratio(l, mask, steps)
    for i, r in enumerate(rows):
        assert log_s[i].item() == pytest.approx(rmi_by_hand(r, steps), rel=1e-13, abs=1e-15)


def test_rmi_converges_to_sqrt_ah_not_to_the_geometric_mean():
    l, mask = t64([[0.0, 0.0, math.log(4.0)]])  # ratios (1, 1, 4)
    log_s, _ = rmi_log_ratio(l, mask, 8)
    sqrt_ah = math.sqrt(2.0 * (3 / (1 + 1 + 0.25)))  # sqrt(A H) = sqrt(2 * 4/3) = 1.633
    assert math.exp(log_s.item()) == pytest.approx(sqrt_ah, rel=1e-14)
    assert abs(math.exp(log_s.item()) - 4 ** (1 / 3)) > 0.04  # G = 1.587


def test_rmi_weights_are_its_gradient_and_policy_loss_uses_it():
    g = torch.Generator().manual_seed(14)
    l = 0.4 * torch.randn(4, 6, generator=g, dtype=F64)
    mask = torch.rand(4, 6, generator=g) < 0.8
    mask[:, 0] = True
    lr = l.clone().requires_grad_()
    log_s, pi = rmi_log_ratio(lr, mask, 3)
    (grad,) = torch.autograd.grad(log_s.sum(), lr)
    torch.testing.assert_close(grad, pi, rtol=1e-12, atol=1e-15)
    adv = torch.tensor([1.0, -1.0, 0.5, 2.0], dtype=F64)
    loss, m = policy_loss(l, torch.zeros_like(l), adv, mask, mean="rmi", rmi_steps=3, eps_low=1.0, eps_high=math.inf)
    assert loss.item() == pytest.approx(float((-adv * log_s.detach().exp()).mean()), rel=1e-12)
    assert "p" not in m


# --------------------------------------------------------------------------- multi-scale


def test_multiscale_closed_form_with_a_partial_chunk():
    row = [0.1, -0.3, 0.5, 0.2, -0.4]
    l, mask = t64([row])
    log_s, _ = multiscale_log_ratio(l, mask, 1.0, chunk_size=2, chunk_p=-1.0)
    h = lambda xs: len(xs) / sum(math.exp(-x) for x in xs)  # noqa: E731 - harmonic mean of ratios
    # Chunks (2, 2, 1 tokens) reduced harmonically, then the arithmetic mean weighted by token counts.
    by_hand = (2 * h(row[0:2]) + 2 * h(row[2:4]) + 1 * h(row[4:5])) / 5
    assert log_s.item() == pytest.approx(math.log(by_hand), rel=1e-13)


def test_multiscale_reductions_to_plain_means():
    g = torch.Generator().manual_seed(15)
    l = 0.5 * torch.randn(5, 11, generator=g, dtype=F64)
    mask = torch.rand(5, 11, generator=g) < 0.7
    mask[:, 0] = True
    for p in (-1.0, 0.5, 2.0):
        plain, _ = power_log_ratio(l, mask, p)
        one, _ = multiscale_log_ratio(l, mask, p, chunk_size=1, chunk_p=-3.0)  # chunks of one token
        torch.testing.assert_close(one, plain, rtol=1e-13, atol=1e-15)
    geo, _ = power_log_ratio(l, mask, 0.0)
    for k in (2, 3, 4):
        ms, _ = multiscale_log_ratio(l, mask, 0.0, chunk_size=k, chunk_p=0.0)
        torch.testing.assert_close(ms, geo, rtol=1e-13, atol=1e-15)


def test_multiscale_weights_are_its_gradient_and_outer_p_learns():
    g = torch.Generator().manual_seed(16)
    l = 0.5 * torch.randn(3, 10, generator=g, dtype=F64)
    mask = torch.rand(3, 10, generator=g) < 0.8
    mask[:, 0] = True
    lr = l.clone().requires_grad_()
    p = torch.tensor(1.0, dtype=F64, requires_grad=True)
    log_s, pi = multiscale_log_ratio(lr, mask, p, chunk_size=3, chunk_p=-1.0)
    grad_l, grad_p = torch.autograd.grad(log_s.sum(), (lr, p))
    torch.testing.assert_close(grad_l, pi, rtol=1e-12, atol=1e-15)
    assert grad_p.item() > 0  # log M_p increases with p


# --------------------------------------------------------------------------- adaptive


def spread_by_hand(rows):
    sds = []
    for r in rows:
        mu = sum(r) / len(r)
        sds.append(math.sqrt(sum((x - mu) ** 2 for x in r) / len(r)))
    return sum(sds) / len(sds)


@pytest.mark.parametrize("half_width, expected_p", [(0.02, 1.0), (0.2, 0.0), (0.6, -1.0)])
def test_adaptive_spread_thresholds_choose_p(half_width, expected_p):
    rows = [[half_width, -half_width, 0.1], [-half_width, half_width]]
    l, mask = t64(rows)
    adv = torch.tensor([1.0, -1.0], dtype=F64)
    loss, m = policy_loss(l, torch.zeros_like(l), adv, mask, mean="adaptive")
    sigma = spread_by_hand(rows)
    lo, hi = ADAPTIVE_THRESHOLDS["spread"]
    assert m["adaptive_signal"] == pytest.approx(sigma, rel=1e-12)
    assert (sigma < lo) == (expected_p == 1.0) and (sigma > hi) == (expected_p == -1.0)
    assert m["p"] == expected_p
    fixed, _ = policy_loss(l, torch.zeros_like(l), adv, mask, p=expected_p)
    assert loss.item() == pytest.approx(fixed.item(), rel=1e-14)


def test_adaptive_clip_and_ess_signals():
    l, mask = t64([[0.5, 0.5], [0.0, 0.01], [-0.5], [0.02]])
    adv = torch.tensor([1.0, 1.0, -1.0, 1.0], dtype=F64)
    # GSPO would clip rows 0 (A > 0, s = e^0.5) and 2 (A < 0, s = e^-0.5): half the batch.
    _, m = policy_loss(l, torch.zeros_like(l), adv, mask, mean="adaptive", adaptive_signal="clip")
    assert m["adaptive_signal"] == pytest.approx(0.5) and m["p"] == -1.0
    _, m = policy_loss(l, torch.zeros_like(l), adv, mask, mean="adaptive", adaptive_signal="clip",
                       adaptive_thresholds=(0.6, 0.9))
    assert m["p"] == 1.0
    # ESS of ratios (1, e^0.01): 1 - (1 + e)^2 / (2 (1 + e^2)) per row, rows of equal ratios give 0.
    e = math.exp(0.01)
    _, m = policy_loss(l, torch.zeros_like(l), adv, mask, mean="adaptive", adaptive_signal="ess")
    assert m["adaptive_signal"] == pytest.approx((1 - (1 + e) ** 2 / (2 * (1 + e * e))) / 4, rel=1e-9)
    assert m["p"] == 1.0


def test_adaptive_bad_options():
    l, mask = t64([[0.1, 0.2]])
    a = torch.ones(1, dtype=F64)
    with pytest.raises(ValueError, match="adaptive_signal"):
        policy_loss(l, l, a, mask, mean="adaptive", adaptive_signal="entropy")
    with pytest.raises(ValueError, match="adaptive_thresholds"):
        policy_loss(l, l, a, mask, mean="adaptive", adaptive_thresholds=(0.5, 0.1))
    with pytest.raises(ValueError, match="leave p at 0"):
        policy_loss(l, l, a, mask, mean="adaptive", p=1.0)


# --------------------------------------------------------------------------- learnable p


def dlogm_dp_by_hand(ls: list[float], p: float) -> float:
    """Theorem 13: d log M_p / dp = KL(softmax(p l) || uniform) / p^2; Var(l)/2 at p = 0."""
    n = len(ls)
    if p == 0:
        mu = sum(ls) / n
        return sum((x - mu) ** 2 for x in ls) / n / 2
    zs = [p * x for x in ls]
    mz = max(zs)
    ws = [math.exp(z - mz) for z in zs]
    tot = sum(ws)
    pis = [w / tot for w in ws]
    return sum(q * math.log(n * q) for q in pis if q > 0) / p**2


def power_mean_by_hand(ls, p):
    if p == 0:
        return math.exp(sum(ls) / len(ls))
    return (sum(math.exp(p * x) for x in ls) / len(ls)) ** (1 / p)


def test_learnable_p_gradient_is_theorem_13():
    rows = [[0.1, -0.3, 0.5], [0.2, -0.1], [0.4, 0.0, -0.2, 0.3], [0.05]]
    l, mask = t64(rows)
    adv = torch.tensor([1.0, -2.0, 0.5, 1.0], dtype=F64)
    ps = torch.tensor([-1.0, 0.0, 1.5, 2.0], dtype=F64, requires_grad=True)
    loss, _ = policy_loss(l, torch.zeros_like(l), adv, mask, p=ps, eps_low=1.0, eps_high=math.inf)
    loss.backward()
    B = len(rows)
    for i, r in enumerate(rows):
        p = ps[i].item()
        # d loss / d p_i = -(1/B) A_i ds/dp, ds/dp = s d log M_p / dp.
        expected = -adv[i].item() * power_mean_by_hand(r, p) * dlogm_dp_by_hand(r, p) / B
        assert ps.grad[i].item() == pytest.approx(expected, rel=1e-10, abs=1e-15)
    # Signs: a positive advantage pushes p up (negative loss gradient), a negative one down;
    # a one-token sequence does not depend on p at all.
    assert ps.grad[0] < 0 and ps.grad[1] > 0 and ps.grad[2] < 0 and ps.grad[3] == 0


def test_learnable_p_gets_no_gradient_from_clipped_sequences():
    l, mask = t64([[0.5, 0.1], [-0.5, -0.2]])
    ps = torch.tensor([1.0, -1.0], dtype=F64, requires_grad=True)
    loss, m = policy_loss(l, torch.zeros_like(l), torch.tensor([1.0, -1.0], dtype=F64), mask, p=ps, eps_low=0.1)
    loss.backward()
    assert m["clip_frac"] == 1.0 and (ps.grad == 0).all()


def test_learnable_power_mean_module_range_buckets_and_chain_rule():
    mod = LearnablePowerMean(-1.0, p_min=-2.0, p_max=2.0, length_buckets=[3, 5])
    assert torch.allclose(mod.p, torch.full((3,), -1.0))
    mask = torch.zeros(4, 6, dtype=torch.bool)
    for i, n in enumerate([1, 3, 4, 6]):
        mask[i, :n] = True
    # Buckets: n < 3 -> 0, 3 <= n < 5 -> 1, n >= 5 -> 2.
    with torch.no_grad():
        mod.theta.copy_(torch.tensor([-1.0, 0.0, 1.0]))
    expected = [-2 + 4 * torch.sigmoid(torch.tensor(v)).item() for v in (-1.0, 0.0, 0.0, 1.0)]
    assert mod(mask).tolist() == pytest.approx(expected, rel=1e-6)
    with torch.no_grad():
        mod.theta.fill_(80.0)
    assert (mod.p < 2.0 + 1e-6).all() and (mod.p > -2.0).all()
    # Chain rule through the module: dL/dtheta_b = sum over rows in bucket b of dL/dp_i * dp/dtheta_b.
    mod = LearnablePowerMean(0.5, length_buckets=[3, 5])
    g = torch.Generator().manual_seed(17)
    l = torch.where(mask, 0.3 * torch.randn(4, 6, generator=g), torch.zeros(4, 6))
    adv = torch.tensor([1.0, -1.0, 2.0, 0.5])
    loss, m = policy_loss(l, torch.zeros_like(l), adv, mask, p=mod, eps_low=1.0, eps_high=math.inf)
    loss.backward()
    p_rows = mod(mask).detach().clone().requires_grad_()
    loss2, _ = policy_loss(l, torch.zeros_like(l), adv, mask, p=p_rows, eps_low=1.0, eps_high=math.inf)
    loss2.backward()
    sig = torch.sigmoid(mod.theta.detach())
    dp_dtheta = 4.0 * sig * (1 - sig)
    bucket = torch.tensor([0, 1, 1, 2])
    expected_theta = torch.zeros(3).index_add_(0, bucket, p_rows.grad) * dp_dtheta
    torch.testing.assert_close(mod.theta.grad, expected_theta, rtol=1e-5, atol=1e-9)
    assert m["p"] == pytest.approx(0.5, rel=1e-6)


def test_learnable_power_mean_bad_input():
    with pytest.raises(ValueError, match="p_init"):
        LearnablePowerMean(2.0)
    with pytest.raises(ValueError, match="p_min"):
        LearnablePowerMean(0.0, p_min=1.0, p_max=-1.0)
    with pytest.raises(ValueError, match="length_buckets"):
        LearnablePowerMean(0.0, length_buckets=[5, 3])
    with pytest.raises(ValueError, match="mask"):
        LearnablePowerMean(0.0, length_buckets=[5])()


# --------------------------------------------------------------------------- bias-corrected window


def test_bias_corrected_window_shifts_by_p_var_over_2():
    # Harmonic ratio of a wide sequence falls about Var/2 below its geometric one (e^0 = 1 here).
    row = [0.3, -0.3]
    l, mask = t64([row])
    adv = torch.tensor([-1.0], dtype=F64)
    h = power_mean_by_hand(row, -1.0)
    var = 0.09
    assert h < 0.97  # H = 1/cosh(0.3) = 0.957, below the plain window [0.97, 1.03] -> clipped low for A < 0
    lp = l.clone().requires_grad_()
    plain, m_plain = policy_loss(lp, torch.zeros_like(l), adv, mask, p=-1.0, eps_low=0.03)
    assert m_plain["clip_frac_low"] == 1.0 and plain.item() == pytest.approx(0.97, rel=1e-12)
    lp = l.clone().requires_grad_()
    corr, m_corr = policy_loss(lp, torch.zeros_like(l), adv, mask, p=-1.0, eps_low=0.03, clip_center="bias-corrected")
    # Window centred on exp(-Var/2): [0.97, 1.03] * exp(-0.045); H lies inside it.
    assert 0.97 * math.exp(-var / 2) < h < 1.03 * math.exp(-var / 2)
    assert m_corr["clip_frac_low"] == 0.0 and corr.item() == pytest.approx(h, rel=1e-12)
    corr.backward()
    assert (lp.grad[mask] != 0).all()
    # p = 0: the shift is 0 and the window is the plain one.
    a0, _ = policy_loss(l, torch.zeros_like(l), adv, mask, p=0.0, eps_low=0.03, clip_center="bias-corrected")
    b0, _ = policy_loss(l, torch.zeros_like(l), adv, mask, p=0.0, eps_low=0.03)
    assert a0.item() == b0.item()


@given(
    rows=st.lists(st.lists(st.floats(-0.05, 0.05), min_size=2, max_size=6), min_size=1, max_size=4),
    p=st.sampled_from([-2.0, -1.0, 1.0, 2.0]),
)
def test_bias_corrected_centre_tracks_the_small_spread_expansion(rows, p):
    """For small spread, log s_p - p Var/2 is the geometric log-ratio to O(spread^3)."""
    l, mask = t64(rows)
    log_s, _ = power_log_ratio(l, mask, p)
    for i, r in enumerate(rows):
        mu = sum(r) / len(r)
        var = sum((x - mu) ** 2 for x in r) / len(r)
        spread = max(r) - min(r)
        assert abs(log_s[i].item() - p * var / 2 - mu) <= abs(p) ** 2 * spread**3 / 6 + 1e-15

"""The sequence log-ratios of rl/losses/means.py: accuracy against mpmath, RMI, multi-scale means, order in p,
continuity through p = 0 (HolderPO schedules) against HolderPO's own formula."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from meantheory import reference
from rl.losses import multiscale_log_ratio, policy_loss, power_log_ratio, rmi_log_ratio
from tests.rl.losses.loss_helpers import F64, NAN, ragged_log_ratios, rows_strategy, t64


ACCURACY_PS = [-300.0, -7.0, -1.0, -0.3, -1e-6, -1e-15, 0.0, 1e-15, 1e-6, 0.3, 1.0, 7.0, 300.0]


@pytest.mark.parametrize("scale", [1e-6, 1e-2, 1.0, 30.0])
def test_power_log_ratio_matches_mpmath_float64(scale):
    l, mask = ragged_log_ratios(11, 5, 9, scale, shift=0.5)
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
    l, mask = ragged_log_ratios(12, 6, 40, 0.3, keep=0.6, dtype=torch.float32)
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
    l, mask = ragged_log_ratios(13, 6, 7, 0.5)
    ps = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0], dtype=F64)
    fast, w_fast = power_log_ratio(l, mask, ps)
    slow, w_slow = power_log_ratio(l, mask, ps.clone().requires_grad_())  # meantheory path
    ref = reference.log_power_mean_rows(l.numpy(), ps.numpy(), mask=mask.numpy())
    np.testing.assert_allclose(fast.numpy(), ref, rtol=0, atol=1e-14)
    np.testing.assert_allclose(slow.detach().numpy(), ref, rtol=0, atol=1e-14)
    torch.testing.assert_close(w_fast, w_slow, rtol=0, atol=1e-15)


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
    l, mask = ragged_log_ratios(14, 4, 6, 0.4)
    lr = l.clone().requires_grad_()
    log_s, pi = rmi_log_ratio(lr, mask, 3)
    (grad,) = torch.autograd.grad(log_s.sum(), lr)
    torch.testing.assert_close(grad, pi, rtol=1e-12, atol=1e-15)
    adv = torch.tensor([1.0, -1.0, 0.5, 2.0], dtype=F64)
    loss, m = policy_loss(l, torch.zeros_like(l), adv, mask, mean="rmi", rmi_steps=3, eps_low=1.0, eps_high=math.inf)
    assert loss.item() == pytest.approx(float((-adv * log_s.detach().exp()).mean()), rel=1e-12)
    assert "p" not in m


def test_multiscale_closed_form_with_a_partial_chunk():
    row = [0.1, -0.3, 0.5, 0.2, -0.4]
    l, mask = t64([row])
    log_s, _ = multiscale_log_ratio(l, mask, 1.0, chunk_size=2, chunk_p=-1.0)
    h = lambda xs: len(xs) / sum(math.exp(-x) for x in xs)  # noqa: E731 - harmonic mean of ratios
    # Chunks (2, 2, 1 tokens) reduced harmonically, then the arithmetic mean weighted by token counts.
    by_hand = (2 * h(row[0:2]) + 2 * h(row[2:4]) + 1 * h(row[4:5])) / 5
    assert log_s.item() == pytest.approx(math.log(by_hand), rel=1e-13)


def test_multiscale_reductions_to_plain_means():
    l, mask = ragged_log_ratios(15, 5, 11, 0.5, keep=0.7)
    for p in (-1.0, 0.5, 2.0):
        plain, _ = power_log_ratio(l, mask, p)
        one, _ = multiscale_log_ratio(l, mask, p, chunk_size=1, chunk_p=-3.0)  # chunks of one token
        torch.testing.assert_close(one, plain, rtol=1e-13, atol=1e-15)
    geo, _ = power_log_ratio(l, mask, 0.0)
    for k in (2, 3, 4):
        ms, _ = multiscale_log_ratio(l, mask, 0.0, chunk_size=k, chunk_p=0.0)
        torch.testing.assert_close(ms, geo, rtol=1e-13, atol=1e-15)


def test_multiscale_weights_are_its_gradient_and_outer_p_learns():
    l, mask = ragged_log_ratios(16, 3, 10, 0.5)
    lr = l.clone().requires_grad_()
    p = torch.tensor(1.0, dtype=F64, requires_grad=True)
    log_s, pi = multiscale_log_ratio(lr, mask, p, chunk_size=3, chunk_p=-1.0)
    grad_l, grad_p = torch.autograd.grad(log_s.sum(), (lr, p))
    torch.testing.assert_close(grad_l, pi, rtol=1e-12, atol=1e-15)
    assert grad_p.item() > 0  # log M_p increases with p


@given(rows=rows_strategy, ps=st.lists(st.floats(-6.0, 6.0, allow_nan=False), min_size=2, max_size=2))
def test_sequence_ratio_ordered_in_p(rows, ps):
    from rl.losses import sequence_log_ratio

    l, mask = t64(rows)
    p1, p2 = sorted(ps)
    s1, *_ = sequence_log_ratio(l, mask, p1)
    s2, *_ = sequence_log_ratio(l, mask, p2)
    assert (s1 <= s2 + 1e-12 * (1 + s2.abs())).all()


def test_geometric_mean_from_the_callers_row_sums_matches_mpmath():
    # The loss hands power_log_ratio the masked row sums it already holds: the same value and
    # gradient as the mean computed from l, and both within a few ulps of the oracle.
    l, mask = ragged_log_ratios(18, 5, 9, 0.7, keep=0.7, shift=-0.2)
    ref = reference.log_power_mean_rows(l.numpy(), 0.0, mask=mask.numpy())
    out = []
    for with_sums in (False, True):
        lr = torch.where(mask, l, NAN).requires_grad_()
        row_sum = torch.where(mask, lr, 0.0).sum(-1) if with_sums else None
        log_s, pi = power_log_ratio(lr, mask, 0.0, row_sum=row_sum)
        (grad,) = torch.autograd.grad(log_s.sum(), lr)
        np.testing.assert_allclose(log_s.detach().numpy(), ref, rtol=0, atol=16 * np.finfo(np.float64).eps)
        out.append((log_s.detach(), grad, pi))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1]) and torch.equal(out[0][2], out[1][2])


@pytest.mark.parametrize("p", [1.0, 0.0, -1.0, math.inf, -math.inf, torch.tensor([0.5, -2.0], dtype=F64)])
def test_zero_length_rows_give_zero_with_zero_gradient(p):
    lr = torch.zeros(2, 0, dtype=F64, requires_grad=True)
    mask = torch.zeros(2, 0, dtype=torch.bool)
    for fn in (lambda: power_log_ratio(lr, mask, p), lambda: multiscale_log_ratio(lr, mask, p, chunk_size=2),
               lambda: rmi_log_ratio(lr, mask, 3)):
        log_s, pi = fn()
        assert log_s.tolist() == [0.0, 0.0] and pi.shape == (2, 0)
        (grad,) = torch.autograd.grad(log_s.sum(), lr)
        assert grad.shape == (2, 0)


# --------------------------------------------------------------------------- p changing between calls
# HolderPO (Chen et al., arXiv:2605.12058) anneals p through 0 during training. The loss must be
# continuous there in value and gradient, for a Python float p (p == 0 takes GSPO's masked mean,
# p != 0 meantheory) and for a 0-d tensor p a trainer updates in place.


def _holder_batch(dtype):
    g = torch.Generator().manual_seed(7)
    B, T = 8, 16
    old = -torch.rand(B, T, generator=g, dtype=F64) * 3
    logp = old + 0.3 * torch.randn(B, T, generator=g, dtype=F64)  # within-sequence spread 0.3
    lens = torch.tensor([16, 5, 11, 1, 16, 8, 13, 3])
    mask = torch.arange(T)[None] < lens[:, None]
    adv = torch.randn(B, generator=g, dtype=F64)
    return logp.to(dtype), old.to(dtype), adv.to(dtype), mask


def _loss_and_grad(logp, old, adv, mask, p):
    lp = torch.where(mask, logp, NAN).requires_grad_()  # padding holds NaN and must not leak
    loss, _ = policy_loss(lp, old, adv, mask, p=p)
    (grad,) = torch.autograd.grad(loss, lp)
    return loss.detach(), grad


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_loss_is_continuous_through_p_zero_for_float_and_tensor_p(dtype):
    logp, old, adv, mask = _holder_batch(dtype)
    loss0, grad0 = _loss_and_grad(logp, old, adv, mask, 0.0)  # GSPO's masked mean
    eps = float(torch.finfo(dtype).eps)
    scale = float(adv.abs().mean())  # the loss is a mean of -A s with s ~ 1
    for p in (1e-9, -1e-9, torch.tensor(0.0, dtype=dtype), torch.tensor(1e-9), torch.tensor(-1e-9, dtype=F64)):
        loss, grad = _loss_and_grad(logp, old, adv, mask, p)
        # log s_p - log s_0 = p Var/2 + O(p^2) ~ 5e-11 here: below float32's rounding, and allowed
        # on top of 64 ulps of rounding in float64.
        tol = (64 * eps + 1e-9 * 0.1) * scale
        assert abs(loss.item() - loss0.item()) <= tol, p
        # The weights move by d pi_t / dp = pi_t (l_t - E_pi l) ~ 1e-9 x 0.6 relative at |p| = 1e-9.
        torch.testing.assert_close(grad, grad0, rtol=0, atol=(64 * eps + 2e-9) * float(grad0.abs().max()))
        assert (grad[~mask] == 0).all()


def test_a_tensor_p_updated_in_place_between_calls_is_read_afresh():
    from rl.losses import LossConfig, loss_from_config

    logp, old, adv, mask = _holder_batch(F64)
    p = torch.tensor(2.0, dtype=F64)
    config = LossConfig.create(level="sequence", p=p)  # built once, as a trainer's loop does
    for value in (2.0, 0.5, 1e-7, 0.0, -1e-7, -1.0):  # a HolderPO schedule from 2 down to -1
        p.fill_(value)
        got, m = loss_from_config(config, logp, old, adv, mask)
        want, _ = policy_loss(logp, old, adv, mask, p=value)
        assert m["p"] == value
        assert got.item() == pytest.approx(want.item(), rel=1e-13, abs=1e-15)


def holderpo_ratio(d: torch.Tensor, mask: torch.Tensor, p: float) -> torch.Tensor:
    """HolderPO's sequence ratio, transcribed from YihangChen9/HolderPO ``train_zero_math_holder.py``
    (commit 1d27a37, the learner's ``critic_type_modify == "holder"`` branch): for ``|p| < 1e-6``
    ``exp(sum(d m) / (n + 1e-8))``, else ``(sum(exp(p d) m) / (n + 1e-8)).pow(1 / p)``."""
    m = mask.to(d.dtype)
    n = m.sum(-1, keepdim=True)
    if abs(p) < 1e-6:
        return torch.exp((d * m).sum(-1, keepdim=True) / (n + 1e-8)).squeeze(-1)
    return ((torch.exp(p * d) * m).sum(-1, keepdim=True) / (n + 1e-8)).pow(1.0 / p).squeeze(-1)


def holderpo_log_ratio_lse(d: torch.Tensor, mask: torch.Tensor, p: float) -> torch.Tensor:
    """The same in log space, transcribed from HolderPO's ``alfworld/verl/trainer/ppo/core_algos.py``
    (``masked_log_holder_mean``): the masked mean for ``|p| < 1e-6``, else ``(lse(p d) - log n) / p``."""
    n = mask.sum(-1).to(d.dtype).clamp(min=1.0)
    if abs(p) < 1e-6:
        return (d * mask).sum(-1) / n
    return (torch.logsumexp((d * p).masked_fill(~mask, -math.inf), -1) - torch.log(n)) / p


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_holderpo_jumps_at_its_switch_where_ours_is_continuous(dtype):
    g = torch.Generator().manual_seed(3)
    d = (0.3 * torch.randn(6, 16, generator=g, dtype=F64)).to(dtype)  # 16 tokens, spread 0.3
    mask = torch.ones_like(d, dtype=torch.bool)
    above, below = 1e-6, 1e-6 * (1 - 1e-3)  # either side of HolderPO's switch to the geometric mean
    ours = power_log_ratio(d, mask, above)[0] - power_log_ratio(d, mask, below)[0]
    theirs = torch.log(holderpo_ratio(d, mask, above) / holderpo_ratio(d, mask, below))
    theirs_lse = holderpo_log_ratio_lse(d, mask, above) - holderpo_log_ratio_lse(d, mask, below)
    # The true change is (above - below) Var/2 ~ 5e-11: ours moves by that plus a few ulps of log s.
    eps = float(torch.finfo(dtype).eps)
    assert ours.abs().max().item() <= 4 * eps + 1e-10
    if dtype == torch.float32:
        # exp(p d) = 1 + O(1e-7) is rounded to float32's 1.2e-7 steps, an error that .pow(1/p)
        # multiplies by 1e6; the log-space form cancels log n against lse(p d) and divides by p.
        assert theirs.abs().min().item() > 1e-3 and theirs_lse.abs().min().item() > 1e-3
    else:
        # float64 rounds finely; the jump left is the 1e-8 added to n: (n / (n + 1e-8))^(1/p).
        np.testing.assert_allclose(theirs.numpy(), -1e-8 / 16 / above, rtol=1e-3)
        # The log-space form is accurate in float64 (lse's ~1e-15 error over p = 1e-6: 1e-9): its jump is
        # only the distance log M_p - log M_0 = p Var/2 + O(p^2) that the switch skips.
        var = d.var(-1, unbiased=False).numpy()
        np.testing.assert_allclose(theirs_lse.numpy(), above * var / 2, rtol=0, atol=1e-8 * var.min() + 1e-9)

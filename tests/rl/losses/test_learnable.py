"""Learnable p (rl/losses/learnable.py): the p-gradient of theorem 13, clipping, the module, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from rl.losses import LearnablePowerMean, policy_loss
from tests.rl.losses.loss_helpers import F64, power_mean_by_hand, t64


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

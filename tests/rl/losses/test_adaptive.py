"""Adaptive p (rl/losses/adaptive.py): each signal against its hand value, the thresholds, bad options."""

from __future__ import annotations

import math

import pytest
import torch

from rl.losses import ADAPTIVE_THRESHOLDS, policy_loss
from tests.rl.losses.loss_helpers import F64, t64


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

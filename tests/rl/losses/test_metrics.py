"""The metrics of a loss call (rl/losses/metrics.py) against hand values."""

from __future__ import annotations

import math

import pytest
import torch

from rl.losses import policy_loss
from tests.rl.losses.loss_helpers import F64, t64


def test_metrics_ess_and_kl_to_old():
    l, mask = t64([[0.0, math.log(3.0)], [0.2]])
    m_p0 = policy_loss(l, torch.zeros_like(l), torch.ones(2, dtype=F64), mask, p=0.0)[1]
    assert m_p0["token_weight_ess"] == pytest.approx(1.0)  # geometric mean: uniform weights
    m_p1 = policy_loss(l, torch.zeros_like(l), torch.ones(2, dtype=F64), mask, p=1.0)[1]
    # p = 1, row 0: weights (1/4, 3/4) -> 1 / (2 (1/16 + 9/16)) = 0.8; row 1: 1.
    assert m_p1["token_weight_ess"] == pytest.approx((0.8 + 1.0) / 2)
    k3 = [math.exp(x) - 1 - x for x in (0.0, math.log(3.0), 0.2)]
    assert m_p1["approx_kl_old"] == pytest.approx(sum(k3) / 3)
    assert m_p1["approx_kl_old_k1"] == pytest.approx(-(math.log(3.0) + 0.2) / 3)


def test_sequence_token_clip_metrics_per_sequence_or_per_token_advantages_agree():
    l, mask = t64([[0.5, 0.4, 0.3], [-0.5, -0.4], [0.01]])
    adv = torch.tensor([1.0, -1.0, 1.0], dtype=F64)
    _, m1 = policy_loss(l, torch.zeros_like(l), adv, mask, level="sequence-token", eps_low=0.1)
    _, m2 = policy_loss(l, torch.zeros_like(l), adv.unsqueeze(-1).expand_as(l).contiguous(), mask,
                        level="sequence-token", eps_low=0.1)
    # Token fractions: 3 of 6 tokens belong to the high-clipped sequence, 2 of 6 to the low-clipped one.
    for m in (m1, m2):
        assert m["clip_frac_high"] == pytest.approx(3 / 6) and m["clip_frac_low"] == pytest.approx(2 / 6)

"""The clip in log space (rl/losses/clipping.py): the bias-corrected window."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rl.losses import policy_loss, power_log_ratio
from tests.rl.losses.loss_helpers import F64, power_mean_by_hand, t64


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

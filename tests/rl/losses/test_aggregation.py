"""Aggregation modes (rl/losses/aggregation.py) against verl's definitions by hand."""

from __future__ import annotations

import pytest

from rl.losses import AGG_MODES, aggregate
from tests.rl.losses.loss_helpers import agg_by_hand, t64


def test_aggregate_public_function_matches_hand_modes():
    rows = [[1.0, 2.0, 3.0], [4.0], []]
    x, mask = t64(rows)
    for agg in AGG_MODES:
        assert aggregate(x, mask, agg).item() == pytest.approx(agg_by_hand(rows, agg, 3), rel=1e-12)
    # verl: (1 + 2 + 3 + 4) over 2 non-empty sequences, divided by the horizon 10.
    assert aggregate(x, mask, "seq-mean-token-sum-norm", loss_scale_factor=10).item() == pytest.approx(0.5)

"""Aggregation modes (rl/losses/aggregation.py) against verl's definitions by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rl.losses import AGG_MODES, aggregate
from tests.rl.losses.loss_helpers import agg_by_hand, t64


def test_aggregate_public_function_matches_hand_modes():
    rows = [[1.0, 2.0, 3.0], [4.0], []]
    x, mask = t64(rows)
    for agg in AGG_MODES:
        assert aggregate(x, mask, agg).item() == pytest.approx(agg_by_hand(rows, agg, 3), rel=1e-12)
    # verl: (1 + 2 + 3 + 4) over 2 non-empty sequences, divided by the horizon 10.
    assert aggregate(x, mask, "seq-mean-token-sum-norm", loss_scale_factor=10).item() == pytest.approx(0.5)


@pytest.mark.parametrize("agg", AGG_MODES)
def test_aggregate_sequences_is_aggregate_of_the_broadcast_matrix(agg):
    from rl.losses import aggregate_sequences

    seq_loss = torch.tensor([1.5, -2.0, math.nan, 0.25], dtype=torch.float64)  # row 2 has no tokens
    _, mask = t64([[0.0, 0.0, 0.0], [0.0], [], [0.0, 0.0]])
    n = mask.sum(-1)
    matrix = seq_loss.unsqueeze(-1).expand(4, 3)
    for lsf in (None, 7.0):
        got = aggregate_sequences(seq_loss, n, agg, 3, loss_scale_factor=lsf)
        # by hand: each sequence's loss counted once per token, the empty row left out
        rows = [[float(seq_loss[i])] * int(n[i]) for i in range(4)]
        want = agg_by_hand(rows, agg, 3) if lsf is None or agg != "seq-mean-token-sum-norm" else \
            sum(sum(r) for r in rows if r) / 3 / lsf
        assert got.item() == pytest.approx(want, rel=1e-12)
        assert got.item() == pytest.approx(aggregate(matrix, mask, agg, loss_scale_factor=lsf).item(), rel=1e-12)

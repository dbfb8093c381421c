"""Input conversion and validation shared by the public functions (meantheory/_inputs.py):
bad types, shapes and dimensions raise a ValueError that names the problem; inputs are
answered in kind (tensor, ndarray, float or list)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meantheory import dlog_power_mean_dp, log_power_mean, mean_weights

U = torch.tensor([[0.1, -0.5, 0.3], [1.0, 2.0, -1.0]], dtype=torch.float64)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: log_power_mean(U, math.nan), r"p: NaN"),
        (lambda: log_power_mean(U, 1.0, weights=torch.ones(4)), r"weights: shape \(4,\) does not broadcast"),
        (lambda: log_power_mean(U, 1.0, mask=torch.ones(3)), r"mask: expected a bool"),
        (lambda: log_power_mean(U, 1.0, mask=np.ones(3)), r"mask: expected booleans"),
        (lambda: log_power_mean(U, 1.0, mask=torch.ones(5, dtype=torch.bool)), r"mask: shape \(5,\) does not broadcast"),
        (lambda: log_power_mean(U, 1.0, dim=2), r"dim: 2 is out of range"),
        (lambda: log_power_mean(U, 1.0, dim=1.0), r"dim: expected an int"),
        (lambda: log_power_mean(torch.tensor(1.0), 1.0), r"0-d"),
        (lambda: log_power_mean([[1.0], [1.0, 2.0]], 1.0), r"log_x: (ragged|cannot be read)"),
        (lambda: log_power_mean(["a"], 1.0), r"log_x: expected numbers"),
        (lambda: log_power_mean(torch.tensor([True]), 1.0), r"log_x: .*bool"),
        (lambda: mean_weights(U, math.nan), r"p: NaN"),
    ],
)
def test_bad_input_names_the_problem(call, match):
    """Unreadable inputs, masks, shapes and dimensions: a ValueError that names the problem."""
    with pytest.raises(ValueError, match=match):
        call()


def test_answered_in_kind():
    x = [[1.0, 2.0], [3.0, 4.0]]
    assert isinstance(log_power_mean(x, 1.0), list)
    assert isinstance(log_power_mean([0.0, 1.0], 1.0), float)
    out = log_power_mean(np.array(x), 1.0)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    assert isinstance(mean_weights(np.array(x), 2.0), np.ndarray)
    assert isinstance(dlog_power_mean_dp(x, 2.0), list)
    t = log_power_mean(torch.tensor(x, dtype=torch.float32), 1.0)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    assert np.allclose(log_power_mean(np.array(x), 1.0), np.log(np.mean(np.exp(x), axis=-1)), rtol=0, atol=1e-15)

"""Prepared inputs (meantheory/_prepared.py): the support, the weights, p per row."""

from __future__ import annotations

import math

import pytest
import torch

from meantheory._prepared import prepare

D = torch.float64


def test_the_support_is_the_mask_and_the_positive_weights():
    u = torch.tensor([[0.0, 1.0, math.nan, 2.0]], dtype=D)
    w = torch.tensor([[1.0, 0.0, 5.0, 3.0]], dtype=D)
    m = torch.tensor([[True, True, False, True]])
    pr = prepare(u, 1.0, -1, w, m, False, True)
    assert pr.valid.tolist() == [[True, False, False, True]]
    assert pr.nv.tolist() == [2.0]
    # exp(log w - logsumexp log w): three roundings of numbers below 1
    assert torch.allclose(pr.w, torch.tensor([[0.25, 0.0, 0.0, 0.75]], dtype=D), rtol=0, atol=4 * 2.0**-52)
    assert pr.logw[0, 1].item() == -math.inf and pr.log_weights is None  # no graph wanted
    wg = w.clone().requires_grad_()
    assert prepare(u, 1.0, -1, wg, m, False, True).log_weights.requires_grad
    # uniform weights: 1/nv on the support, 0 off it and on an empty row
    pr = prepare(torch.zeros(2, 3, dtype=D), 1.0, -1, None, torch.tensor([[True, False, True], [False] * 3]), False, True)
    assert pr.w.tolist() == [[0.5, 0.0, 0.5], [0.0, 0.0, 0.0]]


@pytest.mark.parametrize("p_shape", [(), (3,), (3, 1)])
def test_p_arrives_per_row(p_shape):
    """A tensor p broadcasts to the reduced shape, or to the input's with the dim kept."""
    p = torch.full(p_shape, -1.0, dtype=D)
    pr = prepare(torch.zeros(3, 4, dtype=D), p, -1, None, None, False, True)
    assert pr.p.shape == (3,) and pr.p_float is None
    assert prepare(torch.zeros(3, 4, dtype=D), -1.0, 0, None, None, False, True).p.shape == (4,)


def test_a_python_p_is_rounded_to_the_compute_dtype():
    assert prepare(torch.zeros(1, 2), 1e-300, -1, None, None, False, True).p_float == 0.0
    assert prepare(torch.zeros(1, 2), 0.3, -1, None, None, False, True).p_float == float(torch.tensor(0.3).item())
    assert prepare(torch.zeros(1, 2, dtype=D), 1e-300, -1, None, None, False, True).p_float == 1e-300


def test_maybe_asks_on_a_cpu():
    pr = prepare(torch.zeros(2, 2), 1.0, -1, None, None, False, False)
    assert pr.maybe(torch.tensor([False, False])) is False
    assert pr.maybe(torch.tensor([False, True])) is True

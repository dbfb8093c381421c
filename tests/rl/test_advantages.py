"""rl.advantages.group_advantages: closed forms, the zero-sum invariant, Dr. GRPO, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rl.advantages import group_advantages


def test_closed_form_small_groups():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 4.0], dtype=torch.float64)
    a = group_advantages(r, 2)
    sd = math.sqrt(0.5)  # ddof=1 std of (1, 0)
    expected = [0.5 / (sd + 1e-6), -0.5 / (sd + 1e-6), -0.5 / (sd + 1e-6), 0.5 / (sd + 1e-6),
                -1 / (math.sqrt(2) + 1e-6), 1 / (math.sqrt(2) + 1e-6)]
    assert a.tolist() == pytest.approx(expected, rel=1e-12)
    dr = group_advantages(r, 3, std_normalize=False)  # Dr. GRPO: centred only
    assert dr.tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, 1 - 7 / 3, 2 - 7 / 3, 4 - 7 / 3], rel=1e-12)


def test_equal_rewards_give_zero_advantages():
    a = group_advantages(torch.tensor([0.7, 0.7, 0.7, 1.0, 0.0, 1.0]), 3)
    assert a[:3].tolist() == [0.0, 0.0, 0.0]
    assert a[3:].abs().min() > 0


@given(
    groups=st.integers(1, 6),
    size=st.integers(2, 8),
    seed=st.integers(0, 10_000),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    std_normalize=st.booleans(),
)
def test_each_group_sums_to_zero(groups, size, seed, scale, std_normalize):
    g = torch.Generator().manual_seed(seed)
    r = scale * torch.randn(groups * size, generator=g, dtype=torch.float64)
    a = group_advantages(r, size, std_normalize=std_normalize).reshape(groups, size)
    rg = r.reshape(groups, size)
    r_sd = rg.std(-1, unbiased=True)
    # Rounding bound: a few ulps of the largest reward per term, in advantage units.
    denom = r_sd + 1e-6 if std_normalize else torch.ones_like(r_sd)
    bound = 4 * size * torch.finfo(torch.float64).eps * rg.abs().amax(-1) / denom
    assert (a.sum(-1).abs() <= bound).all()
    if std_normalize:
        sd = a.std(-1, unbiased=True)
        # Unit ddof=1 std up to the eps = 1e-6 in the denominator.
        torch.testing.assert_close(sd, r_sd / (r_sd + 1e-6), rtol=1e-12, atol=0)


def test_bad_input():
    with pytest.raises(ValueError, match="rewards"):
        group_advantages(torch.zeros(2, 3), 3)
    with pytest.raises(ValueError, match="rewards"):
        group_advantages([1.0, 2.0], 2)
    with pytest.raises(ValueError, match="does not divide"):
        group_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="positive int"):
        group_advantages(torch.zeros(4), 0)
    with pytest.raises(ValueError, match="std undefined"):
        group_advantages(torch.zeros(4), 1)
    with pytest.raises(ValueError, match="NaN"):
        group_advantages(torch.tensor([1.0, float("nan")]), 2)
    assert group_advantages(torch.tensor([1.0, 3.0]), 1, std_normalize=False).tolist() == [0.0, 0.0]

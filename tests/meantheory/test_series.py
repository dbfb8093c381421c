"""The cumulant series of the log power mean around p = 0 (meantheory/series.py)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from meantheory import cumulant_series, log_power_mean, weighted_cumulants
from meantheory import reference as ref

U = torch.tensor([[0.1, -0.5, 0.3], [1.0, 2.0, -1.0]], dtype=torch.float64)


@settings(max_examples=30)
@given(st.lists(st.floats(-3, 3), min_size=2, max_size=8), st.floats(-0.5, 0.5), st.integers(1, 6))
def test_cumulant_series_matches_oracle(u, p, order):
    got = cumulant_series(torch.tensor(u, dtype=torch.float64), p, order).item()
    exact = float(ref.mp_cumulant_series(u, p, order))
    assert abs(got - exact) <= 1e-13 * max(1.0, abs(exact))
    ks = weighted_cumulants(torch.tensor(u, dtype=torch.float64), order)
    for k_got, k_exact in zip(ks, ref.mp_cumulants(u, order)):
        assert abs(k_got.item() - float(k_exact)) <= 1e-13 * max(1.0, float(abs(k_exact)))


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_cumulant_series_error_is_order_p_to_the_order(order):
    """err(p) = |series_order(p) - log M_p| ~ C p^order: halving p divides it by ~2^order."""
    u = [0.3, -1.1, 0.8, 2.0, -0.4]
    errs = []
    for p in (0.04, 0.02, 0.01):
        exact = ref.mp_log_power_mean(u, p)
        errs.append(abs(float(ref.mp_cumulant_series(u, p, order) - exact)))
        assert abs(cumulant_series(torch.tensor(u, dtype=torch.float64), p, order).item()
                   - float(ref.mp_cumulant_series(u, p, order))) <= 1e-15
    for e1, e2 in zip(errs, errs[1:]):
        assert 2 ** (order - 0.3) <= e1 / e2 <= 2 ** (order + 0.3)
    # and the implementation's value is far more accurate than the series at these p
    assert abs(log_power_mean(torch.tensor(u, dtype=torch.float64), 0.04).item()
               - float(ref.mp_log_power_mean(u, 0.04))) <= 1e-15


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: cumulant_series(U, 0.1, 0), r"order"),
        (lambda: cumulant_series(torch.tensor([-math.inf, 0.0]), 0.1, 2), r"-inf"),
    ],
)
def test_bad_input_names_the_problem(call, match):
    """Bad orders and zeros raise a ValueError that names the problem."""
    with pytest.raises(ValueError, match=match):
        call()


def test_an_empty_support_has_nan_cumulants():
    """A row with nothing to average (all masked, or a dimension of length 0) is NaN, as
    everywhere in meantheory (weighted_cumulants answered 0 for it)."""
    u = torch.tensor([[0.3, 1.0], [2.0, 5.0]], dtype=torch.float64)
    m = torch.tensor([[True, True], [False, False]])
    for k in weighted_cumulants(u, 3, mask=m):
        assert math.isfinite(k[0].item()) and math.isnan(k[1].item())
    assert math.isnan(cumulant_series(u, 0.1, 3, mask=m)[1].item())
    for k in weighted_cumulants(torch.zeros(2, 0, dtype=torch.float64), 2):
        assert k.shape == (2,) and torch.isnan(k).all()
    assert torch.isnan(cumulant_series(torch.zeros(2, 0, dtype=torch.float64), 0.1, 2)).all()

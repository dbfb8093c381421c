"""phi, the non-negative summand of the p-derivative's KL divergence (meantheory/_closed_forms.py).

The closed-form gradients themselves are held against the mpmath oracle on every path in
test_paths.py."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch

from meantheory._closed_forms import phi
from meantheory._kernel import PHI_SERIES_R

R = [-700.0, -50.0, -1.0, -0.09, -0.01, -PHI_SERIES_R, -0.999e-3, -1e-8, -1e-300, 0.0, 1e-300, 1e-8, 0.999e-3, PHI_SERIES_R, 0.05, 0.5, 5.0, 30.0]


@pytest.mark.parametrize("graph", [False, True])
def test_phi_against_mpmath_on_both_sides_of_the_series_switch(graph):
    """phi(r) = r e^r - e^r + 1 within 5e-13 relative (the direct form's cancellation,
    2 eps / |r|, is largest at the switch |r| = 1e-3); phi(-inf) = 1, its limit (a zero)."""
    r = torch.tensor(R + [-math.inf], dtype=torch.float64, requires_grad=graph)
    got = phi(r, graph=graph)
    with mpmath.workdps(60):
        exact = [float(mpmath.mpf(v) * mpmath.exp(v) - mpmath.expm1(v)) for v in R]
    for v, g, e in zip(R, got[:-1].tolist(), exact):
        assert g >= 0
        assert abs(g - e) <= 5e-13 * abs(e) + 1e-300, (v, g, e)
    assert got[-1].item() == 1.0
    if graph:  # differentiable, with phi'(r) = r e^r, and no NaN from the -inf entry
        (d,) = torch.autograd.grad(got.sum(), r)
        assert torch.isfinite(d).all() and d[-1].item() == 0.0
        for v, dv in zip(R, d[:-1].tolist()):
            assert abs(dv - v * math.exp(v)) <= 1e-12 * max(1.0, abs(v * math.exp(v))), (v, dv)

"""The kernel's decision between series, log1p and direct forms (meantheory/_kernel.py).

The values and gradients of every path are held against mpmath in test_paths.py; here the
decision itself, as the kernel's docstring states it, on rows built to sit on each side of
each threshold."""

from __future__ import annotations

import math

import numpy as np
import torch

from meantheory._kernel import EXP_FORM_P, SERIES_THRESHOLD, evaluate
from meantheory._prepared import prepare

EDGE = [0.0, 1.0, 0.25, 0.5]  # spread exactly 1: |p| spread = |p|


def _record(rows, p, *, p_grad=False, weights=None):
    u = torch.tensor(rows, dtype=torch.float64)
    pr = prepare(u, p, -1, weights, None, False, True)
    with torch.no_grad():
        return pr, evaluate(pr, pr.u, pr.p, pr.logw, p_grad=p_grad)


def test_series_rows_are_those_at_or_below_the_threshold():
    above = float(np.nextafter(SERIES_THRESHOLD, 1.0))
    ps = [SERIES_THRESHOLD, above, -SERIES_THRESHOLD, 0.0, 0.3, 1e-300]
    _, fwd = _record([EDGE] * len(ps), torch.tensor(ps, dtype=torch.float64))
    assert fwd.series_rows.tolist() == [True, False, True, True, False, True]
    # a zero is never a series row (its spread is infinite), at p = 0 the row is dead
    _, fwd = _record([[-math.inf, 0.0, 1e-9]] * 2, torch.tensor([1e-9, 0.0], dtype=torch.float64))
    assert fwd.series_rows is None or not fwd.series_rows.any()
    assert fwd.dead.tolist() == [False, True]


def test_large_p_takes_the_direct_form_unless_its_gradient_is_wanted():
    """|p| >= EXP_FORM_P: a Python p takes the one-pass form (e^z kept, no series), a tensor
    p the direct form on every row; a p-gradient needs the relative accuracy: series here."""
    tiny = [[3.0, 3.0 + 1e-12, 3.0 - 1e-12]]
    _, fwd = _record(tiny, EXP_FORM_P)
    assert fwd.e is not None and fwd.z is None and fwd.series_rows is None
    _, fwd = _record(tiny, torch.tensor([EXP_FORM_P], dtype=torch.float64))
    assert fwd.series_rows is None or not fwd.series_rows.any()
    _, fwd = _record(tiny, torch.tensor([EXP_FORM_P], dtype=torch.float64), p_grad=True)
    assert fwd.series_rows.tolist() == [True]
    # weighted: the one-pass form keeps z (the weights' gradient needs it)
    _, fwd = _record(tiny, -1.0, weights=torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert fwd.z is not None and fwd.e is None


def test_the_record_marks_dead_and_infinite_rows_with_minus_infinite_exponents():
    rows = [[0.0, -math.inf, 1.0], [0.0, 2.0, 1.0], [0.5, 0.2, 0.1]]
    pr, fwd = _record(rows, torch.tensor([-1.0, math.inf, 0.3], dtype=torch.float64))
    assert fwd.dead.tolist() == [True, False, False] and fwd.inf_rows.tolist() == [False, True, False]
    assert (fwd.z[:2] == -math.inf).all() and (fwd.z[2] <= 0).all() and fwd.z[2].max() == 0
    assert fwd.lse[:2].tolist() == [0.0, 0.0]
    assert fwd.value[0].item() == -math.inf and fwd.value[1].item() == 2.0

"""Shared strategies and tolerances for the meantheory tests.

Tolerances (issue 2), all against the mpmath oracle at 60 digits (meantheory.reference):
* float64 log M_p: |err| <= 64 eps max(1, max|u|) -- a few ulps at the scale of the
  inputs, the condition number of the reduction (log M moves by |du| when u does).
* float32 log M_p: |err| <= 2e-5 max(1, max|u|) (2e-5 is about 170 float32 ulps; the
  max(1, max|u|) factor is needed because the float32 result itself cannot represent a
  value near 700 to better than 3e-5).
* gradients: d/du within 1e-12 absolute of softmax(p u + log w); d/dp within 1e-7 relative.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import strategies as st

EPS64 = 2.0**-52
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SPECIAL_P = [0.0, 1e-300, -1e-300, 1e-16, -1e-16, 1e-7, -1e-7, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0,
             1000.0, -1000.0, math.inf, -math.inf]


def tol64(u, support=None) -> float:
    u = np.asarray(u, dtype=np.float64)
    if support is not None:
        u = u[np.asarray(support, dtype=bool)]
    fin = u[np.isfinite(u)]
    return 64 * EPS64 * max(1.0, float(np.abs(fin).max()) if fin.size else 1.0)


def tol32(u) -> float:
    u = np.asarray(u, dtype=np.float64)
    fin = u[np.isfinite(u)]
    return 2e-5 * max(1.0, float(np.abs(fin).max()) if fin.size else 1.0)


finite_p = st.one_of(st.sampled_from([p for p in SPECIAL_P if math.isfinite(p)]),
                     st.floats(-1000, 1000, allow_nan=False, allow_infinity=False))
any_p = st.one_of(st.sampled_from(SPECIAL_P), st.floats(-1000, 1000, allow_nan=False, allow_infinity=False))


@st.composite
def rows(draw, n_min: int = 1, n_max: int = 10, lim: float = 700.0):
    """A row of log-values: a centre, a spread on a log-uniform scale, optional outlier."""
    n = draw(st.integers(n_min, n_max))
    centre = draw(st.one_of(st.just(0.0), st.floats(-lim + 50, lim - 50)))
    scale = draw(st.sampled_from([0.0, 1e-12, 1e-7, 1e-3, 0.1, 1.0, 5.0, 30.0]))
    z = draw(st.lists(st.floats(-1, 1), min_size=n, max_size=n))
    u = np.clip(centre + scale * np.asarray(z), -lim, lim)
    if n > 1 and draw(st.booleans()):
        u[draw(st.integers(0, n - 1))] = draw(st.floats(-lim, lim))
    return u


@st.composite
def weights_for(draw, n: int):
    if not draw(st.booleans()):
        return None
    w = np.asarray(draw(st.lists(st.one_of(st.just(0.0), st.floats(1e-6, 10.0)), min_size=n, max_size=n)))
    if not (w > 0).any():
        w[0] = 1.0
    return w


@st.composite
def mask_for(draw, n: int):
    if not draw(st.booleans()):
        return None
    m = np.asarray(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    if not m.any():
        m[draw(st.integers(0, n - 1))] = True
    return m


def with_padding(u: np.ndarray, mask: np.ndarray | None, fill: float = math.nan) -> np.ndarray:
    """Garbage in masked positions: nothing may leak from them."""
    if mask is None:
        return u
    out = u.copy()
    out[~mask] = fill
    return out

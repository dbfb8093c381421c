"""Per-run endpoints: one run's per-step metric -> one number (see rl.studies.plan.Endpoint).

Pure functions of a curve first (:func:`crossing`, :func:`max_drawdown`), then
:func:`endpoint_value`, which reads the named columns of a results record (exact column names,
as the run function wrote them: no aliases are guessed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from rl.studies.plan import Endpoint

__all__ = ["EndpointValue", "series", "crossing", "trailing_mean", "max_drawdown", "consumed", "endpoint_value"]


@dataclass(frozen=True)
class EndpointValue:
    """A run's value of an endpoint; ``censored`` when it is the budget of a threshold never reached."""

    value: float
    censored: bool = False


def series(record: dict[str, Any], column: str) -> np.ndarray | None:
    """A run's per-step values of ``column`` (None entries -> NaN), or None if the run has no such column."""
    v = record.get("metrics", {}).get(column)
    if v is None:
        return None
    return np.array([math.nan if e is None else float(e) for e in v], dtype=float)


def crossing(y: np.ndarray, x: np.ndarray, threshold: float) -> EndpointValue:
    """The x at which y first reaches ``threshold``, linearly interpolated.

    With t the first index where y_t >= threshold and t' < t the last earlier index with a
    finite y (a metric logged every few steps, such as the tiny LM's exact J, leaves the rows
    between its evaluations empty): x_t if there is no such t', else
    x_t' + (threshold - y_t') / (y_t - y_t') (x_t - x_t'). Never reached: the last x (the
    budget), censored. Non-finite y never counts as reaching it.
    """
    y, x = np.asarray(y, float), np.asarray(x, float)
    if y.shape != x.shape or y.size == 0:
        raise ValueError(f"crossing: y and x must be non-empty and of one shape, got {y.shape} and {x.shape}")
    hit = np.flatnonzero(np.nan_to_num(y, nan=-np.inf) >= threshold)
    if hit.size == 0:
        return EndpointValue(float(x[-1]), True)
    t = int(hit[0])
    before = np.flatnonzero(np.isfinite(y[:t]))
    if before.size == 0:
        return EndpointValue(float(x[t]))
    u = int(before[-1])
    frac = (threshold - y[u]) / (y[t] - y[u])
    return EndpointValue(float(x[u] + frac * (x[t] - x[u])))


def trailing_mean(y: np.ndarray, window: int) -> np.ndarray:
    """Means of the finite values in each full trailing window y_{t-w+1..t}, t = w..T (T - w + 1
    values; NaN where a window has no finite value). Only full windows: a mean over the first few
    steps would be one noisy batch. Each window is summed on its own (no running sums), so equal
    inputs give equal means bit for bit."""
    a = np.asarray(y, dtype=float)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if a.size < window:
        return np.array([])
    if window == 1:
        return a.copy()
    from numpy.lib.stride_tricks import sliding_window_view

    w = sliding_window_view(a, window)
    ok = np.isfinite(w)
    cnt = ok.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, np.where(ok, w, 0.0).sum(-1) / np.maximum(cnt, 1), np.nan)


def max_drawdown(y: np.ndarray, window: int = 1) -> float:
    """max_t (max_{u <= t} m_u - m_t) with m the trailing ``window``-step mean (full windows only,
    :func:`trailing_mean`): the largest fall below the run's own running best (0 for a curve that
    never falls; NaN for a run shorter than the window). A run that ends non-finite has fallen
    all the way: +inf."""
    a = np.asarray(y, dtype=float)
    if a.size == 0:
        return math.nan
    if not math.isfinite(a[-1]):
        return math.inf
    m = trailing_mean(a, window)
    m = m[np.isfinite(m)]
    if not m.size:
        return math.nan
    return float(np.max(np.maximum.accumulate(m) - m))


def _one(ep: Endpoint, record: dict[str, Any], column: str) -> EndpointValue:
    y = series(record, column)
    if y is None:
        raise ValueError(f"run {record.get('run_id')}: endpoint {ep.name!r} needs the column {column!r}; the run "
                         f"has {sorted(record.get('metrics', {}))}")
    finite = y[np.isfinite(y)]
    if ep.kind == "mean":
        return EndpointValue(float(finite.mean()) if finite.size else math.nan)
    if ep.kind == "median":
        return EndpointValue(float(np.median(finite)) if finite.size else math.nan)
    if ep.kind == "final":
        tail = y[-ep.last:]
        tail = tail[np.isfinite(tail)]
        return EndpointValue(float(tail.mean()) if tail.size else math.nan)
    if ep.kind == "max_drawdown":
        return EndpointValue(max_drawdown(y, ep.window))
    return crossing(y, consumed(record, ep.x, y.size), float(ep.threshold))


def consumed(record: dict[str, Any], x: str, n: int) -> np.ndarray:
    """What had been consumed when each row's metrics were taken: the trainer logs a step's
    metrics (the batch reward, the exact objective "before this step's updates") before that
    step's update, so row t reflects the samples (``x = "samples"``: the cumulative ``samples``
    column shifted by one row, starting at 0) or the steps (``"steps"``: t - 1) before it."""
    if x == "steps":
        return np.arange(n, dtype=float)
    s = series(record, "samples")
    if s is None:
        raise ValueError(f"run {record.get('run_id')}: counting in samples needs the 'samples' column")
    return np.concatenate([[0.0], s[:-1]])


def endpoint_value(ep: Endpoint, record: dict[str, Any]) -> EndpointValue:
    """The run's value of ``ep`` (ValueError naming the missing column if the run lacks it)."""
    v = _one(ep, record, ep.metric)
    if ep.minus is None:
        return v
    w = _one(ep, record, ep.minus)
    return EndpointValue(v.value - w.value, v.censored or w.censored)

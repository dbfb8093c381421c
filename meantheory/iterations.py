r"""Two-number mean iterations: the arithmetic-harmonic iteration and Gauss's AGM.

Arithmetic-harmonic iteration (Bullen 2003, sec. VI.3; Borwein and Borwein, *Pi and the
AGM*, 1987, ch. 8): from ``a_0 = a, h_0 = b > 0``

.. math:: a_{k+1} = \frac{a_k + h_k}{2}, \qquad h_{k+1} = \frac{2 a_k h_k}{a_k + h_k}.

The product is invariant (``a_{k+1} h_{k+1} = a_k h_k``), the gap obeys
``a_{k+1} - h_{k+1} = (a_k - h_k)^2 / (2 (a_k + h_k))`` (quadratic convergence), and both
sequences converge to ``sqrt(a b)``: the geometric mean of the *two starting numbers*.

Started from ``(A(x), H(x))`` of ``n > 2`` values, as seed 000 proposes, the limit is
``sqrt(A(x) H(x)) = sqrt(sum x / sum 1/x)`` for equal weights, which equals the geometric
mean of ``x`` only when ``sum_i sinh(u_i - mean u) = 0`` (``u = log x``); for ``x = (1, 1, 4)``
it is ``sqrt(2 * 4/3) = 1.633`` while ``G = 4^(1/3) = 1.587``.

Gauss's arithmetic-geometric mean is a different iteration
(``a_{k+1} = (a_k + g_k)/2, g_{k+1} = sqrt(a_k g_k)``) whose limit is
``pi (a + b) / (4 K(((a - b)/(a + b))^2))`` with ``K`` the complete elliptic integral of
the first kind (parameter convention of mpmath.ellipk), not ``sqrt(a b)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from meantheory._inputs import answer, kind_of, to_tensor
from meantheory.power_mean import geometric_mean, power_mean

__all__ = [
    "IterationTrace",
    "PairIterationResult",
    "arithmetic_harmonic_iteration",
    "gauss_agm",
    "mean_pair_iteration",
]

_MAX_STEPS = 64
_EPS = 2.0**-52


@dataclass
class IterationTrace:
    """Trace of a two-number mean iteration.

    ``upper[k]``, ``lower[k]`` are the pair after k steps (index 0: the start, ordered so
    that upper >= lower); ``limit`` the common limit; ``gaps[k] = upper[k] - lower[k]``.
    """

    name: str
    upper: list[float]
    lower: list[float]
    limit: float
    converged: bool
    gaps: list[float] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.upper) - 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "upper": self.upper,
            "lower": self.lower,
            "gaps": self.gaps,
            "limit": self.limit,
            "steps": self.steps,
            "converged": self.converged,
        }


def _check_pair(a: float, b: float) -> tuple[float, float]:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a, b: expected two real numbers ({exc})") from exc
    for name, v in (("a", a), ("b", b)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name}: the iteration needs a finite value > 0, got {v}")
    return a, b


def _check_stop(steps: int | None, tol: float | None) -> None:
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 0):
        raise ValueError(f"steps: expected an int >= 0, got {steps!r}")
    if tol is not None and not (tol >= 0):
        raise ValueError(f"tol: expected a number >= 0, got {tol!r}")


def _iterate(name: str, a: float, b: float, step, steps: int | None, tol: float | None, limit: float) -> IterationTrace:
    _check_stop(steps, tol)
    hi, lo = max(a, b), min(a, b)
    upper, lower, gaps = [hi], [lo], [hi - lo]
    n_max = steps if steps is not None else _MAX_STEPS
    for _ in range(n_max):
        if steps is None and (hi - lo <= (tol or 0.0) * hi):
            break
        new_hi, new_lo = step(hi, lo)
        # Rounding can cross the pair over in the last ulp; keep upper >= lower.
        new_lo = min(new_lo, new_hi)
        if steps is None and new_hi == hi and new_lo == lo:
            break
        hi, lo = new_hi, new_lo
        upper.append(hi)
        lower.append(lo)
        gaps.append(hi - lo)
    converged = hi - lo <= max(tol or 0.0, 4 * _EPS) * hi
    return IterationTrace(name, upper, lower, limit, converged, gaps)


def arithmetic_harmonic_iteration(a: float, b: float, steps: int | None = None, tol: float | None = None) -> IterationTrace:
    r"""Trace of the arithmetic-harmonic iteration of two positive numbers; limit ``sqrt(a b)``.

    ``steps``: run exactly that many steps; otherwise run until the relative gap is at
    most ``tol`` (default: until the pair stops changing in float64, at most 64 steps;
    from a ratio R the gap first roughly halves per step while ``a >> h``, then converges
    quadratically: about ``log2(R)/2 + 5`` steps, 10 from R = 1000, 25 from R = 1e12).
    """
    a, b = _check_pair(a, b)
    return _iterate(
        "arithmetic-harmonic", a, b,
        lambda x, y: ((x + y) / 2, 2 * x * (y / (x + y))),
        steps, tol, _sqrt_product(a, b),
    )


def _sqrt_product(a: float, b: float) -> float:
    """sqrt(a b), correctly rounded when the product is a normal float (sqrt(2 * 2) = 2
    exactly, where sqrt(2) * sqrt(2) is 2 + 1 ulp); sqrt(a) sqrt(b) when it would overflow
    or underflow."""
    ab = a * b
    if 1e-300 < ab < 1e300:
        return math.sqrt(ab)
    return math.sqrt(a) * math.sqrt(b)


def gauss_agm(a: float, b: float, steps: int | None = None, tol: float | None = None) -> IterationTrace:
    r"""Trace of Gauss's arithmetic-geometric mean of two positive numbers.

    Limit :math:`\mathrm{agm}(a, b) = \pi (a + b) / (4 K(k^2))` with ``k = (a - b)/(a + b)``;
    it lies strictly between ``sqrt(a b)`` and ``(a + b)/2`` unless ``a = b``.
    """
    a, b = _check_pair(a, b)
    trace = _iterate(
        "gauss-agm", a, b,
        lambda x, y: ((x + y) / 2, math.sqrt(x) * math.sqrt(y)),
        steps, tol, math.nan,
    )
    if trace.converged:
        trace.limit = trace.upper[-1]
    else:
        # Finish silently to full precision for the stated limit; the trace stays as asked.
        full = _iterate("gauss-agm", trace.upper[-1], trace.lower[-1],
                        lambda x, y: ((x + y) / 2, math.sqrt(x) * math.sqrt(y)), None, None, math.nan)
        trace.limit = full.upper[-1]
    return trace


@dataclass
class PairIterationResult:
    """The arithmetic-harmonic iteration started from (A(x), H(x)) of n values, per row."""

    arithmetic: Any
    harmonic: Any
    limit: Any  # sqrt(A H)
    geometric: Any  # the true geometric mean G(x)
    gap: Any  # limit - G, sign of sum w sinh(u - mean u)
    relative_gap: Any  # (limit - G) / G
    trace_upper: Any  # [steps + 1, *rows]
    trace_lower: Any


def mean_pair_iteration(
    x: Any, steps: int = 8, dim: int = -1, *, weights: Any = None, mask: Any = None
) -> PairIterationResult:
    r"""Run the arithmetic-harmonic iteration from ``(A(x), H(x))``, as seed 000's RMI proposes.

    The product ``A H`` is invariant, so the limit is ``sqrt(A(x) H(x))``; this is **not**
    the geometric mean of ``x`` in general (equal iff ``sum_i w_i sinh(u_i - bar u) = 0``
    with ``bar u`` the weighted mean of ``u = log x``). The gap ``sqrt(A H) - G`` has the
    sign of ``sum_i w_i sinh(u_i - bar u)``, because ``A H / G^2 = sum w e^{c} / sum w e^{-c}``
    with ``c = u - bar u``; to leading order ``log sqrt(A H) - log G = kappa_3/6 + kappa_5/120 + ...``,
    so right-skewed ``u`` gives a positive gap (``(1, 1, 4)``) and left-skewed a negative one
    (``(1, 4, 4)``: ``sqrt(6) = 2.449 < 16^(1/3) = 2.520``).
    Values are computed per row along ``dim`` in float64; the answer is in ``x``'s kind.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps: expected an int >= 0, got {steps!r}")
    kind = kind_of(x)
    xt = to_tensor(x, "x").to(torch.float64)
    a = power_mean(xt, 1.0, dim, weights=weights, mask=mask)
    h = power_mean(xt, -1.0, dim, weights=weights, mask=mask)
    g = geometric_mean(xt, dim, weights=weights, mask=mask)
    hi, lo = a, h
    ups, lows = [hi], [lo]
    for _ in range(steps):
        s = hi + lo
        hi, lo = s / 2, 2 * hi * (lo / s)
        lo = torch.minimum(lo, hi)
        ups.append(hi)
        lows.append(lo)
    limit = torch.sqrt(a) * torch.sqrt(h)
    gap = limit - g
    rel = gap / g
    return PairIterationResult(
        arithmetic=answer(a, kind),
        harmonic=answer(h, kind),
        limit=answer(limit, kind),
        geometric=answer(g, kind),
        gap=answer(gap, kind),
        relative_gap=answer(rel, kind),
        trace_upper=answer(torch.stack(ups), kind),
        trace_lower=answer(torch.stack(lows), kind),
    )

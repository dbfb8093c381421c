r"""Shared sympy objects and the numeric forms of derived expressions.

Symbolic sums for "all n" derivations use ``Sum(w[i] * exp(p * u[i]), (i, 1, n))`` with
``u`` real and ``w`` positive (indexed bases), in log coordinates ``u_i = log x_i``:
sympy cannot simplify ``(sum w x^p)^(1/p)`` with symbolic exponents, while the log form
is a plain sum of exponentials.

Numeric forms are lambdified with ``modules="mpmath"`` and evaluated at high precision
(:func:`mp_eval`), so they serve as the reference against which the float64 torch code
is compared. The precision grows with ``1/|p|`` because ``log(sum w e^{p u}) / p`` loses
about ``log10(1/|p|)`` digits to cancellation near p = 0 (twice that for ``KL / p^2``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import mpmath
import numpy as np
import sympy as sp
import torch

__all__ = [
    "n", "i", "U", "W", "p",
    "S_sum",
    "concrete",
    "normalised",
    "PerN",
    "mp_eval",
    "dps_for",
    "mp_moments",
    "mp_floats",
    "mp_weighted",
    "t64",
    "weights_t",
    "to_float",
    "grad_or_none",
]

n = sp.Symbol("n", integer=True, positive=True)
i = sp.Idx("i")
U = sp.IndexedBase("u", real=True)
W = sp.IndexedBase("w", positive=True)
p = sp.Symbol("p", real=True)


def S_sum(pp: Any = p, k: int = 0, shift: Any = 0) -> sp.Sum:
    r""":math:`\sum_{i=1}^n w_i u_i^k e^{p (u_i + shift)}` as a symbolic sum over symbolic n."""
    return sp.Sum(W[i] * U[i] ** k * sp.exp(pp * (U[i] + shift)), (i, 1, n))


def concrete(nn: int) -> tuple[tuple[sp.Symbol, ...], tuple[sp.Symbol, ...]]:
    """Symbols u1..un (real) and w1..wn (positive) for a concrete n."""
    u = sp.symbols(f"u1:{nn + 1}", real=True)
    w = sp.symbols(f"w1:{nn + 1}", positive=True)
    return tuple(u), tuple(w)


def normalised(w: tuple[sp.Symbol, ...]) -> list[sp.Expr]:
    """w_i / sum w: numeric forms normalise inside the expression, because float weights never
    sum to exactly 1 and near p = 0 an excess of 1e-16 in log(sum w) is divided by p (or p^2)."""
    tot = sum(w)
    return [wi / tot for wi in w]


class PerN:
    """Lazily builds, per concrete n, a sympy expression and its mpmath lambdification.

    ``builder(n)`` returns ``(args, expr)`` where ``expr`` may be a list (one entry per
    output). Built inside one derivation run and discarded with it: nothing is cached
    between runs of ``hmpo verify``.
    """

    def __init__(self, builder: Callable[[int], tuple[Sequence[Any], Any]]) -> None:
        self.builder = builder
        self._fn: dict[int, Callable[..., Any]] = {}
        self._expr: dict[int, Any] = {}

    def expr(self, nn: int) -> Any:
        if nn not in self._expr:
            args, e = self.builder(nn)
            self._expr[nn] = (args, e)
        return self._expr[nn]

    def __call__(self, nn: int) -> Callable[..., Any]:
        if nn not in self._fn:
            args, e = self.expr(nn)
            self._fn[nn] = sp.lambdify(args, e, modules="mpmath")
        return self._fn[nn]


def dps_for(pv: float, base: int = 40, power: int = 1) -> int:
    """Working digits: ``base`` plus the digits lost to ``1/|p|^power`` cancellation."""
    if pv == 0 or not math.isfinite(pv) or abs(pv) >= 1:
        return base
    return base + power * int(math.ceil(-math.log10(abs(pv)))) + 5


def mp_eval(fn: Callable[..., Any], args: Sequence[Any], dps: int = 40) -> Any:
    """Evaluate a lambdified form at ``dps`` digits on float inputs; mpf (or list of mpf) out."""
    with mpmath.workdps(dps):
        conv = [_mp(a) for a in args]
        return fn(*conv)


def _mp(a: Any) -> Any:
    if isinstance(a, np.ndarray | list | tuple):
        return [_mp(x) for x in a]
    return mpmath.mpf(float(a))


def mp_floats(fn: Callable[..., Any], args: Sequence[Any], dps: int = 40) -> np.ndarray:
    """A vector-valued lambdified form evaluated by :func:`mp_eval`, rounded to a float64 array."""
    return np.array([float(v) for v in mp_eval(fn, args, dps)])


def mp_weighted(u: Sequence[float], w: Sequence[float]) -> tuple[list[Any], list[Any]]:
    """u and w as mpf at the current mpmath precision, w normalised to sum 1 (in that precision)."""
    us = [mpmath.mpf(float(x)) for x in u]
    ws = [mpmath.mpf(float(x)) for x in w]
    tot = mpmath.fsum(ws)
    return us, [x / tot for x in ws]


def mp_moments(u: np.ndarray, w: np.ndarray, kmax: int, dps: int = 40) -> list[Any]:
    """Raw weighted moments m_1..m_kmax of u (weights normalised), in mpmath."""
    with mpmath.workdps(dps):
        us, ws = mp_weighted(u, w)
        return [mpmath.fsum(wi * ui**k for ui, wi in zip(us, ws)) for k in range(1, kmax + 1)]


def t64(x: Any, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(np.asarray(x, dtype=np.float64), dtype=torch.float64, requires_grad=requires_grad)


def weights_t(w: np.ndarray | None) -> torch.Tensor | None:
    """Optional weights as a float64 tensor (None stays None: uniform weights)."""
    return None if w is None else t64(w)


def grad_or_none(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
    """dy/dx by autograd, None where y does not depend on x (a check then reports an infinite error)."""
    (g,) = torch.autograd.grad(y, x, allow_unused=True)
    return g


def to_float(x: Any) -> float:
    if isinstance(x, torch.Tensor):
        return float(x.detach().double())
    return float(x)

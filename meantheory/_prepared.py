"""Prepared inputs of the power-mean functions: validated, in the compute dtype, the reduced
dimension last, with the support and the quantities derived from it computed once.

The support of a row is its entries with ``mask`` True and positive weight; everything
else is outside it and may hold anything (NaN, -inf, garbage): it is replaced before any
arithmetic. See the module docstring of :mod:`meantheory.power_mean` for the conventions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

from meantheory import _inputs
from meantheory._inputs import (
    Kind,
    broadcast_to,
    check_p_scalar,
    compute_dtype,
    first_index,
    kind_of,
    normalize_dim,
    to_mask,
    to_tensor,
)

__all__ = ["Prepared", "prepare", "normalised", "fill", "nonfinite"]

_INF = math.inf


def fill(t: torch.Tensor, valid: torch.Tensor | None, value: float) -> torch.Tensor:
    """``t`` on the support, ``value`` off it (``torch.where``: on a CPU about twice as fast as
    ``masked_fill``, and it needs no inverted mask)."""
    return t if valid is None else torch.where(valid, t, value)


def nonfinite(x: torch.Tensor) -> torch.Tensor:
    """``~isfinite(x)`` in two kernels (``x - x`` is 0 exactly when x is finite, NaN otherwise);
    ``torch.isfinite`` is a composite of four, which shows in the per-call cost of small rows."""
    return (x - x) != 0


def _maybe(pr: Prepared, flags: torch.Tensor) -> bool:
    """Whether any flag is set. On an accelerator with ``check=False`` asking would cost a
    device synchronisation, so the branch is computed unconditionally instead: every branch
    guarded by this must give the same result when it runs on rows that do not need it."""
    if pr.check or _inputs.free_reads(flags.device):
        return bool(flags.any())
    return True


@dataclass(frozen=True, eq=False)
class Prepared:
    """Validated inputs with the reduced dimension last.

    ``u`` is the log-value tensor as given (graph-connected; anything outside the support),
    ``valid`` the support (None when it is every entry), ``logw`` the normalised
    log-weights (-inf outside the support; None for uniform weights over the support),
    detached; ``log_weights`` the log of the raw weights with their graph, only when the
    weights require grad (the autograd function differentiates with respect to it);
    ``p`` one exponent per row (``p_float`` when p is a Python number).
    The derived quantities (support size, extremes, zeros, ...) carry no graph and are
    computed on first use.
    """

    kind: Kind
    u: torch.Tensor
    valid: torch.Tensor | None
    logw: torch.Tensor | None
    log_weights: torch.Tensor | None
    p: torch.Tensor
    p_float: float | None
    dim: int
    keepdim: bool
    check: bool

    maybe = _maybe

    @property
    def n(self) -> int:
        return self.u.shape[-1]

    @cached_property
    def nv(self) -> torch.Tensor:
        """Support size per row, in the compute dtype."""
        if self.valid is None:
            return torch.full(self.u.shape[:-1], float(self.n), dtype=self.u.dtype, device=self.u.device)
        # Summing the bytes is several times faster than a bool sum on a CPU.
        return self.valid.view(torch.uint8).sum(dim=-1, dtype=torch.int32).to(self.u.dtype)

    @cached_property
    def w(self) -> torch.Tensor:
        """Normalised weights on every entry (0 outside the support and on empty rows)."""
        if self.logw is not None:
            return torch.exp(self.logw)
        inv = (1.0 / torch.where(self.nv > 0, self.nv, 1.0)).unsqueeze(-1)
        if self.valid is None:
            return inv.expand(self.u.shape)
        return self.valid.to(self.u.dtype) * inv

    @cached_property
    def finite(self) -> torch.Tensor:
        """Support entries with a finite log-value (not a zero)."""
        with torch.no_grad():
            fin = torch.isfinite(self.u)
            return fin if self.valid is None else fin & self.valid

    @cached_property
    def is_zero(self) -> torch.Tensor:
        """Support entries that are zeros (log-value -inf)."""
        with torch.no_grad():
            z = self.u == -_INF
            return z if self.valid is None else z & self.valid

    @cached_property
    def has_zero(self) -> torch.Tensor:
        return self.is_zero.any(dim=-1)

    @cached_property
    def empty(self) -> torch.Tensor:
        """Rows with an empty support."""
        return self.nv == 0

    @cached_property
    def no_finite(self) -> torch.Tensor:
        return ~self.finite.any(dim=-1)

    @cached_property
    def u_max(self) -> torch.Tensor:
        """Max of u over the finite support (-inf if none)."""
        with torch.no_grad():
            return torch.where(self.finite, self.u, -_INF).amax(dim=-1)

    @cached_property
    def u_min(self) -> torch.Tensor:
        """Min of u over the finite support (+inf if none)."""
        with torch.no_grad():
            return torch.where(self.finite, self.u, _INF).amin(dim=-1)

    @cached_property
    def spread(self) -> torch.Tensor:
        """max - min of u over the finite support (0 if none)."""
        d = self.u_max - self.u_min
        return torch.where(self.no_finite, torch.zeros_like(d), d)

    def u_s(self, u: torch.Tensor | None = None) -> torch.Tensor:
        """u on the finite support, 0 elsewhere; differentiable in ``u`` (default: self.u)."""
        u = self.u if u is None else u
        return torch.where(self.finite, u, torch.zeros((), dtype=u.dtype, device=u.device))

    def finish(self, out: torch.Tensor, *, per_entry: bool = False) -> torch.Tensor:
        """Move the reduced dimension back (per-entry results), or keep it with size 1."""
        if per_entry:
            return out.movedim(-1, self.dim)
        return out.unsqueeze(self.dim) if self.keepdim else out


def _weights(w_in: torch.Tensor, shape: torch.Size, valid: torch.Tensor | None, d: int, check: bool):
    """Support, normalised log-weights (detached) and the log of the raw weights (with their
    graph) of weights broadcast to ``shape``."""
    w_b = broadcast_to(w_in, shape, "weights", "input")
    if check:
        bad = ~(torch.isfinite(w_b) & (w_b >= 0))
        if valid is not None:
            bad = bad & valid
        if bool(bad.any()):
            idx = first_index(bad)
            raise ValueError(f"weights: must be finite and non-negative; got {w_b[idx].item()} at index {idx}")
    support = w_b > 0
    if valid is not None:
        support = support & valid
    if check:
        some = support.any(dim=d)
        # a row with entries, all of them weighted 0 (a row of length 0 is merely empty)
        had = torch.full_like(some, shape[d] > 0) if valid is None else valid.any(dim=d)
        empty_w = had & ~some
        if bool(empty_w.any()):
            raise ValueError(f"weights: all weights of a row are zero (first such row {first_index(empty_w)})")
    one = torch.ones((), dtype=w_b.dtype, device=w_b.device)
    # log of the positive weights only, so that d log w / dw = 1/w is never evaluated at 0.
    lw = torch.where(support, torch.log(torch.where(support, w_b, one)), -_INF)
    with torch.no_grad():
        logw = normalised(lw, d)
    return support, logw, (lw if lw.requires_grad else None)


def normalised(log_weights: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Log-weights minus their log-sum along ``dim`` (a row without weights is left as is);
    differentiable."""
    norm = torch.logsumexp(log_weights, dim=dim, keepdim=True)
    return log_weights - torch.where(torch.isfinite(norm), norm, torch.zeros_like(norm))


def _per_row_p(p_t: torch.Tensor, shape: torch.Size, d: int) -> torch.Tensor:
    """p broadcast to the reduced shape, or from the input's shape with the reduced dim kept."""
    reduced = shape[:d] + shape[d + 1 :]
    try:
        return torch.broadcast_to(p_t, reduced)
    except RuntimeError:
        keep_shape = list(shape)
        keep_shape[d] = 1
        try:
            return torch.broadcast_to(p_t, torch.Size(keep_shape)).movedim(d, -1).squeeze(-1)
        except RuntimeError as exc:
            raise ValueError(
                f"p: shape {tuple(p_t.shape)} does not broadcast to the reduced shape {tuple(reduced)}"
            ) from exc


def prepare(
    log_x: Any,
    p: Any,
    dim: int,
    weights: Any,
    mask: Any,
    keepdim: bool,
    check: bool,
    *,
    name: str = "log_x",
) -> Prepared:
    """Validate and convert the arguments of the public functions (see log_power_mean)."""
    kind = kind_of(log_x, weights)
    u = to_tensor(log_x, name)
    w_in = None if weights is None else to_tensor(weights, "weights")
    p_float: float | None = None
    p_t = None
    if isinstance(p, bool):
        raise ValueError("p: expected a real number or tensor, got a bool")
    if isinstance(p, int | float):
        p_float = float(p)
        check_p_scalar(p_float)
    else:
        p_t = to_tensor(p, "p")
    dtype = compute_dtype(u.dtype, None if w_in is None else w_in.dtype, None if p_t is None else p_t.dtype)
    if p_float is not None and dtype == torch.float32:
        # p as the arithmetic will see it: every decision (p == 0, |p| >= 1/2) then agrees
        # with it (in float32, 1e-300 is 0: the geometric mean, not NaN from -inf * 0).
        # Rounded in numpy: no tensor, so nothing that could synchronise a device.
        with np.errstate(over="ignore"):
            p_float = float(np.float32(p_float))
    u = u.to(dtype)
    d = normalize_dim(dim, u.ndim)
    shape = u.shape
    device = u.device
    valid = to_mask(mask, shape, device)

    logw = log_weights = None
    if w_in is not None:
        valid, logw, log_weights = _weights(w_in.to(device=device, dtype=dtype), shape, valid, d, check)

    if check:
        # NaN and +inf are exactly the values that fail u < inf.
        bad = ~(u < _INF)
        if valid is not None:
            bad = bad & valid
        if bool(bad.any()):
            idx = first_index(bad)
            what = "NaN" if torch.isnan(u[idx]) else "+inf"
            raise ValueError(f"{name}: {what} at unmasked index {idx}; only finite values or -inf (a zero) are allowed")

    if p_t is None:
        p_b = torch.full(shape[:d] + shape[d + 1 :], p_float, dtype=dtype, device=device)
    else:
        p_b = _per_row_p(p_t.to(device=device, dtype=dtype), shape, d)
        if check and bool(torch.isnan(p_b).any()):
            raise ValueError(f"p: NaN at index {first_index(torch.isnan(p_b))}")

    def last(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.movedim(d, -1)

    return Prepared(kind=kind, u=u.movedim(d, -1), valid=last(valid), logw=last(logw), log_weights=last(log_weights),
                    p=p_b, p_float=p_float, dim=d, keepdim=keepdim, check=check)

r"""The PPO clip in log space: one function returns the clipped log-ratio and which clip acted.

For a log-ratio ``x`` (a token's ``l_t``, or a sequence's ``log s``) and its advantage ``A``, the
clipped surrogate ``-min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)`` with ``r = e^x`` equals
``-A exp(x_eff)`` with

.. math::

    x_{eff} = \begin{cases} \min(x,\ hi) & A \ge 0 \\ \min(\max(x,\ lo),\ \log c) & A < 0 \end{cases}
    \qquad [lo, hi] = [\log(1 - \epsilon_{low}),\ \log(1 + \epsilon_{high})],

where ``log c`` is the dual clip (Ye et al., *Mastering Complex Control in MOBA Games with Deep
Reinforcement Learning*, AAAI 2020; verl's ``clip_ratio_c``; ``+inf`` when off), and then
``x_eff <= cap`` on both sides (the safety cap ``max_log_ratio``, so that ``exp`` never
overflows). A clamped entry has zero gradient, as the clipped branch of the PPO minimum does
(Schulman et al., *Proximal Policy Optimization Algorithms*, arXiv:1707.06347, eq. 7). ``A = 0``
takes the ``A >= 0`` side: its loss is 0 either way and ``min(x, hi)`` keeps ``exp`` finite.

The flags say which clip acted on each entry: ``low`` (``A < 0``, ``x < lo``), ``high``
(``A > 0``, ``x > hi``), ``dual`` (``A < 0``, ``x > log c``) and ``cap`` (the cap lowered the
clipped value: ``x > cap`` and the side's bound, ``hi`` or ``log c``, above the cap).

Bias-corrected centre (:func:`window_shift`): for small spread ``log M_p(r) ~ mean(l) + p Var(l)/2``
(the cumulant series of :mod:`meantheory.series`), so a window centred on 1 bites earlier on one
side when ``p != 0``; shifting ``[lo, hi]`` by ``p Var / 2`` centres it on ``exp(p Var / 2)``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["ClipFlags", "ClipShift", "ClipWindow", "clip_log_ratio", "clipped_sum", "window_shift"]

Bound = float | torch.Tensor


def real(name: str, v: Any, *, lo: float | None = None, hi: float | None = None, allow_inf: bool = False,
         strict_lo: bool = False) -> float:
    """``v`` as a float, or a ValueError naming ``name`` (bools, NaN and, unless allowed, inf are refused)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{name}: expected a real number, got {v!r}")
    v = float(v)
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name}: expected a finite number, got {v}")
    if lo is not None and (v < lo or (strict_lo and v == lo)):
        raise ValueError(f"{name}: expected a value {'>' if strict_lo else '>='} {lo}, got {v}")
    if hi is not None and v > hi:
        raise ValueError(f"{name}: expected a value <= {hi}, got {v}")
    return v


@dataclass(frozen=True)
class ClipWindow:
    """The clip bounds in log space: ``lo <= 0 <= hi``, the dual clip ``log_c > 0`` and the cap ``> 0``
    (``None``: off). Build it with :meth:`create`, which validates the user's parameters."""

    lo: float
    hi: float
    log_c: float | None = None
    cap: float | None = None

    @classmethod
    def create(cls, eps_low: Any, eps_high: Any, *, log_clip_low: Any = None, log_clip_high: Any = None,
               clip_c: Any = None, max_log_ratio: Any = None) -> ClipWindow:
        """``[lo, hi] = [log(1 - eps_low), log1p(eps_high)]`` (``eps_high=None``: ``eps_low``), or the
        explicit ``log_clip_low``/``log_clip_high``; ``log_c = log(clip_c)``; ``cap = max_log_ratio``."""
        eps_low = real("eps_low", eps_low, lo=0.0, hi=1.0)
        eps_high = eps_low if eps_high is None else real("eps_high", eps_high, lo=0.0, allow_inf=True)
        lo = math.log(1.0 - eps_low) if eps_low < 1.0 else -math.inf
        hi = math.log1p(eps_high)
        if log_clip_low is not None:
            lo = real("log_clip_low", log_clip_low, hi=0.0, allow_inf=True)
        if log_clip_high is not None:
            hi = real("log_clip_high", log_clip_high, lo=0.0, allow_inf=True)
        log_c = None
        if clip_c is not None:
            log_c = math.log(real("clip_c", clip_c, lo=1.0, strict_lo=True, allow_inf=True))
            if math.isinf(log_c):
                log_c = None
        cap = None if max_log_ratio is None else real("max_log_ratio", max_log_ratio, lo=0.0, strict_lo=True)
        return cls(lo=lo, hi=hi, log_c=log_c, cap=cap)


@dataclass(frozen=True)
class ClipFlags:
    """Which clip acted, per clipped entry (bool tensors shaped like ``x``; None: that clip cannot act)."""

    low: torch.Tensor | None
    high: torch.Tensor | None
    dual: torch.Tensor | None
    cap: torch.Tensor | None


def _full(v: Bound, like: torch.Tensor) -> torch.Tensor:
    return v.to(like.dtype) if isinstance(v, torch.Tensor) else torch.full((), v, dtype=like.dtype, device=like.device)


def _pick(neg: torch.Tensor, a: Bound, b: Bound, like: torch.Tensor) -> torch.Tensor:
    """``a`` where ``neg``, else ``b``, in ``like``'s dtype."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor) or like.dtype != torch.get_default_dtype():
        # Python numbers in torch.where become tensors of the default dtype, and a float64 bound
        # rounded to float32 would clip a float64 batch 1 ulp off: bounds of x's own dtype.
        return torch.where(neg, _full(a, like), _full(b, like))
    return torch.where(neg, a, b)


@functools.lru_cache(maxsize=256)
def _bound_tensors(lo: float, neg_hi: float, hi: float, dtype: torch.dtype, device: torch.device):
    return (torch.tensor([lo, neg_hi], dtype=dtype, device=device),
            torch.tensor([-math.inf, hi], dtype=dtype, device=device))


def _bound_pair(lo: float, neg_hi: float, hi: float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``([lo, neg_hi], [-inf, hi])`` in ``like``'s dtype and device: the (lower, upper) bounds for
    ``A < 0`` and for ``A >= 0``. Made once per window, dtype and device (each would otherwise be
    two scalar tensors per call); never written to."""
    return _bound_tensors(float(lo), float(neg_hi), float(hi), like.dtype, like.device)


def _min(v: Bound, cap: float | None) -> Bound:
    if cap is None:
        return v
    return v.clamp_max(cap) if isinstance(v, torch.Tensor) else min(v, cap)


def _is_off(v: Bound, off: float) -> bool:
    return not isinstance(v, torch.Tensor) and v == off


def clip_log_ratio(
    x: torch.Tensor,
    adv: torch.Tensor,
    *,
    lo: Bound,
    hi: Bound,
    log_c: float | None = None,
    cap: float | None = None,
    flags: bool = True,
) -> tuple[torch.Tensor, ClipFlags | None]:
    """``(x_eff, flags)``: the log-ratio inside ``-A exp(.)`` (see the module doc) and which clip acted.

    Args:
      x: log-ratios (differentiable), any shape.
      adv: advantages broadcastable to ``x`` (only their sign is read; no gradient).
      lo, hi: the window in log space; floats, or tensors broadcastable to ``x`` (a window per row).
        ``lo = -inf`` / ``hi = inf`` turn that side off.
      log_c: the dual clip ``log c`` for ``A < 0`` (None: off); cap: the safety cap (None: off).
      flags: False to skip the flags (they are then None).

    One clamp with per-entry bounds chosen by the sign of ``A`` (the bounds carry no gradient).
    """
    neg = adv < 0
    lower, upper = _bounds(neg, lo, hi, log_c, cap, x)
    x_eff = torch.clamp(x, min=lower, max=upper)
    if not flags:
        return x_eff, None
    if _flags_from_shift(lo, hi, log_c, cap):
        xd, xe = x.detach(), x_eff.detach()
        down = xe < xd
        return x_eff, ClipFlags(low=None if lo == -math.inf else xe > xd,
                                high=None if hi == math.inf else down & (adv > 0), dual=None,
                                cap=None if cap is None else down & neg)
    return x_eff, _flags(x, lower, neg, adv, lo=lo, hi=hi, log_c=log_c, cap=cap)


def _bounds(neg: torch.Tensor, lo: Bound, hi: Bound, log_c: float | None, cap: float | None,
            x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The clamp's ``(lower, upper)`` per entry, chosen by the sign of ``A`` (``neg``: ``A < 0``), in
    ``x``'s dtype: ``[lo, min(log c, cap)]`` for ``A < 0``, ``[-inf, min(hi, cap)]`` otherwise."""
    c = math.inf if log_c is None else log_c
    if isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor):
        return _pick(neg, lo, -math.inf, x), _pick(neg, _min(c, cap), _min(hi, cap), x)
    if neg.ndim == 1 and x.dtype == torch.get_default_dtype():
        # one bound per row: two wheres over Python numbers (of x's dtype: the default) cost
        # fewer kernels than the [B, 2] where and its two column views below
        return torch.where(neg, lo, -math.inf), torch.where(neg, _min(c, cap), _min(hi, cap))
    # float bounds: both rows of bounds from one where over a (cached) [2, 2] constant
    bounds = torch.where(neg.unsqueeze(-1), *_bound_pair(lo, _min(c, cap), _min(hi, cap), x))
    return bounds[..., 0], bounds[..., 1]


def _flags_from_shift(lo: Bound, hi: Bound, log_c: float | None, cap: float | None) -> bool:
    """Whether the flags follow from the sign of the clamp's shift ``x_eff - x`` (and of ``A``).

    With a float window, no dual clip and the cap at or above ``hi``, the clamp raised ``x``
    exactly where the low clip acted (``A < 0``, ``x < lo``) and lowered it exactly where the
    high clip (``A > 0``, ``x > hi``; ``A = 0`` is lowered by no flag's clip) or the cap
    (``A < 0``, ``x > cap``) did. Elsewhere (a dual clip, a cap below ``hi``, a window per row)
    each flag is its own comparison (:func:`_flags`). This is the one place that decides it, for
    the flags computed on the device (:func:`clip_log_ratio`) and on the host
    (:meth:`ClipShift.fractions`)."""
    return (not isinstance(lo, torch.Tensor) and not isinstance(hi, torch.Tensor) and log_c is None
            and (cap is None or hi <= cap))


@torch.no_grad()
def _flags(x: torch.Tensor, lower: torch.Tensor, neg: torch.Tensor, adv: torch.Tensor, *, lo: Bound, hi: Bound,
           log_c: float | None, cap: float | None) -> ClipFlags:
    """Each clip's flag by its own comparison (the general case of :func:`_flags_from_shift`)."""
    c = math.inf if log_c is None else log_c
    xd = x.detach()
    # The dual clip and the cap act on the value after the low clip; a float lo <= 0 is below
    # both, but a shifted (tensor) window can in principle lie above them.
    xl = torch.maximum(xd, lower) if isinstance(lo, torch.Tensor) else xd
    low = None if _is_off(lo, -math.inf) else neg & (xd < lo)
    high = None if _is_off(hi, math.inf) else (adv > 0) & (xd > hi)
    dual = None if log_c is None else neg & (xl > log_c)
    capped = None if cap is None else _cap_flag(xl, neg, cap, c, hi)
    return ClipFlags(low=low, high=high, dual=dual, cap=capped)


@dataclass(frozen=True)
class ClipShift:
    """The clamp's shift ``delta = x_eff - x`` [B] and the advantages [B] of a :func:`clipped_sum`
    whose flags follow from the shift (:func:`_flags_from_shift`); the metrics read both with their
    other rows and count the flags on the host (:meth:`fractions`), no kernel per flag.
    ``low``/``high``/``cap``: whether that clip can act at all (a side at ``+-inf`` cannot)."""

    delta: torch.Tensor
    adv: torch.Tensor
    low: bool
    high: bool
    cap: bool

    def names(self) -> tuple[str, ...]:
        """The flag fractions this record feeds."""
        return tuple(n for n, on in (("clip_frac_low", self.low), ("clip_frac_high", self.high),
                                     ("clip_frac_cap", self.cap)) if on)

    @staticmethod
    def fractions(delta: np.ndarray, adv: np.ndarray, weight: np.ndarray | None,
                  names: tuple[str, ...]) -> dict[str, float]:
        """Each flag's weighted fraction, ``sum_i w_i f_i / sum_i w_i``, from the host copies of the
        rows (``weight``: its tokens ``n_i`` per sequence, or None for 1 each; rows with weight 0
        count nowhere).

        The same rule as the device flags of :func:`clip_log_ratio`: raised (``delta > 0``) is the
        low clip; lowered (``delta < 0``) is the high clip where ``A > 0`` and the cap where
        ``A < 0``. A NaN shift is no flag (as a comparison with NaN is False)."""
        down = delta < 0
        if weight is None:
            total = float(delta.shape[0])
            count = {"clip_frac_low": lambda: np.count_nonzero(delta > 0),
                     "clip_frac_high": lambda: np.count_nonzero(down & (adv > 0)),
                     "clip_frac_cap": lambda: np.count_nonzero(down & (adv < 0))}
        else:
            total = float(weight.sum())
            w_down = weight * down
            count = {"clip_frac_low": lambda: np.dot(weight, delta > 0),
                     "clip_frac_high": lambda: np.dot(w_down, adv > 0),
                     "clip_frac_cap": lambda: np.dot(w_down, adv < 0)}
        return {n: float(count[n]()) / total for n in names}


class _ClippedSum(torch.autograd.Function):
    """``sum_i coef_i exp(clamp(x_i, lower_i, upper_i))`` with its gradient in ``x`` (one autograd node)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, coef: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor):  # type: ignore[override]
        x_eff = torch.clamp(x, min=lower, max=upper)
        t = torch.exp(x_eff).mul_(coef)
        # d/dx of the clamp is 1 where it let x through (x_eff == x: also at a bound, as torch's
        # clamp), 0 where it acted and where x is NaN
        ctx.save_for_backward(x, coef, lower, upper, torch.where(x_eff == x, t, 0.0))
        ctx.mark_non_differentiable(x_eff)
        return t.sum(), x_eff

    @staticmethod
    def backward(ctx, g: torch.Tensor, _g_eff):  # type: ignore[override]
        x, coef, lower, upper, t_kept = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the same, as differentiable operations of x
            keep = torch.clamp(x.detach(), min=lower, max=upper) == x.detach()
            # exp of the clamped value: finite where the where discards it (no 0 * inf in the graph)
            return torch.where(keep, g * coef * torch.exp(torch.clamp(x, min=lower, max=upper)), 0.0), None, None, None
        return t_kept * g, None, None, None


def clipped_sum(
    x: torch.Tensor,
    adv: torch.Tensor,
    coef: torch.Tensor,
    *,
    lo: Bound,
    hi: Bound,
    log_c: float | None = None,
    cap: float | None = None,
    flags: bool = True,
) -> tuple[torch.Tensor, ClipFlags | ClipShift | None]:
    r"""``(sum_i coef_i exp(x_eff_i), flags)``: the clipped surrogate of one log-ratio per row, summed.

    ``x_eff`` is :func:`clip_log_ratio`'s (module doc), ``coef_i = -w_i A_i`` (``w`` the rows'
    aggregation weights), so the sum is the aggregated PPO term ``sum_i w_i (-min(r_i A_i,
    clip(r_i) A_i))``. Gradient in ``x``: ``coef_i exp(x_eff_i)`` where the clamp let ``x_i``
    through, 0 where it acted (as the clipped branch of the PPO minimum); none in ``coef``
    (advantages and weights are constants). Double backward is supported.

    Why one function: as one autograd node the clamp, ``exp``, the product and the sum cost one
    kernel in the backward instead of about ten (the backward of a clamp with per-row bounds alone
    is five on a CPU, where each small kernel costs as much as a pass over a row of tokens).

    ``flags``: a :class:`ClipShift` (counted on the host) where the flags follow from the shift
    (:func:`_flags_from_shift`), else :class:`ClipFlags`; None when ``flags`` is False.
    """
    neg = adv < 0
    lower, upper = _bounds(neg, lo, hi, log_c, cap, x)
    total, x_eff = _ClippedSum.apply(x, coef.detach(), lower, upper)
    if not flags:
        return total, None
    if _flags_from_shift(lo, hi, log_c, cap):
        return total, ClipShift(delta=x_eff - x.detach(), adv=adv, low=lo != -math.inf, high=hi != math.inf,
                                cap=cap is not None)
    return total, _flags(x, lower, neg, adv, lo=lo, hi=hi, log_c=log_c, cap=cap)


def _cap_flag(xl: torch.Tensor, neg: torch.Tensor, cap: float, c: float, hi: Bound) -> torch.Tensor | None:
    """``xl > cap`` where the side's bound (``c = log c`` for A < 0, ``hi`` otherwise) lies above the
    cap; with float bounds the sides are known without a comparison per entry (None: the cap cannot act)."""
    if isinstance(hi, torch.Tensor):
        return (xl > cap) & (_pick(neg, c, hi, xl) > cap)
    neg_side = c > cap
    pos_side = hi > cap
    if neg_side and pos_side:
        return xl > cap
    if neg_side:
        return neg & (xl > cap)
    if pos_side:
        return ~neg & (xl > cap)
    return None


@torch.no_grad()
def window_shift(ls: torch.Tensor, mask: torch.Tensor, n: torch.Tensor, p: Any) -> torch.Tensor:
    """The bias-corrected centre's shift ``p_i Var_i / 2`` [B] (detached; 0 where it is not finite).

    ``ls``: token log-ratios [B, T], 0 on padding; ``n``: tokens per row [B]; ``p``: a float or
    a tensor (0-d or [B]). ``Var_i`` is the population variance of row i's token log-ratios.
    """
    n1 = n.clamp(min=1.0)
    mu = ls.sum(-1, keepdim=True) / n1.unsqueeze(-1)
    var = torch.where(mask, (ls - mu) ** 2, 0.0).sum(-1) / n1
    pv = p.detach().to(ls.dtype) if isinstance(p, torch.Tensor) else float(p)
    return (pv * var / 2).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)

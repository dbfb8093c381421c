r"""The power mean of masked rows that a caller already holds zero-filled: the fast path.

A policy loss holds, for every row (a sequence), the log-values ``u`` (token log-ratios, with
their graph; anything on padding), the mask, the mask as 0/1 numbers, the support sizes ``n``
and a copy of ``u`` with 0 on padding (:class:`MaskedRows`): it needs all of them anyway. For
a Python exponent with ``|p| >= EXP_FORM_P`` (the one-pass direct form of
:mod:`meantheory._kernel`, the only form the kernel uses there without a p-gradient)
:func:`masked_log_power_mean` evaluates

.. math:: \log M_p = c + \frac1p \log\Big(\frac1n \sum_i m_i e^{p (u_i - c)}\Big)

from the zero-filled copy, with no ``-inf`` anywhere: ``c`` is the row's max of the
zero-filled copy for ``p > 0`` (its min for ``p < 0``), which is at least (at most) the
support's extreme, so every exponent, on padding too, is ``<= 0`` and nothing overflows; the
mask, as 0/1, multiplies the exponentials. This is the same computation as the kernel's
one-pass form except for the shift, and the shift cancels exactly in exact arithmetic.

Why: on a CPU ``exp`` of ``-inf`` (the kernel's masked exponents) takes a slow path, twice the
time of a finite argument, and ``where`` with a bool mask costs four times a multiplication;
this form has neither. On a row of a loss (B = 64, T = 1024, float32, one thread) the forward
and backward of the mean go from about 200 us to 100 us (benchmarks/bench_losses.py).

Accuracy: the sum's largest term is ``e^{p (u_max - c)}``, 1 when ``c`` is the support's
extreme. ``c`` differs from it only on a row with padding whose support lies entirely on one
side of 0. There every exponent is shifted by ``p c - p u_max``, which adds ``|p (u_max - c)|
eps`` to the relative rounding error of each exponential (``p (u - c)`` is rounded, then
exponentiated), and a large shift would drive the sum to the subnormal range. The largest
exponential of the row, exactly 1 with the exact shift, measures it: a row whose largest
exponential is below :data:`MIN_LARGEST_TERM` (1/2) is recomputed with the exact extreme of its
support, found from the bool mask, so no row carries more than ``ln 2`` eps of extra error.
(The largest terms are looked at only where some row's mean term, which the value needs
anyway, is below 1/2: a mean of at least 1/2 implies a largest term of at least 1/2.)
On a CPU that test is one read; on an accelerator, where a read synchronises the device, the
exact extreme is used for every row from the start (``_cheap_shift``), and the exponents on
padding are clamped to 0 before they are masked.

Gradient: ``d log M_p / d u_i = pi_i = m_i e^{z_i} / sum_j m_j e^{z_j}`` (the softmax form,
:mod:`meantheory._closed_forms`), from the exponentials the forward kept; 0 on padding and on
empty rows. A backward that builds a graph (``create_graph=True``) recomputes the weights
from ``u`` with differentiable operations (masked before the arithmetic), so double backward
is exact. The record also answers ``sum_i pi_i^2`` (the token-weight ESS of a loss is
``1 / (n sum pi^2)``) from the same exponentials: ``sum e^{2z} / (sum e^z)^2``.

Domain: uniform weights on the support; ``u`` finite on the support (a zero, ``-inf``, and
NaN are for :func:`meantheory.log_power_mean`, which checks and handles them; nothing here
checks values). An empty row gives NaN (the convention of :func:`log_power_mean`), gradient 0.
Every path is held against the mpmath oracle in ``tests/meantheory/test_paths.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from meantheory import _inputs
from meantheory._kernel import EXP_FORM_P

__all__ = ["MIN_LARGEST_TERM", "MaskedPowerMean", "MaskedRows", "masked_fast_path", "masked_log_power_mean"]


#: The smallest largest exponential ``max_i m_i e^{z_i}`` of a row accepted from the cheap shift.
#: With the exact shift it is exactly 1 (``e^0``); below 1/2 the shift is more than ``ln 2 / |p|``
#: off the support's extreme and the row is recomputed with the exact one. Above it the
#: exponents are within ``ln 2`` of the exact shift's, so each exponential carries at most
#: ``ln 2`` eps more relative error (from rounding ``p (u - c)``) and the sum is at least 1/2:
#: far from the subnormal range.
MIN_LARGEST_TERM = 0.5


@dataclass(frozen=True, eq=False)
class MaskedRows:
    """Rows ``[B, n]`` with a support mask, as their caller holds them (see the module doc).

    ``mask`` bool (True = support); ``ones`` the mask as 1/0 in the compute dtype; ``count``
    ``[B]`` support sizes in the compute dtype; ``filled`` the log-values with 0 off the
    support, detached; ``nonempty`` (``count > 0``) when the caller holds it, and
    ``every_row_nonempty`` when it knows that every row has support. Build it with :meth:`of`
    unless the pieces are at hand.
    """

    mask: torch.Tensor
    ones: torch.Tensor
    count: torch.Tensor
    filled: torch.Tensor
    nonempty: torch.Tensor | None = None
    every_row_nonempty: bool = False  # the caller knows that no row is empty

    def rows_with_support(self) -> torch.Tensor:
        """``count > 0`` [B]."""
        return self.count > 0 if self.nonempty is None else self.nonempty

    @classmethod
    def of(cls, u: torch.Tensor, mask: torch.Tensor) -> MaskedRows:
        """The pieces of ``u`` [B, n] (float32/float64) under the bool ``mask`` [B, n]."""
        if not isinstance(u, torch.Tensor) or u.dtype not in (torch.float32, torch.float64) or u.ndim != 2:
            raise ValueError(f"u: expected a float32 or float64 [B, n] tensor, got {getattr(u, 'dtype', type(u))}")
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != u.shape:
            raise ValueError(f"mask: expected a bool tensor of shape {tuple(u.shape)}")
        ones = mask.view(torch.uint8).to(u.dtype)
        with torch.no_grad():
            filled = torch.where(mask, u, 0.0)
        return cls(mask=mask, ones=ones, count=ones.sum(-1), filled=filled)


def masked_fast_path(p: object) -> bool:
    """Whether :func:`masked_log_power_mean` evaluates exponent ``p``: a Python number, finite,
    ``|p| >= EXP_FORM_P`` (where the kernel's one-pass direct form applies)."""
    return (isinstance(p, int | float) and not isinstance(p, bool) and math.isfinite(p)
            and abs(p) >= EXP_FORM_P)


def _cheap_shift(device: torch.device) -> bool:
    """Shift by the zero-filled extreme and test the largest terms (one read: where reads are
    free, a CPU); elsewhere the exact extreme from the start."""
    return _inputs.free_reads(device)


@dataclass(frozen=True, eq=False)
class MaskedPowerMean:
    """What :func:`masked_log_power_mean` answers: ``value`` [B] (log M_p, differentiable in ``u``;
    NaN for an empty row) and, from the forward's exponentials, the weights on demand."""

    value: torch.Tensor
    e: torch.Tensor  # m_i e^{z_i} [B, n], detached (0 on padding)
    e_sum: torch.Tensor  # its row sums, MIN_LARGEST_TERM on empty rows (a safe divisor)

    def weights(self) -> torch.Tensor:
        """``pi = d log M_p / d u`` [B, n], detached (0 on padding and on empty rows)."""
        return self.e / self.e_sum.unsqueeze(-1)

    def sum_sq_weights(self) -> torch.Tensor:
        """``sum_i pi_i^2`` [B] (0 for an empty row): the loss's token-weight ESS is ``1 / (n sum pi^2)``."""
        return torch.linalg.vector_norm(self.e, dim=-1).div_(self.e_sum).square_()


def _exponentials(filled: torch.Tensor, ones: torch.Tensor, shift: torch.Tensor, pf: float,
                  clamp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m e^{p (u - c)}, row sums)``; ``clamp``: exponents on padding may be > 0 (an exact shift)."""
    c = shift.unsqueeze(-1)
    # p = +-1: the product is exact, so it is left out (p u - p c as u - c or c - u, one kernel)
    z = filled - c if pf == 1.0 else c - filled if pf == -1.0 else (filled - c).mul_(pf)
    if clamp:
        z = z.clamp_max_(0.0)  # only padding can exceed 0: its exponential is masked anyway
    e = torch.exp_(z).mul_(ones)
    return e, e.sum(-1)


def _exact_shift(rows: MaskedRows, plus: bool) -> torch.Tensor:
    """The support's max (p > 0) or min (p < 0) per row; 0 for an empty row."""
    ext = torch.where(rows.mask, rows.filled, -math.inf if plus else math.inf)
    m = ext.amax(-1) if plus else ext.amin(-1)
    return torch.where(rows.rows_with_support(), m, 0.0)


def _forward(rows: MaskedRows, pf: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(value, e, safe e_sum)`` without a graph."""
    plus = pf > 0
    filled = rows.filled
    if _cheap_shift(filled.device):
        shift = filled.amax(-1) if plus else filled.amin(-1)
        e, e_sum = _exponentials(filled, rows.ones, shift, pf, clamp=False)
        mean = e_sum / rows.count
        # One read: a row whose mean term is >= 1/2 has a largest term >= 1/2; only where some
        # row's is not (or is NaN: an empty row) are the largest terms themselves looked at.
        if not mean.amin().item() >= MIN_LARGEST_TERM:
            low = (e.amax(-1) < MIN_LARGEST_TERM) & rows.rows_with_support()
            if bool(low.any()):  # rare: a padded row whose support lies below -ln 2 / p (p > 0; mirrored for p < 0)
                shift = torch.where(low, _exact_shift(rows, plus), shift)
                e, e_sum = _exponentials(filled, rows.ones, shift, pf, clamp=True)
                mean = e_sum / rows.count
    else:
        shift = _exact_shift(rows, plus)
        e, e_sum = _exponentials(filled, rows.ones, shift, pf, clamp=True)
        mean = e_sum / rows.count
    # log(0 / 0) = NaN for an empty row, the convention of log_power_mean
    lse = torch.log_(mean)
    value = lse.add_(shift) if pf == 1.0 else torch.sub(shift, lse) if pf == -1.0 else lse.div_(pf).add_(shift)
    # Every other row's sum is at least its largest term, >= MIN_LARGEST_TERM (1 with the exact
    # shift): the clamp changes only empty rows (sum 0), into a safe divisor.
    return value, e, e_sum.clamp_min_(MIN_LARGEST_TERM)


class _MaskedPowerMeanFn(torch.autograd.Function):
    """log M_p of zero-filled masked rows with the softmax-form backward."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, rows: MaskedRows, pf: float):  # type: ignore[override]
        value, e, e_sum = _forward(rows, pf)
        ctx.rows, ctx.pf = rows, pf
        ctx.save_for_backward(u, e, e_sum)
        ctx.mark_non_differentiable(e, e_sum)
        ctx.set_materialize_grads(False)  # e and e_sum get no gradient: no zero tensors for them
        return value, e, e_sum

    @staticmethod
    def backward(ctx, g: torch.Tensor, _ge, _gs):  # type: ignore[override]
        if g is None:  # the value was not used
            return None, None, None
        u, e, e_sum = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph: the weights as a differentiable function of u (masked before the
            # arithmetic, so padding passes no NaN); the shift is any constant of the row.
            rows: MaskedRows = ctx.rows
            m = rows.mask
            with torch.no_grad():
                c = _exact_shift(rows, ctx.pf > 0)
            z = torch.where(m, (torch.where(m, u, 0.0) - c.unsqueeze(-1)) * ctx.pf, -math.inf)
            ez = torch.exp(z)
            s = ez.sum(-1)
            pi = ez / torch.where(s > 0, s, 1.0).unsqueeze(-1)
            return pi * g.unsqueeze(-1), None, None
        return e * (g / e_sum).unsqueeze(-1), None, None


def masked_log_power_mean(u: torch.Tensor, p: float, rows: MaskedRows) -> MaskedPowerMean:
    r"""``log M_p`` of each row of ``u`` [B, n] over ``rows``' support, for a Python ``p`` with
    ``masked_fast_path(p)`` (see the module doc for the formula, domain and accuracy).

    ``u`` carries the graph (anything on padding); ``rows.filled`` must equal ``u`` on the
    support. In float32, ``p`` is rounded to float32 first, as :func:`log_power_mean` does.
    Raises ValueError for an exponent outside the fast path.
    """
    if not masked_fast_path(p):
        raise ValueError(f"p: the masked fast path needs a finite Python p with |p| >= {EXP_FORM_P}, got {p!r}")
    pf = float(p)
    if u.dtype == torch.float32:
        pf = float(np.float32(pf))
    value, e, e_sum = _MaskedPowerMeanFn.apply(u, rows, pf)
    return MaskedPowerMean(value=value, e=e, e_sum=e_sum)

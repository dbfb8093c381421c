r"""One call's tensors for the policy loss: validated, in the compute dtype, and their value checks.

:func:`prepare` checks types and shapes (``logp``, ``old_logp``, ``mask`` ``[B, T]``; advantages
``[B]`` or ``[B, T]``; ``ref_logp``, ``entropy`` ``[B, T]``), resolves p for this batch and
forms the token log-ratios ``l = logp - old_logp`` in the compute dtype (float32, or float64
when any input is float64: float16/bfloat16 are computed in float32). The derived tensors
(masked log-ratios, their row sums, the advantages per sequence and per token) are computed on
first use, once.

:func:`value_checks` builds the value checks as 0-d values without reading them: the caller reads
them together with the metrics in one device synchronisation. A value is a masked sum the loss
or its metrics need anyway (a NaN or inf on an unmasked entry makes it NaN or inf), or a count
of offending entries; a check that may have failed is confirmed by locating the offending entry,
so a sum that overflows from finite values is no error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from meantheory import MaskedRows, _inputs
from meantheory._inputs import first_index
from rl.losses.config import LossConfig
from rl.losses.learnable import LearnablePowerMean

__all__ = ["Batch", "ValueCheck", "prepare", "raise_failed", "value_checks"]


@dataclass(frozen=True, eq=False)
class Batch:
    """The validated tensors of one call (compute dtype; ``old_logp``, ``adv``, ``ref_logp`` detached)."""

    logp: torch.Tensor  # [B, T], the graph to the caller's logp
    old_logp: torch.Tensor  # [B, T]
    l: torch.Tensor  # [B, T] logp - old_logp; padding may hold anything
    mask: torch.Tensor  # [B, T] bool
    mask_f: torch.Tensor  # [B, T] the mask as 1/0 in the compute dtype
    n: torch.Tensor  # [B] tokens per sequence
    adv: torch.Tensor  # [B] or [B, T]
    p: Any  # a float or a tensor ([] or [B]); a LearnablePowerMean is resolved on this mask
    ref_logp: torch.Tensor | None
    entropy: torch.Tensor | None

    @property
    def T(self) -> int:
        return self.l.shape[-1]

    @property
    def per_token_adv(self) -> bool:
        return self.adv.ndim == 2

    @cached_property
    def nonempty(self) -> torch.Tensor:
        return self.n > 0

    @cached_property
    def n1(self) -> torch.Tensor:
        """Tokens per sequence, at least 1 (the divisor of a mean that is 0 for an empty row)."""
        return self.n.clamp(min=1.0)

    @cached_property
    def n_seq(self) -> torch.Tensor:
        """Sequences with tokens (0-d, compute dtype)."""
        return self.nonempty.sum(dtype=self.n.dtype)

    @cached_property
    def n_tok(self) -> torch.Tensor:
        """Unmasked tokens (0-d, compute dtype)."""
        return self.n.sum()

    @cached_property
    def l_finite(self) -> bool | None:
        """Whether every entry of ``l``, padding included, is finite (one sum, read at once); None
        off the CPU, where the read would synchronise the device (then it is not asked)."""
        if not _inputs.free_reads(self.l.device):
            return None
        return math.isfinite(self.l.detach().sum().item())  # a sum that overflows says False: safe

    @cached_property
    def ls(self) -> torch.Tensor:
        """``l`` with 0 on padding (differentiable). Where every entry is known finite, the product
        with the 0/1 mask (exact there; on a CPU a quarter of the time of a bool ``where``, in the
        forward and again in the backward); otherwise ``where``, so that NaN on padding stays out."""
        return self.l * self.mask_f if self.l_finite else torch.where(self.mask, self.l, 0.0)

    @cached_property
    def rows(self) -> MaskedRows:
        """``l``'s :class:`meantheory.MaskedRows` (for the masked fast path of the power mean)."""
        every = self.every_row_nonempty
        # where every row has tokens the fast path asks for ``n > 0`` only on a rare branch: not formed here
        return MaskedRows(mask=self.mask, ones=self.mask_f, count=self.n, filled=self.ls.detach(),
                          nonempty=None if every else self.nonempty, every_row_nonempty=every)

    @cached_property
    def l_sum(self) -> torch.Tensor:
        """``sum_it m_it l_it`` (0-d, detached): the row sums' total where they exist, else one reduction."""
        if "row_sum" in self.__dict__:
            return self.row_sum.detach().sum()
        return self.ls.detach().sum()

    @cached_property
    def row_sum(self) -> torch.Tensor:
        """``sum_t m_it l_it`` [B]."""
        return self.ls.sum(-1)

    @cached_property
    def a_tok(self) -> torch.Tensor:
        """Per-token advantages, ``[B, 1]`` or ``[B, T]`` with 0 on padding and on empty rows."""
        return self.a_seq.unsqueeze(-1) if not self.per_token_adv else torch.where(self.mask, self.adv, 0.0)

    @cached_property
    def every_row_nonempty(self) -> bool:
        """Whether every sequence has a token, known where a read is free (a CPU; one read): then
        the masking of empty rows (advantages, sequence ratios, weights of the mean over
        sequences) is skipped. False where unknown (on an accelerator)."""
        if not _inputs.free_reads(self.n.device) or self.n.shape[0] == 0:
            return False
        return self.n.amin().item() > 0

    @cached_property
    def a_seq(self) -> torch.Tensor:
        """One advantage per sequence [B] (a ``[B, T]`` advantage's token mean); 0 for an empty row."""
        if not self.per_token_adv:
            return self.adv if self.every_row_nonempty else torch.where(self.nonempty, self.adv, 0.0)
        return self.a_tok.sum(-1) / self.n1


def _tensor(name: str, t: Any, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name}: expected a floating tensor, got {t.dtype}")
    if shape is not None and tuple(t.shape) != shape:
        raise ValueError(f"{name}: shape {tuple(t.shape)} does not match logp's shape {shape}")
    return t


def _batch_p(p: Any, mask: torch.Tensor) -> Any:
    if isinstance(p, LearnablePowerMean):
        return p(mask)
    B = mask.shape[0]
    if isinstance(p, torch.Tensor) and p.ndim == 1 and p.shape[0] != B:
        raise ValueError(f"p: expected a 0-d tensor or one p per sequence [{B}], got shape {tuple(p.shape)}")
    return p


def prepare(
    config: LossConfig,
    logp: Any,
    old_logp: Any,
    advantages: Any,
    mask: Any,
    ref_logp: Any = None,
    entropy: Any = None,
) -> Batch:
    """The :class:`Batch` of one call, or a ValueError naming the tensor that does not fit."""
    logp = _tensor("logp", logp)
    if logp.ndim != 2:
        raise ValueError(f"logp: expected a [B, T] tensor, got shape {tuple(logp.shape)}")
    shape = tuple(logp.shape)
    B = shape[0]
    old_logp = _tensor("old_logp", old_logp, shape)
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"mask: expected a bool torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask: expected a bool tensor (True = keep), got {mask.dtype}")
    if tuple(mask.shape) != shape:
        raise ValueError(f"mask: shape {tuple(mask.shape)} does not match logp's shape {shape}")
    advantages = _tensor("advantages", advantages)
    if tuple(advantages.shape) not in ((B,), shape):
        raise ValueError(f"advantages: expected shape ({B},) or {shape}, got {tuple(advantages.shape)}")
    if ref_logp is not None:
        ref_logp = _tensor("ref_logp", ref_logp, shape)
    elif config.kl_coef != 0.0:
        raise ValueError("kl_coef: a KL penalty needs ref_logp")
    if entropy is not None:
        entropy = _tensor("entropy", entropy, shape)
    elif config.entropy_coef != 0.0:
        raise ValueError("entropy_coef: an entropy bonus needs entropy")
    p = _batch_p(config.p, mask)

    wide = any(t is not None and t.dtype == torch.float64 for t in (logp, old_logp, advantages, ref_logp))
    dtype = torch.float64 if wide else torch.float32
    lp = _as(logp, dtype)
    old = _as(old_logp.detach(), dtype)
    # The counts from the 0/1 mask the loss needs anyway (exact below 2^24 tokens a row in float32).
    mask_f = mask.view(torch.uint8).to(dtype)
    return Batch(
        logp=lp, old_logp=old, l=lp - old, mask=mask, mask_f=mask_f, n=mask_f.sum(-1),
        adv=_as(advantages.detach(), dtype), p=p,
        ref_logp=None if ref_logp is None else _as(ref_logp.detach(), dtype),
        entropy=None if entropy is None else _as(entropy, dtype),
    )


def _as(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # .to of a tensor already in the dtype returns it, but costs as much as a small kernel.
    return t if t.dtype == dtype else t.to(dtype)


@dataclass(frozen=True)
class ValueCheck:
    """A 0-d value whose read-back says whether the check may have failed (not finite, for a sum;
    not zero, for a count), and ``diagnose``, run only then: the error message, or None."""

    value: torch.Tensor
    diagnose: Callable[[], str | None]
    count: bool = False

    def may_fail(self, v: float) -> bool:
        return v != 0 if self.count else not math.isfinite(v)


def _nonfinite_at(name: str, x: torch.Tensor, where: torch.Tensor, place: str) -> Callable[[], str | None]:
    def diagnose() -> str | None:
        bad = where & ~torch.isfinite(x)
        return f"{name}: NaN or inf {place} (first at index {first_index(bad)})" if bool(bad.any()) else None
    return diagnose


def value_checks(b: Batch, config: LossConfig) -> list[ValueCheck]:
    """The value checks of ``b`` (see the module doc): finite ``logp``, ``old_logp``, advantages,
    ``ref_logp`` and ``entropy`` where they count, p not NaN, and one advantage per sequence for
    the levels that need it."""
    on_token = "on an unmasked token"

    def logp_or_old() -> str | None:
        return (_nonfinite_at("logp", b.logp, b.mask, on_token)()
                or _nonfinite_at("old_logp", b.old_logp, b.mask, on_token)())

    # l = logp - old_logp is finite exactly when both are (inf - inf and NaN propagate), so one
    # sum of the masked log-ratios checks both; none is needed where every entry of l is known
    # finite (Batch.l_finite, one sum read on a CPU).
    checks = [] if b.l_finite else [ValueCheck(b.l_sum, logp_or_old)]
    if not b.per_token_adv:
        checks.append(ValueCheck(b.a_seq.sum(), lambda: _nonfinite_at("advantages", b.adv, b.nonempty,
                                                                     "for a sequence with tokens")()))
    else:
        checks.append(ValueCheck(b.a_tok.sum(), _nonfinite_at("advantages", b.adv, b.mask, on_token)))
        if config.level in ("sequence", "gmpo"):
            dev = (b.a_tok - b.a_seq.unsqueeze(-1)).abs()
            varies = b.mask & (dev > 1e-6 * (1.0 + b.a_seq.abs().unsqueeze(-1)))
            level = config.level
            checks.append(ValueCheck(varies.any(), count=True, diagnose=lambda: (
                f"advantages: level={level!r} needs one advantage per sequence, but a [B, T] advantage varies "
                "within a sequence (use level='sequence-token' for per-token advantages) "
                f"(first at index {first_index(varies)})")))
    if isinstance(b.p, torch.Tensor):
        p_nan = torch.isnan(b.p.detach()).reshape(-1)
        checks.append(ValueCheck(p_nan.any(), count=True,
                                 diagnose=lambda: f"p: NaN exponent (first at index {first_index(p_nan)})"))
    for name, x in (("ref_logp", b.ref_logp), ("entropy", b.entropy)):
        if x is not None:
            checks.append(ValueCheck(torch.where(b.mask, x.detach(), 0.0).sum(), _nonfinite_at(name, x, b.mask, on_token)))
    return checks


def raise_failed(checks: list[ValueCheck], values: list[float]) -> None:
    """Raise the first confirmed failure among the checks, given their read-back values."""
    for check, v in zip(checks, values, strict=True):
        if check.may_fail(v):
            msg = check.diagnose()
            if msg is not None:
                raise ValueError(msg)


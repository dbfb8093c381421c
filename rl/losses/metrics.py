r"""The diagnostics of a policy-loss call, from quantities the loss already holds.

Every metric is a 0-d tensor computed under ``no_grad`` from the batch (:class:`rl.losses.batch.Batch`)
and the surrogate's record (:class:`Surrogate`); :func:`read_back` reads them, and the value
checks' flags, in one device synchronisation (one stacked tensor).

=====================  ============================================================================
``loss``, ``pg_loss``  the loss and its policy-gradient part
``clip_frac_*``        fraction where the ``low``/``high``/``dual`` clip or the safety ``cap`` acted
                       (over tokens for ``"token"`` and ``"sequence-token"``, over sequences for
                       ``"sequence"``; ``"gmpo"``: low/high over tokens, dual/cap over sequences);
                       ``clip_frac = low + high + dual``
``seq_ratio_*``        mean/min/max over sequences of ``s_i`` (``"token"``: the geometric-mean ratio)
``token_weight_ess``   mean over sequences of ``1 / (n_i sum_t pi_it^2)`` in (0, 1], ``pi_i`` the
                       token weights ``d log s_i / d l_i`` (``"token"``: the normalised token ratios)
``approx_kl_old``      token mean of ``k3 = r - 1 - log r`` (``log r`` capped at ``max_log_ratio``),
``approx_kl_old_k1``   and of ``k1 = -log r``: estimates of KL(old || new) (Schulman 2020)
``n_seqs``, ``n_tokens``  sequences with tokens, unmasked tokens
``p``, ``p_min/max``   the exponent in force, over sequences (power, adaptive and multi-scale means)
``adaptive_signal``    the adaptive mean's instability signal
``kl_ref``, ``entropy``  token means of the KL estimate to the reference and of the entropy
=====================  ============================================================================

Statistics over an empty set (no sequence with tokens) are NaN; a clip that is off reports 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rl.losses.batch import Batch, ValueCheck, raise_failed
from rl.losses.clipping import ClipFlags, ClipShift

__all__ = ["ORDER", "Metrics", "Surrogate", "UNITS", "loss_metrics", "read_back"]

#: how a clip flag's fraction counts: "token" (flags [B, T], over unmasked tokens), "sequence"
#: (flags [B], over sequences with tokens), "sequence-tokens" (flags [B], each weighted by n_i)
UNITS = ("token", "sequence", "sequence-tokens")


@dataclass(frozen=True)
class Surrogate:
    """What a level's surrogate computed: the loss and the quantities its metrics read."""

    pg: torch.Tensor  # 0-d policy-gradient loss, aggregated
    log_s: torch.Tensor | None = None  # [B] sequence log-ratio (None at level "token")
    pi: torch.Tensor | None = None  # [B, T] d log s / d l, when the level computed it
    pi_sum_sq: torch.Tensor | None = None  # [B] sum_t pi_t^2, when the mean gave it without pi
    uniform_pi: bool = False  # pi is 1/n_i on each row's tokens (the geometric mean), not formed
    p_used: Any = None  # the exponent in force (float or tensor), None without one
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    clips: tuple[tuple[ClipFlags | ClipShift | None, str], ...] = ()  # (flags, unit) pairs whose fractions add up


_CLIP_FIELDS = ("clip_frac_low", "clip_frac_high", "clip_frac_dual", "clip_frac_cap")


@dataclass(frozen=True)
class Metrics:
    """The metrics before read-back: ``values`` (1-d parts, K values in all) named by ``names`` (a
    name given several times is the sum of its parts), and ``known``: values fixed without computation.

    ``rows``: per-sequence rows [B] (names, and their [k, B] stack, read with the values) that the
    host reduces over the sequences with tokens (:func:`_reduce_rows`): on the device each
    statistic of B numbers would cost a kernel (a masked mean, a min, a max, a log-sum-exp), on
    the host it is a few microseconds of numpy for all of them, in float64. After the read:
    a name in ``per_tok`` is divided by ``n_tokens`` (0/0 is NaN), ``neg`` names are negated and
    ``exp`` names exponentiated.
    """

    names: tuple[str, ...]
    values: list[torch.Tensor]  # 1-d parts, concatenated at read-back
    known: dict[str, float]
    #: names read back as logs: the metric is exp of the value (clamped to +-700 first)
    exp: tuple[str, ...] = ("seq_ratio_mean", "seq_ratio_min", "seq_ratio_max")
    per_tok: tuple[str, ...] = ()
    neg: tuple[str, ...] = ()
    row_names: tuple[str, ...] = ()
    rows: torch.Tensor | None = None  # [k, B], read after the values
    #: the clip fractions counted on the host from rows "clip_delta" and "clip_adv"
    #: (:class:`~rl.losses.clipping.ClipShift`): their names and unit, or None
    shift: tuple[tuple[str, ...], str] | None = None
    #: (name, bound, redo): a value read at or above ``bound`` (or NaN) is replaced by ``redo()``'s,
    #: read once more (a total computed on the common case's assumption, recomputed where it may fail)
    recheck: tuple[tuple[str, float, Callable[[], torch.Tensor]], ...] = ()


#: row kinds (:func:`_reduce_rows`): "n" the tokens per sequence (which sequences count);
#: "log_s" the sequence log-ratios (seq_ratio_mean from their log-mean-exp, min, max); "p" the
#: exponent (mean, min, max); "ess_sq" sum_t pi_t^2 (ESS 1 / (n sum pi^2)); "clip_delta" and
#: "clip_adv" a ClipShift's shift and advantages (its clip fractions); any other name: its mean
#: over the sequences (a name given several times adds its means).
_ROW_KINDS = ("n", "log_s", "p", "ess_sq", "clip_delta", "clip_adv")


class _Rows:
    """What the metrics reduce: per-sequence rows [B] (``seq``, reduced on the host, see
    :class:`Metrics`) and 0-d totals (``tot``) divided after the read by the number of tokens
    (``per_tok``) or taken as they are. Bool rows (flags) are promoted by the stack."""

    def __init__(self) -> None:
        self.seq: list[tuple[str, torch.Tensor]] = []
        self.tot: list[tuple[str, torch.Tensor]] = []
        self.per_tok: list[str] = []
        self.shift: tuple[tuple[str, ...], str] | None = None

    def token_total(self, name: str, v: torch.Tensor) -> None:
        """``v`` (0-d) is a sum over tokens: the metric is its token mean."""
        self.tot.append((name, v))
        self.per_tok.append(name)


def _add_clip_rows(rows: _Rows, clips: tuple[tuple[ClipFlags | ClipShift | None, str], ...], b: Batch) -> list[str]:
    """Add each clip flag's row or total (see :data:`UNITS`), or a ClipShift's two rows (one per
    call: its fractions are counted on the host); returns the clip fields no flag feeds (they are 0)."""
    dtype = b.n.dtype
    fed: set[str] = set()
    for flags, unit in clips:
        if flags is None:
            continue
        if isinstance(flags, ClipShift):
            if rows.shift is not None or unit == "token":
                raise ValueError("metrics: one ClipShift per call, over sequences")
            rows.seq += [("clip_delta", flags.delta), ("clip_adv", flags.adv)]
            rows.shift = (flags.names(), unit)
            fed.update(flags.names())
            continue
        for name, f in zip(_CLIP_FIELDS, (flags.low, flags.high, flags.dual, flags.cap), strict=True):
            if f is None:
                continue
            fed.add(name)
            if unit == "token":  # flags [B, T]: the clipped tokens
                rows.token_total(name, (f & b.mask).view(torch.uint8).sum(dtype=dtype))
            elif unit == "sequence":
                rows.seq.append((name, f))
            else:  # "sequence-tokens": a clipped sequence counts its tokens
                rows.token_total(name, torch.dot(f.to(dtype), b.n))
    return [name for name in _CLIP_FIELDS if name not in fed]


def _token_weight_ess(sur: Surrogate, b: Batch) -> tuple[str, torch.Tensor]:
    """The ESS row: ``("ess_sq", sum_t pi_t^2)`` where the weights (or their squares' sums) were
    formed, else (level ``"token"``, the normalised token ratios) ``("token_weight_ess", ESS)``."""
    if sur.pi_sum_sq is not None:
        return "ess_sq", sur.pi_sum_sq
    if sur.pi is not None:
        return "ess_sq", torch.linalg.vector_norm(sur.pi, dim=-1).square_()
    # Level "token": (sum r)^2 / (n sum r^2) in log space.
    lm = torch.where(b.mask, b.l, -math.inf)
    log_ess = 2 * torch.logsumexp(lm, -1) - torch.logsumexp(2 * lm, -1) - torch.log(b.n1)
    return "token_weight_ess", torch.exp(torch.where(b.nonempty, log_ess, 0.0))


def _k3_total(ls: torch.Tensor, cap: float | None) -> torch.Tensor:
    """``sum_t k3_t`` with ``k3 = r - 1 - log r = expm1(l) - l`` (``l`` capped at ``cap``), 0 on
    padding (``ls`` is 0 there). ``expm1``: near 0, where ``k3 ~ l^2 / 2``, ``exp(l) - 1`` would
    carry an absolute error of ``eps`` per token, more than ``k3`` itself below ``|l| ~ 3e-4``."""
    lc = ls if cap is None else ls.clamp_max(cap)
    return torch.expm1(lc).sub_(lc).sum()


def _k3_uncapped_bound(cap: float) -> float:
    """A bound below which the uncapped ``sum_t k3_t`` equals the capped one: every ``k3_t >= 0``
    and ``k3`` increases for ``l > 0``, so a token above the cap alone adds ``k3(cap) = expm1(cap)
    - cap``; half of it leaves room for rounding. Below the bound no token exceeds the cap, the
    clamp changes nothing and the two totals are the same bits (so the clamp, a pass over the
    tokens, is made only where the bound is reached: at the default cap of 20 a token mean of
    2.4e8 / N)."""
    return (math.expm1(cap) - cap) / 2 if cap < 700 else math.inf


@torch.no_grad()
def loss_metrics(
    loss: torch.Tensor,
    sur: Surrogate,
    b: Batch,
    *,
    max_log_ratio: float | None,
    kl: torch.Tensor | None = None,
) -> Metrics:
    """Every metric of the module table, not yet read back (see :func:`read_back`).

    Statistics over sequences come from per-sequence rows [B] read back in one stack and reduced
    on the host; means over tokens from 0-d totals (a sum over every token: no per-row sums),
    divided by the token count after the read. Values fixed by the configuration (a float p,
    the geometric mean's ESS of 1, a clip that cannot act) are not computed at all. ``kl``: the
    per-token KL estimate to the reference when the loss formed it.
    """
    rows = _Rows()
    known = dict.fromkeys(_add_clip_rows(rows, sur.clips, b), 0.0)
    if sur.uniform_pi:
        known["token_weight_ess"] = 1.0  # weights 1/n_i: (sum pi)^2 / (n sum pi^2) = 1
    else:
        rows.seq.append(_token_weight_ess(sur, b))
    p = sur.p_used
    if isinstance(p, torch.Tensor):
        rows.seq.append(("p", p.detach().to(b.n.dtype).expand(b.n.shape[0])))
    elif p is not None:
        known.update(p=float(p), p_min=float(p), p_max=float(p))
    rows.token_total("approx_kl_old", _k3_total(b.ls, None))
    recheck = () if max_log_ratio is None else (("approx_kl_old", _k3_uncapped_bound(max_log_ratio),
                                                 lambda: _k3_total(b.ls, max_log_ratio)),)
    rows.token_total("approx_kl_old_k1", b.l_sum)  # negated after the read: k1 = -log r
    if kl is not None:
        rows.token_total("kl_ref", torch.where(b.mask, kl, 0.0).sum())
    if b.entropy is not None:
        rows.token_total("entropy", torch.where(b.mask, b.entropy, 0.0).sum())
    # The sequence ratios' statistics from their logs (the host exponentiates in float64, Metrics.exp):
    # the ratio of a far-off-policy sequence overflows float32, its log does not.
    log_s = sur.log_s if sur.log_s is not None else b.row_sum / b.n1
    rows.seq += [("n", b.n), ("log_s", log_s.detach())]
    names = ["loss", "pg_loss", *(name for name, _ in rows.tot)]
    parts = [torch.stack([loss.detach(), sur.pg.detach(), *(v for _, v in rows.tot)])]
    if "adaptive_signal" in sur.extra:
        names.append("adaptive_signal")
        parts.append(sur.extra["adaptive_signal"].reshape(1))
    return Metrics(names=tuple(names), values=parts, known=known, per_tok=tuple(rows.per_tok),
                   neg=("approx_kl_old_k1",), row_names=tuple(name for name, _ in rows.seq),
                   rows=torch.stack([v for _, v in rows.seq]), shift=rows.shift, recheck=recheck)


def _reduce_rows(names: tuple[str, ...], rows: np.ndarray,
                 shift: tuple[tuple[str, ...], str] | None = None) -> dict[str, float]:
    """The statistics over the sequences with tokens of the rows ``rows`` [k, B] (float64; kinds in
    :data:`_ROW_KINDS`): counts, the log-space sequence-ratio statistics, the exponent's, means,
    and ``shift``'s clip fractions (:attr:`Metrics.shift`)."""
    idx = {name: i for i, name in enumerate(names)}  # "n", "log_s", "p", "ess_sq" appear once
    # Few numpy calls: on rows of a few hundred numbers each call costs more than its arithmetic.
    n = rows[idx["n"]]
    n_seqs = int(np.count_nonzero(n))
    got: dict[str, float] = {"n_seqs": float(n_seqs), "n_tokens": float(n.sum())}
    if not n_seqs:  # every statistic over sequences is NaN (read_back)
        for name in names:
            got[name] = math.nan
        got.update(seq_ratio_mean=math.nan, seq_ratio_min=math.nan, seq_ratio_max=math.nan, token_weight_ess=math.nan)
        if shift is not None:
            got.update(dict.fromkeys(shift[0], math.nan))
        return got
    sub = rows if n_seqs == n.shape[0] else rows[:, n > 0]
    log_s = sub[idx["log_s"]]
    # log of the mean ratio: a log-sum-exp in float64, exact to a few ulps for every float32
    # log-ratio (NaN, +-inf propagate as through the max-shifted form)
    got.update(seq_ratio_mean=float(np.logaddexp.reduce(log_s)) - math.log(n_seqs),
               seq_ratio_min=float(log_s.min()), seq_ratio_max=float(log_s.max()))
    if "p" in idx:
        pv = sub[idx["p"]]
        got.update(p=float(pv.mean()), p_min=float(pv.min()), p_max=float(pv.max()))
    if "ess_sq" in idx:
        got["token_weight_ess"] = float(np.reciprocal(sub[idx["n"]] * sub[idx["ess_sq"]]).sum()) / n_seqs
    if shift is not None:
        names_on, unit = shift
        weight = sub[idx["n"]] if unit == "sequence-tokens" else None
        got.update(ClipShift.fractions(sub[idx["clip_delta"]], sub[idx["clip_adv"]], weight, names_on))
    means = [i for i, name in enumerate(names) if name not in _ROW_KINDS]
    if means:
        for i, v in zip(means, (sub[means].sum(axis=1) / n_seqs).tolist(), strict=True):
            got[names[i]] = got.get(names[i], 0.0) + v
    return got


#: the order metrics are reported in (names not computed in a call are left out)
ORDER = ("loss", "pg_loss", "clip_frac", *_CLIP_FIELDS, "seq_ratio_mean", "seq_ratio_min", "seq_ratio_max",
         "token_weight_ess", "approx_kl_old", "approx_kl_old_k1", "n_seqs", "n_tokens", "p", "p_min", "p_max",
         "adaptive_signal", "kl_ref", "entropy")
#: statistics over sequences that are NaN when no sequence has tokens
_OVER_SEQUENCES = ("p", "p_min", "p_max", "seq_ratio_min", "seq_ratio_max", "token_weight_ess")


def read_back(checks: list[ValueCheck], metrics: Metrics | None) -> dict[str, float]:
    """Read the checks' values and the metrics in one synchronisation; raise the first failed check.

    Returns the metrics as floats in the order of :data:`ORDER` (``{}`` when ``metrics`` is None),
    with ``clip_frac = clip_frac_low + clip_frac_high + clip_frac_dual``; statistics over sequences
    are NaN when no sequence has tokens.
    """
    if not checks and metrics is None:
        return {}
    parts = [torch.stack([c.value for c in checks])] if checks else []  # 0-d values without a graph
    if metrics is not None:
        parts += metrics.values
        if metrics.rows is not None:
            r = metrics.rows
            parts.append((r if r.dtype == parts[0].dtype else r.to(parts[0].dtype)).reshape(-1))
    # One read for every value, as float64 (a float32 value converts exactly).
    host = (parts[0] if len(parts) == 1 else torch.cat(parts)).numpy(force=True).astype(np.float64)
    k = len(checks) + (0 if metrics is None else len(metrics.names))
    values = host[:k].tolist()
    raise_failed(checks, values[: len(checks)])
    if metrics is None:
        return {}
    got: dict[str, float] = {}
    for name, v in zip(metrics.names, values[len(checks):], strict=True):
        got[name] = got.get(name, 0.0) + v
    for name, bound, redo in metrics.recheck:
        if not got[name] < bound:  # NaN too
            with torch.no_grad():
                got[name] = redo().item()
    if metrics.rows is not None:
        for name, v in _reduce_rows(metrics.row_names, host[k:].reshape(len(metrics.row_names), -1),
                                    metrics.shift).items():
            got[name] = got.get(name, 0.0) + v
    n_tokens = got.get("n_tokens", math.nan)
    for name in metrics.per_tok:
        got[name] = got[name] / n_tokens if n_tokens else math.nan
    for name in metrics.neg:
        got[name] = -got[name]
    for name in metrics.exp:
        got[name] = math.exp(min(max(got[name], -700.0), 700.0))  # NaN stays NaN
    got.update(metrics.known)
    got["clip_frac"] = got["clip_frac_low"] + got["clip_frac_high"] + got["clip_frac_dual"]
    if not got["n_seqs"]:
        for k in _OVER_SEQUENCES:
            if k in got:
                got[k] = math.nan
    return {k: got[k] for k in ORDER if k in got}

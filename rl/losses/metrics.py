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
from dataclasses import dataclass, field
from typing import Any

import torch

from rl.losses.batch import Batch, ValueCheck, raise_failed
from rl.losses.clipping import ClipFlags

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
    clips: tuple[tuple[ClipFlags | None, str], ...] = ()  # (flags, unit) pairs whose fractions add up


_CLIP_FIELDS = ("clip_frac_low", "clip_frac_high", "clip_frac_dual", "clip_frac_cap")


@dataclass(frozen=True)
class Metrics:
    """The metrics before read-back: ``values`` (1-d parts, K values in all) named by ``names`` (a
    name given several times is the sum of its parts), and ``known``: values fixed without computation.

    After the read (as doubles): a name in ``per_seq`` is divided by ``n_seqs``, one in ``per_tok``
    by ``n_tokens`` (0/0 is NaN), ``neg`` names are negated, ``log_mean`` names lose
    ``log n_seqs`` (a log-sum-exp becomes the log of a mean), and ``exp`` names are exponentiated:
    arithmetic on a handful of numbers that costs nothing on the host and a kernel each on the device.
    """

    names: tuple[str, ...]
    values: list[torch.Tensor]  # 1-d parts, concatenated at read-back
    known: dict[str, float]
    #: names read back as logs: the metric is exp of the value (clamped to +-700 first)
    exp: tuple[str, ...] = ("seq_ratio_mean", "seq_ratio_min", "seq_ratio_max")
    per_seq: tuple[str, ...] = ()
    per_tok: tuple[str, ...] = ()
    neg: tuple[str, ...] = ()
    log_mean: tuple[str, ...] = ()


class _Rows:
    """What the metrics reduce: per-sequence rows [B] averaged over the sequences with tokens
    (``seq``: one stack, one masked sum), and 0-d totals (``tot``) divided after the read by the
    number of tokens (``per_tok``) or taken as they are. A bool row (a flag) is promoted to the
    dtype of the others by the stack."""

    def __init__(self) -> None:
        self.seq: dict[str, list[torch.Tensor]] = {}
        self.tot: list[tuple[str, torch.Tensor]] = []
        self.per_tok: list[str] = []

    def token_total(self, name: str, v: torch.Tensor) -> None:
        """``v`` (0-d) is a sum over tokens: the metric is its token mean."""
        self.tot.append((name, v))
        self.per_tok.append(name)

    def parts(self, b: Batch) -> tuple[list[str], list[torch.Tensor], list[str]]:
        """``(names, [sums over sequences [k1]], per_seq names)``; the totals are stacked by the caller."""
        seq_names = [k for k, vs in self.seq.items() for _ in vs]
        if not seq_names:
            return [], [], []
        rows = [v for vs in self.seq.values() for v in vs]
        # Rows without tokens weigh 0 and may hold inf (a p of +-inf, an ESS of 1/0): replaced.
        sums = torch.where(b.nonempty, torch.stack(rows), 0.0).sum(-1)
        return list(seq_names), [sums], seq_names


def _add_clip_rows(rows: _Rows, clips: tuple[tuple[ClipFlags | None, str], ...], b: Batch) -> list[str]:
    """Add each clip flag's row or total (see :data:`UNITS`); returns the clip fields no flag feeds
    (they are 0)."""
    dtype = b.n.dtype
    fed: set[str] = set()
    for flags, unit in clips:
        if flags is None:
            continue
        for name, f in zip(_CLIP_FIELDS, (flags.low, flags.high, flags.dual, flags.cap), strict=True):
            if f is None:
                continue
            fed.add(name)
            if unit == "token":  # flags [B, T]: the clipped tokens
                rows.token_total(name, (f & b.mask).view(torch.uint8).sum(dtype=dtype))
            elif unit == "sequence":
                rows.seq.setdefault(name, []).append(f)
            else:  # "sequence-tokens": a clipped sequence counts its tokens
                rows.token_total(name, torch.dot(f.to(dtype), b.n))
    return [name for name in _CLIP_FIELDS if name not in fed]


def _token_weight_ess(sur: Surrogate, b: Batch) -> torch.Tensor:
    """``1 / (n_i sum_t pi_it^2)`` [B], for weights ``pi`` that were formed (or the token ratios);
    inf (or NaN) on rows without tokens, which the means leave out."""
    n1 = b.n1
    if sur.pi_sum_sq is not None:
        return (sur.pi_sum_sq * n1).reciprocal_()
    if sur.pi is not None:
        return torch.linalg.vector_norm(sur.pi, dim=-1).square_().mul_(n1).reciprocal_()
    # Level "token": the weights are the token ratios, (sum r)^2 / (n sum r^2) in log space.
    lm = torch.where(b.mask, b.l, -math.inf)
    log_ess = 2 * torch.logsumexp(lm, -1) - torch.logsumexp(2 * lm, -1) - torch.log(n1)
    return torch.exp(torch.where(b.nonempty, log_ess, 0.0))


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

    Means over sequences come from per-sequence rows [B] stacked and reduced together; means
    over tokens from 0-d totals (a sum over every token: no per-row sums); both are divided by
    their counts after the read, so that their number adds few operations. Values fixed by the
    configuration (a float p, the geometric mean's ESS of 1, a clip that cannot act) are not
    computed at all. ``kl``: the per-token KL estimate to the reference when the loss formed it.
    """
    rows = _Rows()
    known = dict.fromkeys(_add_clip_rows(rows, sur.clips, b), 0.0)
    if sur.uniform_pi:
        known["token_weight_ess"] = 1.0  # weights 1/n_i: (sum pi)^2 / (n sum pi^2) = 1
    else:
        rows.seq["token_weight_ess"] = [_token_weight_ess(sur, b)]
    p = sur.p_used
    if isinstance(p, torch.Tensor):
        pv = p.to(b.n.dtype).expand(b.n.shape[0])
        rows.seq["p"] = [pv]
    elif p is not None:
        known.update(p=float(p), p_min=float(p), p_max=float(p))
    ls = b.ls
    lc = ls if max_log_ratio is None else ls.clamp_max(max_log_ratio)
    rows.token_total("approx_kl_old", torch.expm1(lc).sub_(lc).sum())  # k3 = r - 1 - log r; 0 on padding
    rows.token_total("approx_kl_old_k1", b.l_sum)  # negated after the read: k1 = -log r
    if kl is not None:
        rows.token_total("kl_ref", torch.where(b.mask, kl, 0.0).sum())
    if b.entropy is not None:
        rows.token_total("entropy", torch.where(b.mask, b.entropy, 0.0).sum())
    names, parts, per_seq = rows.parts(b)

    # Sequence ratios from log-space reductions, exponentiated after read-back (Metrics.exp): the
    # ratio of a far-off-policy sequence overflows float32, its log does not.
    log_s = sur.log_s if sur.log_s is not None else b.row_sum / b.n1
    ne = b.nonempty
    below = torch.where(ne, log_s, -math.inf)
    tot_names = [name for name, _ in rows.tot]
    names += ["loss", "pg_loss", "n_seqs", "n_tokens", *tot_names, "seq_ratio_mean", "seq_ratio_min", "seq_ratio_max"]
    parts.append(torch.stack([loss, sur.pg, b.n_seq, b.n_tok, *(v for _, v in rows.tot), torch.logsumexp(below, 0),
                              torch.where(ne, log_s, math.inf).amin(0), below.amax(0)]))
    if isinstance(p, torch.Tensor):
        names += ["p_min", "p_max"]
        parts.append(torch.stack([torch.where(ne, pv, math.inf).amin(0), torch.where(ne, pv, -math.inf).amax(0)]))
    if "adaptive_signal" in sur.extra:
        names.append("adaptive_signal")
        parts.append(sur.extra["adaptive_signal"].reshape(1))
    return Metrics(names=tuple(names), values=parts, known=known, per_seq=tuple(per_seq),
                   per_tok=tuple(rows.per_tok), neg=("approx_kl_old_k1",), log_mean=("seq_ratio_mean",))


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
    # One read for every value (Python floats are doubles: a float32 value converts exactly).
    values = (parts[0] if len(parts) == 1 else torch.cat(parts)).tolist()
    raise_failed(checks, values[: len(checks)])
    if metrics is None:
        return {}
    got: dict[str, float] = {}
    for name, v in zip(metrics.names, values[len(checks):], strict=True):
        got[name] = got.get(name, 0.0) + v
    n_seqs, n_tokens = got.get("n_seqs", math.nan), got.get("n_tokens", math.nan)
    for names, count in ((metrics.per_seq, n_seqs), (metrics.per_tok, n_tokens)):
        for name in names:
            got[name] = got[name] / count if count else math.nan
    for name in metrics.neg:
        got[name] = -got[name]
    for name in metrics.log_mean:
        got[name] = got[name] - math.log(n_seqs) if n_seqs else math.nan
    for name in metrics.exp:
        got[name] = math.exp(min(max(got[name], -700.0), 700.0))  # NaN stays NaN
    got.update(metrics.known)
    got["clip_frac"] = got["clip_frac_low"] + got["clip_frac_high"] + got["clip_frac_dual"]
    if not got["n_seqs"]:
        for k in _OVER_SEQUENCES:
            if k in got:
                got[k] = math.nan
    return {k: got[k] for k in ORDER if k in got}

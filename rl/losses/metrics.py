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

__all__ = ["Surrogate", "UNITS", "loss_metrics", "read_back"]

#: how a clip flag's fraction counts: "token" (flags [B, T], over unmasked tokens), "sequence"
#: (flags [B], over sequences with tokens), "sequence-tokens" (flags [B], each weighted by n_i)
UNITS = ("token", "sequence", "sequence-tokens")


@dataclass(frozen=True)
class Surrogate:
    """What a level's surrogate computed: the loss and the quantities its metrics read."""

    pg: torch.Tensor  # 0-d policy-gradient loss, aggregated
    log_s: torch.Tensor | None = None  # [B] sequence log-ratio (None at level "token")
    pi: torch.Tensor | None = None  # [B, T] d log s / d l, when the level computed it
    uniform_pi: bool = False  # pi is 1/n_i on each row's tokens (the geometric mean), not formed
    p_used: Any = None  # the exponent in force (float or tensor), None without one
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    clips: tuple[tuple[ClipFlags | None, str], ...] = ()  # (flags, unit) pairs whose fractions add up


def _clip_fractions(clips: tuple[tuple[ClipFlags | None, str], ...], b: Batch, n_tok: torch.Tensor,
                    n_seq: torch.Tensor) -> list[torch.Tensor]:
    dtype = b.n.dtype

    def frac(flag: torch.Tensor, unit: str) -> torch.Tensor:
        if unit == "token":
            return (flag & b.mask).sum().to(dtype) / n_tok
        if unit == "sequence":
            return torch.where(b.nonempty, flag.to(dtype), 0.0).sum() / n_seq
        return torch.where(flag & b.nonempty, b.n, 0.0).sum() / n_tok

    out = [torch.zeros((), dtype=dtype, device=b.n.device) for _ in range(4)]
    for flags, unit in clips:
        if flags is None:
            continue
        for i, f in enumerate((flags.low, flags.high, flags.dual, flags.cap)):
            if f is not None:
                out[i] = out[i] + frac(f, unit)
    return out


def _token_weight_ess(sur: Surrogate, b: Batch) -> torch.Tensor:
    """``1 / (n_i sum_t pi_it^2)`` [B] (1 for uniform weights)."""
    n1 = b.n.clamp(min=1.0)
    if sur.uniform_pi:
        return torch.ones_like(b.n)
    if sur.pi is not None:
        return 1.0 / (n1 * (sur.pi * sur.pi).sum(-1)).clamp(min=torch.finfo(b.n.dtype).tiny)
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
) -> dict[str, torch.Tensor]:
    """Every metric (see the module table) as a 0-d tensor, in the order they are reported.

    ``kl``: the per-token KL estimate to the reference when the loss formed it.
    """
    dtype = b.n.dtype
    n_tok = b.n.sum()
    n_seq = b.nonempty.sum().to(dtype)

    def seq_mean(x: torch.Tensor) -> torch.Tensor:
        return torch.where(b.nonempty, x.to(dtype), 0.0).sum() / n_seq

    low, high, dual, capped = _clip_fractions(sur.clips, b, n_tok, n_seq)
    out: dict[str, torch.Tensor] = {"loss": loss.detach(), "pg_loss": sur.pg.detach()}
    out.update(clip_frac=low + high + dual, clip_frac_low=low, clip_frac_high=high, clip_frac_dual=dual,
               clip_frac_cap=capped)
    log_s = sur.log_s if sur.log_s is not None else b.row_sum / b.n.clamp(min=1.0)
    ratio = torch.exp(log_s.detach().to(torch.float64).clamp(-700.0, 700.0))
    nan = torch.full((), math.nan, dtype=torch.float64, device=ratio.device)
    out["seq_ratio_mean"] = torch.where(b.nonempty, ratio, 0.0).sum() / n_seq.to(torch.float64)
    out["seq_ratio_min"] = torch.where(b.nonempty, ratio, math.inf).amin() if ratio.numel() else nan
    out["seq_ratio_max"] = torch.where(b.nonempty, ratio, -math.inf).amax() if ratio.numel() else nan
    out["token_weight_ess"] = seq_mean(_token_weight_ess(sur, b))
    ls = b.ls.detach()
    lc = ls if max_log_ratio is None else ls.clamp_max(max_log_ratio)
    out["approx_kl_old"] = torch.expm1(lc).sub_(lc).sum() / n_tok  # k3 = r - 1 - log r; 0 on padding
    out["approx_kl_old_k1"] = -b.row_sum.detach().sum() / n_tok
    out["n_seqs"] = n_seq
    out["n_tokens"] = n_tok
    if sur.p_used is not None:
        p = sur.p_used
        pv = p.detach() if isinstance(p, torch.Tensor) else torch.full((), float(p), dtype=dtype, device=b.n.device)
        pv = pv.to(dtype).expand(b.n.shape[0])
        out["p"] = seq_mean(pv)
        out["p_min"] = torch.where(b.nonempty, pv, math.inf).amin()
        out["p_max"] = torch.where(b.nonempty, pv, -math.inf).amax()
    if "adaptive_signal" in sur.extra:
        out["adaptive_signal"] = sur.extra["adaptive_signal"]
    if kl is not None:
        out["kl_ref"] = torch.where(b.mask, kl, 0.0).sum() / n_tok
    if b.entropy is not None:
        out["entropy"] = torch.where(b.mask, b.entropy, 0.0).sum() / n_tok
    return out


def read_back(checks: list[ValueCheck], metrics: dict[str, torch.Tensor] | None) -> dict[str, float]:
    """Read the checks' flags and the metrics in one synchronisation; raise the first failed check.

    Returns the metrics as floats (``{}`` when ``metrics`` is None); with no sequence left, the
    exponent and the min/max ratio are NaN (statistics over an empty set).
    """
    if not checks and metrics is None:
        return {}
    parts = [c.flag.reshape(()).to(torch.float64) for c in checks]
    if metrics is not None:
        parts += [v.detach().reshape(()).to(torch.float64) for v in metrics.values()]
    values = torch.stack(parts).tolist()
    raise_failed(checks, values[: len(checks)])
    if metrics is None:
        return {}
    res = dict(zip(metrics, values[len(checks):], strict=True))
    if not res["n_seqs"]:
        for k in ("p", "p_min", "p_max", "seq_ratio_min", "seq_ratio_max"):
            if k in res:
                res[k] = math.nan
    return res

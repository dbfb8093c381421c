r"""Adaptive mean selection (seed 000, section 2): choose p each step from a stability signal.

The seed's rule picks the arithmetic mean when training is stable ("fast progress"), the
harmonic mean when it is not ("conservative"), the geometric mean in between. Here the
signal is an *instability* ``u`` (larger = further off-policy), computed without gradient on
the batch, and

.. math:: p = \begin{cases} p_{\text{stable}} = 1 & u < u_{low} \\ p_{\text{unstable}} = -1 & u > u_{high} \\ 0 & \text{otherwise.}\end{cases}

Signals and their default thresholds ``(u_low, u_high)`` (:data:`ADAPTIVE_THRESHOLDS`):

* ``"spread"``: the mean over sequences of the standard deviation ``sigma_i`` of the token
  log-ratios. Since ``log M_p ~ mean + p sigma^2 / 2`` (cumulant series), the arithmetic and
  harmonic ratios differ by about ``sigma^2``: below ``sigma = 0.1`` by < 1 %, where the
  choice hardly matters and the aggressive mean is nearly free; above ``sigma = 0.3`` by
  > 9 %, comparable to a clip window of 0.2, where the conservative mean matters. Defaults
  (0.1, 0.3).
* ``"clip"``: the fraction of sequences whose geometric (GSPO) ratio lies outside the clip
  window on the side of its advantage, i.e. the fraction GSPO would clip. Defaults (0.05, 0.2).
* ``"ess"``: one minus the mean normalised effective sample size of the token ratios,
  ``1 - (sum r)^2 / (n sum r^2)`` (computed in log space); 0 on-policy. Defaults (0.1, 0.5).

The chosen p is a 0-d tensor (no device sync) and is reported by ``policy_loss`` as
``metrics["p"]``, the signal as ``metrics["adaptive_signal"]``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["ADAPTIVE_SIGNALS", "ADAPTIVE_THRESHOLDS", "ADAPTIVE_PS", "adaptive_signal", "check_ps", "check_signal",
           "check_thresholds", "select_p"]

ADAPTIVE_SIGNALS = ("spread", "clip", "ess")
ADAPTIVE_THRESHOLDS: dict[str, tuple[float, float]] = {"spread": (0.1, 0.3), "clip": (0.05, 0.2), "ess": (0.1, 0.5)}
#: (p when stable, p in between, p when unstable)
ADAPTIVE_PS = (1.0, 0.0, -1.0)


@torch.no_grad()
def adaptive_signal(
    l: torch.Tensor,
    mask: torch.Tensor,
    signal: str,
    *,
    adv_seq: torch.Tensor | None = None,
    log_lo: float = math.log(0.8),
    log_hi: float = math.log(1.2),
) -> torch.Tensor:
    """The instability signal (0-d tensor) of the token log-ratios ``l`` [B, T] (see module doc)."""
    check_signal(signal)
    zero = torch.zeros((), dtype=l.dtype, device=l.device)
    ls = torch.where(mask, l, zero)
    n = mask.sum(-1).to(l.dtype)
    nonempty = n > 0
    n1 = n.clamp(min=1.0)
    n_seq = nonempty.sum().to(l.dtype).clamp(min=1.0)
    mean = ls.sum(-1) / n1
    if signal == "spread":
        var = torch.where(mask, (ls - mean.unsqueeze(-1)) ** 2, zero).sum(-1) / n1
        return torch.where(nonempty, var.sqrt(), zero).sum() / n_seq
    if signal == "clip":
        if adv_seq is None:
            raise ValueError("adaptive_signal: signal 'clip' needs the sequence advantages")
        clipped = ((adv_seq > 0) & (mean > log_hi)) | ((adv_seq < 0) & (mean < log_lo))
        return (clipped & nonempty).sum().to(l.dtype) / n_seq
    # ess: (sum r)^2 / (n sum r^2) = exp(2 lse(l) - lse(2 l) - log n)
    neg = torch.full((), -math.inf, dtype=l.dtype, device=l.device)
    lm = torch.where(mask, l, neg)
    log_ess = 2 * torch.logsumexp(lm, -1) - torch.logsumexp(2 * lm, -1) - torch.log(n1)
    ess = torch.where(nonempty, torch.exp(torch.where(nonempty, log_ess, zero)), zero)
    return 1.0 - ess.sum() / n_seq


def check_signal(signal: str) -> None:
    if signal not in ADAPTIVE_SIGNALS:
        raise ValueError(f"adaptive_signal: unknown signal {signal!r}; expected one of {', '.join(ADAPTIVE_SIGNALS)}")


def check_thresholds(thresholds: tuple[float, float]) -> tuple[float, float]:
    """``(u_low, u_high)`` as floats, or a ValueError: two finite numbers with ``u_low <= u_high``."""
    try:
        lo, hi = (float(t) for t in thresholds)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"adaptive_thresholds: expected two numbers (low, high), got {thresholds!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"adaptive_thresholds: expected finite low <= high, got {thresholds!r}")
    return lo, hi


def check_ps(ps: tuple[float, float, float]) -> tuple[float, float, float]:
    """``(p_stable, p_middle, p_unstable)`` as floats, or a ValueError: three real numbers (``+-inf`` allowed)."""
    try:
        vals = tuple(ps)
    except TypeError as exc:
        raise ValueError(f"adaptive_ps: expected three numbers, got {ps!r}") from exc
    if len(vals) != 3:
        raise ValueError(f"adaptive_ps: expected three numbers (stable, middle, unstable), got {ps!r}")
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
            raise ValueError(f"adaptive_ps: expected a real number, got {v!r}")
    return tuple(float(v) for v in vals)  # type: ignore[return-value]


def select_p(u: torch.Tensor, thresholds: tuple[float, float], ps: tuple[float, float, float] = ADAPTIVE_PS) -> torch.Tensor:
    """p (0-d tensor) from the instability ``u``: ``ps[0]`` below ``thresholds[0]``, ``ps[2]`` above ``thresholds[1]``."""
    lo, hi = thresholds
    stable, middle, unstable = (torch.full((), float(v), dtype=u.dtype, device=u.device) for v in ps)
    return torch.where(u < lo, stable, torch.where(u > hi, unstable, middle))

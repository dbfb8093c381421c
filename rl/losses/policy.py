r"""``policy_loss``: the clipped policy-gradient surrogate for every ratio level and every mean.

Notation: for sequence ``i`` and unmasked token ``t``, ``l_it = logp_it - old_logp_it``, the
token ratio ``r_it = exp(l_it)``, ``n_i`` the number of tokens, ``A`` the advantage. The clip
window is ``[1 - eps_low, 1 + eps_high]``, used in log space as ``[lo, hi] = [log(1 - eps_low),
log1p(eps_high)]`` (or the explicit ``log_clip_low``, ``log_clip_high``).

Levels
------
``"token"`` (PPO, GRPO; Schulman et al. 2017, Shao et al. 2024): per token
  ``L_it = -min(r A, clip(r, 1-eps_low, 1+eps_high) A)``.
``"sequence"`` (GSPO for p = 0, HMPO for p = -1): ``s_i = M_p(r_i1..r_in)`` (see
  :mod:`rl.losses.means`), ``L_i = -min(s_i A_i, clip(s_i) A_i)``; with the default
  ``agg="seq-mean-token-mean"`` the loss is the mean of ``L_i`` over sequences, as GSPO
  (arXiv:2507.18071, eq. 5) defines it. Unclipped, ``d loss / d logp_it = -A_i s_i pi_it / B``
  with ``pi_i = softmax(p l_i)``.
``"sequence-token"`` (GSPO-token, arXiv:2507.18071 eq. 13, generalised to every p):
  ``log s_it = sg[log s_i] + n_i sg[pi_it] (l_it - sg[l_it])``. Its value is ``s_i`` at every
  token; its gradient in the token's own log-prob is ``s_i n_i pi_it``. For p = 0,
  ``n_i pi_it = 1`` and this is exactly GSPO-token (``sg[s_i] pi_theta / sg[pi_theta]``). For
  p != 0 the factor ``n_i pi_it`` (the sensitivity relative to the uniform weight ``1/n_i``)
  makes the token-mean of the per-token ratios carry exactly the sequence ratio's gradient:
  ``(1/n_i) sum_t grad s_it = s_i sum_t pi_it grad l_it = grad s_i``. So with an advantage
  constant over the sequence (and nothing clipped) its gradient equals level ``"sequence"``
  under ``"seq-mean-token-mean"``, and with per-token advantages token ``t``'s advantage is
  weighted by ``softmax(p l)_t``, as the sequence ratio weights the token. Clipping acts per
  token on the value ``s_i`` with the token's advantage sign.
``"gmpo"`` (Geometric-Mean Policy Optimization, Zhao et al., arXiv:2507.20673; verl's
  ``geo_mean``), generalised to power p: each token log-ratio is clipped on the side of the
  sequence's advantage *before* the mean, ``l'_it = min(l_it, hi)`` if ``A_i > 0``,
  ``max(l_it, lo)`` if ``A_i < 0``; then ``s_i = M_p(exp(l'_i))`` and ``L_i = -A_i s_i``
  (clipped tokens get no gradient; no sequence-level clip). p = 0 with
  ``log_clip_low=-0.4, log_clip_high=0.4`` is GMPO's default setting.

Dual clip (``clip_c > 1``; Ye et al. 2020, verl's ``clip_ratio_c``): for ``A < 0`` the clipped
ratio is further capped at ``c``, i.e. ``L = min(L, -A c)``; a dual-clipped unit has zero gradient.
Safety cap (``max_log_ratio``, default 20): any effective log-ratio above it is set to it (zero
gradient), so ``exp`` never overflows however far off-policy the batch is (only the ``A < 0``
side without dual clip can reach it; ``None`` disables the cap).
Bias-corrected centre (``clip_center="bias-corrected"``, sequence levels with a power mean):
for small spread ``log s_p ~ mean(l) + p Var(l) / 2``, so a window centred on 1 bites earlier
on one side when p != 0; this option centres the window of sequence i on
``exp(p_i Var_i / 2)`` (``Var_i`` the variance of its token log-ratios, detached), i.e.
``[lo, hi] + p_i Var_i / 2``. For p = 0 it is the plain window.

Numerics: everything in log space; the ratio is exponentiated only after clamping, as
``exp(x_eff)`` with ``x_eff <= max(hi, log c, max_log_ratio)``. Inputs in float16/bfloat16 are
computed in float32 (float64 stays float64); padding (mask False) may hold NaN or -inf and
never reaches the loss or gradients. ``old_logp``, ``ref_logp`` and ``advantages`` are constants.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from meantheory._inputs import first_index
from rl.losses.adaptive import ADAPTIVE_PS, ADAPTIVE_THRESHOLDS, adaptive_signal, check_thresholds, select_p
from rl.losses.aggregation import check_agg, check_scale, row_weights
from rl.losses.kl import KL_ESTIMATORS, kl_estimate
from rl.losses.learnable import LearnablePowerMean
from rl.losses.means import multiscale_log_ratio, power_log_ratio, rmi_log_ratio

__all__ = ["LEVELS", "MEANS", "CLIP_CENTERS", "OPTIONS", "policy_loss", "sequence_log_ratio"]

LEVELS = ("token", "sequence", "sequence-token", "gmpo")
MEANS = ("power", "adaptive", "rmi", "multiscale")
CLIP_CENTERS = ("plain", "bias-corrected")

#: option name -> default
OPTIONS: dict[str, Any] = {
    "ref_logp": None,
    "kl_coef": 0.0,
    "kl_estimator": "k3",
    "entropy": None,
    "entropy_coef": 0.0,
    "clip_c": None,
    "log_clip_low": None,
    "log_clip_high": None,
    "clip_center": "plain",
    "mean": "power",
    "max_log_ratio": 20.0,
    "loss_scale_factor": None,
    "check": True,
    "metrics": True,
    # mean="rmi"
    "rmi_steps": 5,
    # mean="multiscale"
    "chunk_size": None,
    "chunk_p": 0.0,
    # mean="adaptive"
    "adaptive_signal": "spread",
    "adaptive_thresholds": None,
    "adaptive_ps": ADAPTIVE_PS,
}
_MEAN_OPTIONS = {
    "rmi": ("rmi_steps",),
    "multiscale": ("chunk_size", "chunk_p"),
    "adaptive": ("adaptive_signal", "adaptive_thresholds", "adaptive_ps"),
}


def _real(name: str, v: Any, *, lo: float | None = None, hi: float | None = None, allow_inf: bool = False,
          strict_lo: bool = False) -> float:
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


def _tensor(name: str, t: Any, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name}: expected a floating tensor, got {t.dtype}")
    if shape is not None and tuple(t.shape) != shape:
        raise ValueError(f"{name}: shape {tuple(t.shape)} does not match logp's shape {shape}")
    return t


def _compute_dtype(*ts: torch.Tensor | None) -> torch.dtype:
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in ts) else torch.float32


def _run_checks(checks: list[tuple[str, torch.Tensor, Any]]) -> None:
    """One device sync for all value checks: ``(message, flag, locate)`` with ``flag`` a 0-d bool
    tensor; ``locate()`` gives the boolean mask of offending entries, built only on failure."""
    if not checks:
        return
    flags = torch.stack([flag.reshape(()) for _, flag, _ in checks]).tolist()
    for (msg, _, locate), flag in zip(checks, flags, strict=True):
        if flag:
            raise ValueError(f"{msg} (first at index {first_index(locate())})")


def _resolve_p(p: Any, mask: torch.Tensor, B: int) -> Any:
    if isinstance(p, LearnablePowerMean):
        return p(mask)
    if isinstance(p, bool):
        raise ValueError("p: expected a real number or tensor, got a bool")
    if isinstance(p, int | float):
        if math.isnan(p):
            raise ValueError("p: NaN is not a valid exponent")
        return float(p)
    if isinstance(p, torch.Tensor):
        if not p.is_floating_point():
            raise ValueError(f"p: expected a floating tensor, got {p.dtype}")
        if p.ndim > 1 or (p.ndim == 1 and p.shape[0] != B):
            raise ValueError(f"p: expected a 0-d tensor or one p per sequence [{B}], got shape {tuple(p.shape)}")
        return p
    raise ValueError(f"p: expected a float, a tensor or a LearnablePowerMean, got {type(p).__name__}")


def _p_is_default(p: Any) -> bool:
    return isinstance(p, float) and p == 0.0


def sequence_log_ratio(
    l: torch.Tensor,
    mask: torch.Tensor,
    p: Any = 0.0,
    *,
    mean: str = "power",
    check: bool = True,
    n: torch.Tensor | None = None,
    weights: bool = True,
    adv_seq: torch.Tensor | None = None,
    log_lo: float = math.log(0.8),
    log_hi: float = math.log(1.2),
    **opts: Any,
) -> tuple[torch.Tensor, torch.Tensor, Any, dict[str, torch.Tensor]]:
    """The sequence log-ratio of the chosen mean: ``(log_s [B], pi [B, T], p_in_force, extra)``.

    ``mean="power"``: :func:`rl.losses.means.power_log_ratio` with exponent ``p``.
    ``mean="adaptive"``: p chosen by :mod:`rl.losses.adaptive` (``p`` must be left at 0).
    ``mean="rmi"``: :func:`rl.losses.means.rmi_log_ratio` (``p`` must be left at 0).
    ``mean="multiscale"``: :func:`rl.losses.means.multiscale_log_ratio`, ``p`` across chunks.
    ``extra`` holds detached diagnostics (the adaptive signal).
    """
    extra: dict[str, torch.Tensor] = {}
    if mean == "power":
        log_s, pi = power_log_ratio(l, mask, p, check=check, n=n, weights=weights)
        return log_s, pi, p, extra
    if mean == "adaptive":
        if not _p_is_default(p):
            raise ValueError("p: mean='adaptive' chooses p itself; leave p at 0.0")
        signal = opts.get("adaptive_signal", "spread")
        thr = opts.get("adaptive_thresholds")
        thr = ADAPTIVE_THRESHOLDS.get(signal, (0.0, 0.0)) if thr is None else thr
        thr = check_thresholds(thr)
        ps = opts.get("adaptive_ps", ADAPTIVE_PS)
        try:
            ps = tuple(_real("adaptive_ps", float(v) if isinstance(v, int) and not isinstance(v, bool) else v,
                             allow_inf=True) for v in ps)
        except TypeError as exc:
            raise ValueError(f"adaptive_ps: expected three numbers, got {ps!r}") from exc
        if len(ps) != 3:
            raise ValueError(f"adaptive_ps: expected three numbers (stable, middle, unstable), got {ps!r}")
        u = adaptive_signal(l, mask, signal, adv_seq=adv_seq, log_lo=log_lo, log_hi=log_hi)
        p_t = select_p(u, thr, ps)
        extra["adaptive_signal"] = u
        log_s, pi = power_log_ratio(l, mask, p_t.expand(l.shape[0]), check=check, n=n)
        return log_s, pi, p_t, extra
    if mean == "rmi":
        if not _p_is_default(p):
            raise ValueError("p: mean='rmi' has no exponent (it iterates arithmetic and harmonic means); leave p at 0.0")
        log_s, pi = rmi_log_ratio(l, mask, opts.get("rmi_steps", 5), check=check)
        return log_s, pi, None, extra
    if mean == "multiscale":
        k = opts.get("chunk_size")
        if k is None:
            raise ValueError("chunk_size: mean='multiscale' needs chunk_size (tokens per chunk)")
        log_s, pi = multiscale_log_ratio(l, mask, p, chunk_size=k, chunk_p=opts.get("chunk_p", 0.0), check=check)
        return log_s, pi, p, extra
    raise ValueError(f"mean: unknown mean {mean!r}; expected one of {', '.join(MEANS)}")


def _bound(a: Any, b: Any, op: str) -> Any:
    """min/max of two bounds, each a float, a tensor or None (no bound)."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        t, other = (a, b) if isinstance(a, torch.Tensor) else (b, a)
        return t.clamp_max(other) if op == "min" else t.clamp_min(other)
    return min(a, b) if op == "min" else max(a, b)


def _is_inf(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isinf(v))


def _effective(x: torch.Tensor, A: torch.Tensor, lo: Any, hi: Any, upper_neg: Any) -> torch.Tensor:
    """The log-ratio inside ``-A exp(.)`` equal to ``-min(r A, clip(r) A)`` with dual clip and cap.

    ``A >= 0``: ``min(x, hi)``; ``A < 0``: ``min(max(x, lo), upper_neg)`` (``upper_neg`` = the
    dual-clip ``log c`` and/or the cap). Done as one clamp with per-row bounds chosen by the
    sign of ``A`` (no gradient through the bounds); clamped entries have zero gradient, as
    the clipped branch of the PPO minimum does.
    """
    neg = A < 0
    inf = math.inf
    lo = -inf if lo is None else lo
    hi = inf if hi is None else hi
    upper_neg = inf if upper_neg is None else upper_neg
    # torch.where makes Python numbers default-dtype tensors; wider inputs need their own dtype.
    if torch.finfo(torch.get_default_dtype()).bits < torch.finfo(x.dtype).bits:
        lo, hi, upper_neg, neg_inf = (v if isinstance(v, torch.Tensor) else torch.full((), v, dtype=x.dtype, device=x.device)
                                      for v in (lo, hi, upper_neg, -inf))
    else:
        neg_inf = -inf
    # A = 0 takes the A > 0 bounds: its loss is 0 either way, and min(x, hi) keeps exp finite.
    lower = torch.where(neg, lo, neg_inf)
    upper = torch.where(neg, upper_neg, hi)
    return torch.clamp(x, min=lower.to(x.dtype), max=upper.to(x.dtype))


def _clip_flags(x: torch.Tensor, A: torch.Tensor, lo: Any, hi: Any, log_c: float | None, cap: float | None):
    """Boolean masks (low, high, dual, cap) of which clip acted, for the metrics."""
    high = (A > 0) & (x > hi)
    low = (A < 0) & (x < lo)
    x1 = torch.where(A < 0, x if _is_inf(lo) else x.clamp_min(lo), x if _is_inf(hi) else x.clamp_max(hi))
    dual = None
    if log_c is not None:
        dual = (A < 0) & (x1 > log_c)
        x1 = torch.where(A < 0, x1.clamp_max(log_c), x1)
    capped = None if cap is None else x1 > cap
    return low, high, dual, capped


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    level: str = "sequence",
    p: Any = 0.0,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    agg: str = "seq-mean-token-mean",
    **options: Any,
) -> tuple[torch.Tensor, dict[str, float]]:
    r"""Clipped policy-gradient loss of a batch; see the module docstring for every formula.

    Args:
      logp: ``[B, T]`` log-probabilities of the sampled tokens under the current policy
        (differentiable).
      old_logp: ``[B, T]`` the same under the behaviour policy (constant).
      advantages: ``[B]`` or ``[B, T]``. Levels ``"sequence"`` and ``"gmpo"`` need one advantage
        per sequence: a ``[B, T]`` tensor must be constant over each sequence's tokens (checked
        when ``check``; otherwise its token mean is used); use ``"sequence-token"`` or
        ``"token"`` for per-token advantages.
      mask: ``[B, T]`` bool, True for response tokens.
      level: ``"token"``, ``"sequence"``, ``"sequence-token"`` or ``"gmpo"``.
      p: exponent of the sequence power mean: a float (any real, ``+-inf`` included), a tensor
        (0-d, or ``[B]`` one per sequence; may require grad), or a
        :class:`~rl.losses.LearnablePowerMean`. ``0`` is GSPO's geometric mean, ``-1`` HMPO's
        harmonic mean, ``1`` the arithmetic mean. Must stay 0 for ``level="token"``.
      eps_low, eps_high: clip window ``[1 - eps_low, 1 + eps_high]``; ``eps_high=None`` means
        ``eps_low``; ``0 <= eps_low <= 1``, ``eps_high >= 0`` (``inf``: no upper clip).
      agg: ``"token-mean"``, ``"seq-mean-token-mean"``, ``"seq-mean-token-sum"``,
        ``"seq-mean-token-sum-norm"`` (:mod:`rl.losses.aggregation`).

    Options:
      ref_logp, kl_coef, kl_estimator: adds ``kl_coef * agg(KL estimate)`` (``"k1"``, ``"k2"``,
        ``"k3"``, :mod:`rl.losses.kl`) to a reference policy.
      entropy, entropy_coef: subtracts ``entropy_coef * agg(entropy)`` (per-token ``[B, T]``).
      clip_c: dual-clip constant ``> 1`` for negative advantages (None: off).
      log_clip_low, log_clip_high: clip bounds in log space (override ``eps_*``); ``lo <= 0 <= hi``.
      clip_center: ``"plain"`` or ``"bias-corrected"``.
      mean: ``"power"``, ``"adaptive"`` (``adaptive_signal``, ``adaptive_thresholds``,
        ``adaptive_ps``), ``"rmi"`` (``rmi_steps``), ``"multiscale"`` (``chunk_size``,
        ``chunk_p``); see :func:`sequence_log_ratio`.
      max_log_ratio: safety cap of the effective log-ratio (default 20; None: off).
      loss_scale_factor: the divisor of ``"seq-mean-token-sum-norm"`` (default ``T``).
      check: validate values (NaN/inf on unmasked tokens, NaN p, non-constant sequence
        advantages); costs one device sync. ``False`` for hot loops: no sync at all when
        ``metrics=False`` too.
      metrics: compute the metrics dict (under ``no_grad``; one device sync to read them).

    Returns:
      ``(loss, metrics)``: the 0-d loss (float32, or float64 for float64 input) and a dict of
      floats: ``loss``, ``pg_loss``, ``clip_frac`` (= low + high + dual), ``clip_frac_low``,
      ``clip_frac_high``, ``clip_frac_dual``, ``clip_frac_cap`` (over tokens for
      ``"token"``/``"sequence-token"``, over sequences for ``"sequence"``; for ``"gmpo"``
      low/high over tokens and dual/cap over sequences), ``seq_ratio_mean/min/max`` (for
      ``"token"``: the geometric-mean ratio of each sequence), ``token_weight_ess`` (mean over
      sequences of ``1 / (n sum pi^2)`` in (0, 1]; for ``"token"`` the weights are the token
      ratios), ``approx_kl_old`` (k3) and ``approx_kl_old_k1`` (token means, KL(old || new)),
      ``n_seqs``, ``n_tokens``; ``p``, ``p_min``, ``p_max`` (the exponent in force, over
      sequences) for power/adaptive/multiscale means; ``adaptive_signal``; ``kl_ref``;
      ``entropy``. Statistics over an empty set are NaN; the loss never is.

    Raises:
      ValueError: unknown level/agg/mean/option names, shapes or dtypes that do not match, a
        non-bool mask, NaN p, bad clip parameters, and (with ``check``) bad values.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"policy_loss: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(OPTIONS))}")
    o = {**OPTIONS, **options}
    if level not in LEVELS:
        raise ValueError(f"level: unknown level {level!r}; expected one of {', '.join(LEVELS)}")
    check_agg(agg)
    check_scale(o["loss_scale_factor"])
    mean = o["mean"]
    if mean not in MEANS:
        raise ValueError(f"mean: unknown mean {mean!r}; expected one of {', '.join(MEANS)}")
    for m_name, names in _MEAN_OPTIONS.items():
        for nm in names:
            if nm in options and mean != m_name:
                raise ValueError(f"{nm}: only applies to mean={m_name!r} (mean is {mean!r})")
    if o["clip_center"] not in CLIP_CENTERS:
        raise ValueError(f"clip_center: unknown value {o['clip_center']!r}; expected one of {', '.join(CLIP_CENTERS)}")
    if o["kl_estimator"] not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator: unknown estimator {o['kl_estimator']!r}; expected one of {', '.join(KL_ESTIMATORS)}")
    check = bool(o["check"])
    want_metrics = bool(o["metrics"])

    # ---- tensors and shapes
    logp = _tensor("logp", logp)
    if logp.ndim != 2:
        raise ValueError(f"logp: expected a [B, T] tensor, got shape {tuple(logp.shape)}")
    shape = tuple(logp.shape)
    B, T = shape
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
    ref_logp = o["ref_logp"]
    kl_coef = _real("kl_coef", o["kl_coef"])
    if ref_logp is not None:
        ref_logp = _tensor("ref_logp", ref_logp, shape)
    elif kl_coef != 0.0:
        raise ValueError("kl_coef: a KL penalty needs ref_logp")
    entropy = o["entropy"]
    entropy_coef = _real("entropy_coef", o["entropy_coef"])
    if entropy is not None:
        entropy = _tensor("entropy", entropy, shape)
    elif entropy_coef != 0.0:
        raise ValueError("entropy_coef: an entropy bonus needs entropy")

    # ---- clip parameters
    eps_low = _real("eps_low", eps_low, lo=0.0, hi=1.0)
    eps_high = eps_low if eps_high is None else _real("eps_high", eps_high, lo=0.0, allow_inf=True)
    lo = math.log(1.0 - eps_low) if eps_low < 1.0 else -math.inf
    hi = math.log1p(eps_high)
    if o["log_clip_low"] is not None:
        lo = _real("log_clip_low", o["log_clip_low"], hi=0.0, allow_inf=True)
    if o["log_clip_high"] is not None:
        hi = _real("log_clip_high", o["log_clip_high"], lo=0.0, allow_inf=True)
    log_c = None
    if o["clip_c"] is not None:
        log_c = math.log(_real("clip_c", o["clip_c"], lo=1.0, strict_lo=True, allow_inf=True))
        if math.isinf(log_c):
            log_c = None
    cap = o["max_log_ratio"]
    if cap is not None:
        cap = _real("max_log_ratio", cap, lo=0.0, strict_lo=True)
    bias_corrected = o["clip_center"] == "bias-corrected"
    if bias_corrected and (level in ("token", "gmpo") or mean not in ("power", "adaptive")):
        raise ValueError("clip_center: 'bias-corrected' applies to levels 'sequence'/'sequence-token' with mean "
                         f"'power' or 'adaptive' (got level={level!r}, mean={mean!r})")

    # ---- p
    p = _resolve_p(p, mask, B)
    if level == "token":
        if not _p_is_default(p):
            raise ValueError("p: level='token' uses each token's own ratio; p has no effect there (leave it at 0.0)")
        if mean != "power":
            raise ValueError(f"mean: level='token' has no sequence mean (got mean={mean!r})")

    dtype = _compute_dtype(logp, old_logp, advantages, ref_logp)
    lp = logp.to(dtype)
    l = lp - old_logp.detach().to(dtype)
    adv = advantages.detach().to(dtype)
    # Summing the mask's bytes is several times faster than a bool sum on CPU.
    n = mask.view(torch.uint8).sum(dim=-1, dtype=torch.int32).to(dtype)
    nonempty = n > 0
    seq_level = level in ("sequence", "gmpo")
    if adv.ndim == 1:
        a_seq = adv
        a_tok = adv.unsqueeze(-1)
    else:
        a_tok = torch.where(mask, adv, 0.0)
        a_seq = a_tok.sum(-1) / n.clamp(min=1.0) if (seq_level or want_metrics) else None

    # ---- value checks (one sync). A masked sum of x * 0 is NaN exactly when an unmasked x is
    # NaN or +-inf, and costs fewer passes than isfinite/and/any; the exact index is located
    # only on failure.
    if check:

        def nonfinite(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            return torch.isnan(torch.where(m, x * 0.0, 0.0).sum())

        def locate(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            return m & ~torch.isfinite(x)

        checks: list[tuple[str, torch.Tensor, Any]] = [
            ("logp: NaN or inf on an unmasked token", nonfinite(logp, mask), lambda: locate(logp, mask)),
            ("old_logp: NaN or inf on an unmasked token", nonfinite(old_logp, mask), lambda: locate(old_logp, mask)),
        ]
        if adv.ndim == 1:
            checks.append(("advantages: NaN or inf for a sequence with tokens", nonfinite(adv, nonempty),
                           lambda: locate(adv, nonempty)))
        else:
            checks.append(("advantages: NaN or inf on an unmasked token", nonfinite(adv, mask),
                           lambda: locate(adv, mask)))
            if seq_level:
                dev = (a_tok - a_seq.unsqueeze(-1)).abs()
                tol = 1e-6 * (1.0 + a_seq.abs().unsqueeze(-1))
                varies = mask & (dev > tol)
                checks.append((f"advantages: level={level!r} needs one advantage per sequence, but a [B, T] "
                               "advantage varies within a sequence (use level='sequence-token' for per-token "
                               "advantages)", varies.any(), lambda: varies))
        if isinstance(p, torch.Tensor):
            p_nan = torch.isnan(p.detach()).reshape(-1)
            checks.append(("p: NaN exponent", p_nan.any(), lambda: p_nan))
        if ref_logp is not None:
            checks.append(("ref_logp: NaN or inf on an unmasked token", nonfinite(ref_logp, mask),
                           lambda: locate(ref_logp, mask)))
        if entropy is not None:
            checks.append(("entropy: NaN or inf on an unmasked token", nonfinite(entropy, mask),
                           lambda: locate(entropy, mask)))
        _run_checks(checks)

    # ---- the surrogate: pg = -sum_i w_i sum_t m_it A exp(x_eff)
    hi_c = _bound(hi, cap, "min")
    up_neg = _bound(log_c, cap, "min")
    p_used: Any = None
    extra: dict[str, torch.Tensor] = {}
    pi: torch.Tensor | None = None
    log_s: torch.Tensor | None = None
    lo_b: Any = lo
    hi_b: Any = hi
    mean_opts = {k: o[k] for names in _MEAN_OPTIONS.values() for k in names}
    # agg(L) = sum_i w_i sum_t m_it L_it; a sequence-level loss L_i enters as (w_i n_i) L_i.
    w = row_weights(n, agg, T, o["loss_scale_factor"], times_n=seq_level)
    if level == "token":
        ls = torch.where(mask, l, 0.0)
        x = _effective(ls, a_tok, lo, hi_c, up_neg)
        pg = -torch.dot(torch.where(mask, torch.exp(x) * a_tok, 0.0).sum(-1), w)
    elif level in ("sequence", "sequence-token"):
        # check=False: the values meantheory would check (finite l on the mask, p not NaN) were
        # checked above; checking them again costs passes and a sync in the default mode.
        log_s, pi, p_used, extra = sequence_log_ratio(
            l, mask, p, mean=mean, check=False, n=n, weights=want_metrics or level == "sequence-token",
            adv_seq=a_seq, log_lo=lo, log_hi=hi, **mean_opts)
        if bias_corrected:
            with torch.no_grad():
                ls0 = torch.where(mask, l, 0.0)
                n1 = n.clamp(min=1.0)
                mu = ls0.sum(-1, keepdim=True) / n1.unsqueeze(-1)
                var = torch.where(mask, (ls0 - mu) ** 2, 0.0).sum(-1) / n1
                pv = p_used.detach().to(dtype) if isinstance(p_used, torch.Tensor) else float(p_used)
                shift = (pv * var / 2).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
            lo_b, hi_b = shift + lo, shift + hi
        if level == "sequence":
            x = _effective(log_s, a_seq, lo_b, _bound(hi_b, cap, "min"), up_neg)
            coef = torch.where(nonempty, a_seq, 0.0).mul_(w).neg_()
            pg = torch.dot(coef, torch.exp(x))
        else:
            ls = torch.where(mask, l, 0.0)
            x_tok = log_s.detach().unsqueeze(-1) + (n.unsqueeze(-1) * pi) * (ls - ls.detach())
            col = (lambda b: b.unsqueeze(-1) if isinstance(b, torch.Tensor) else b)
            x = _effective(x_tok, a_tok, col(lo_b), col(_bound(hi_b, cap, "min")), up_neg)
            pg = -torch.dot(torch.where(mask, torch.exp(x) * a_tok, 0.0).sum(-1), w)
    else:  # gmpo: sign-aware token clip in log space, then the mean
        ls = torch.where(mask, l, 0.0)
        lc = torch.where(a_seq.unsqueeze(-1) < 0, ls if _is_inf(lo) else ls.clamp_min(lo),
                         ls if _is_inf(hi) else ls.clamp_max(hi))
        log_s, pi, p_used, extra = sequence_log_ratio(  # check=False: as for "sequence" above
            lc, mask, p, mean=mean, check=False, n=n, weights=want_metrics, adv_seq=a_seq,
            log_lo=lo, log_hi=hi, **mean_opts)
        x = _effective(log_s, a_seq, None, cap, up_neg)
        coef = torch.where(nonempty, a_seq, 0.0).mul_(w).neg_()
        pg = torch.dot(coef, torch.exp(x))

    loss = pg
    if (ref_logp is not None and kl_coef != 0.0) or (entropy is not None and entropy_coef != 0.0):
        w_tok = row_weights(n, agg, T, o["loss_scale_factor"])
    kl_mat = None
    if ref_logp is not None:
        kl_mat = kl_estimate(lp, ref_logp.to(dtype), o["kl_estimator"], max_log_ratio=cap)
        if kl_coef != 0.0:
            loss = loss + kl_coef * torch.dot(torch.where(mask, kl_mat, 0.0).sum(-1), w_tok)
    ent = None
    if entropy is not None:
        ent = entropy.to(dtype)
        if entropy_coef != 0.0:
            loss = loss - entropy_coef * torch.dot(torch.where(mask, ent, 0.0).sum(-1), w_tok)

    if not want_metrics:
        return loss, {}
    with torch.no_grad():
        metrics = _metrics(
            loss=loss, pg=pg, l=l, mask=mask, n=n, nonempty=nonempty, level=level, log_s=log_s, pi=pi,
            a_tok=a_tok, a_seq=a_seq, lo=lo_b, hi=hi_b, log_c=log_c, cap=cap, p_used=p_used, mean=mean,
            extra=extra, kl_mat=kl_mat, ent=ent,
        )
    return loss, metrics


def _metrics(*, loss, pg, l, mask, n, nonempty, level, log_s, pi, a_tok, a_seq, lo, hi, log_c, cap, p_used, mean,
             extra, kl_mat, ent):
    """The metrics dict; every [B, T] pass here is paid only when metrics are asked for."""
    dtype = l.dtype
    nan = torch.full((), math.nan, dtype=dtype, device=l.device)
    n_tok = n.sum()
    n_seq = nonempty.sum().to(dtype)
    ls = torch.where(mask, l, 0.0)

    def tok_frac(flag: torch.Tensor) -> torch.Tensor:
        return (flag & mask).sum().to(dtype) / n_tok

    def seq_mean(x: torch.Tensor) -> torch.Tensor:
        return torch.where(nonempty, x.to(dtype), 0.0).sum() / n_seq

    def seq_frac_by_tokens(flag: torch.Tensor) -> torch.Tensor:
        return torch.where(flag & nonempty, n, 0.0).sum() / n_tok

    col = (lambda b: b.unsqueeze(-1) if isinstance(b, torch.Tensor) else b)
    zero = torch.zeros((), dtype=dtype, device=l.device)
    if level == "token":
        fr = [None if f is None else tok_frac(f) for f in _clip_flags(ls, a_tok, lo, hi, log_c, cap)]
    elif level == "sequence-token":
        if a_tok.shape[-1] == 1:  # one advantage per sequence: the flags are per sequence
            fr = [None if f is None else seq_frac_by_tokens(f)
                  for f in _clip_flags(log_s.detach(), a_seq, lo, hi, log_c, cap)]
        else:
            x_tok = log_s.detach().unsqueeze(-1).expand_as(ls)
            fr = [None if f is None else tok_frac(f) for f in _clip_flags(x_tok, a_tok, col(lo), col(hi), log_c, cap)]
    elif level == "sequence":
        fr = [None if f is None else seq_mean(f) for f in _clip_flags(log_s.detach(), a_seq, lo, hi, log_c, cap)]
    else:  # gmpo: token clips per side, then dual/cap on the sequence ratio
        a_col = a_seq.unsqueeze(-1)
        _, _, dual, capped = _clip_flags(log_s.detach(), a_seq, -math.inf, math.inf, log_c, cap)
        fr = [tok_frac((a_col < 0) & (ls < lo)), tok_frac((a_col > 0) & (ls > hi)),
              None if dual is None else seq_mean(dual), None if capped is None else seq_mean(capped)]
    low, high, dual, capped = (zero if f is None else f for f in fr)

    out: dict[str, torch.Tensor] = {"loss": loss.detach(), "pg_loss": pg.detach()}
    out.update(clip_frac=low + high + dual, clip_frac_low=low, clip_frac_high=high, clip_frac_dual=dual,
               clip_frac_cap=capped)
    ls_sum = ls.sum(-1)
    if log_s is None:  # token level: the geometric-mean ratio of each sequence, weights = token ratios
        log_s = ls_sum / n.clamp(min=1.0)
        lm = torch.where(mask, l, -math.inf)
        log_ess = 2 * torch.logsumexp(lm, -1) - torch.logsumexp(2 * lm, -1) - torch.log(n.clamp(min=1.0))
        ess = torch.exp(torch.where(nonempty, log_ess, 0.0))
    else:
        ess = 1.0 / (n.clamp(min=1.0) * (pi * pi).sum(-1)).clamp(min=torch.finfo(dtype).tiny)
    ratio = torch.exp(log_s.detach().to(torch.float64).clamp(-700.0, 700.0))
    out["seq_ratio_mean"] = torch.where(nonempty, ratio, 0.0).sum() / n_seq.to(torch.float64)
    out["seq_ratio_min"] = torch.where(nonempty, ratio, math.inf).amin() if ratio.numel() else nan
    out["seq_ratio_max"] = torch.where(nonempty, ratio, -math.inf).amax() if ratio.numel() else nan
    out["token_weight_ess"] = seq_mean(ess)
    lc = ls if cap is None else ls.clamp_max(cap)
    out["approx_kl_old"] = torch.expm1(lc).sub_(lc).sum() / n_tok  # k3 = r - 1 - log r; 0 on padding
    out["approx_kl_old_k1"] = -ls_sum.sum() / n_tok
    out["n_seqs"] = n_seq
    out["n_tokens"] = n_tok
    if level != "token" and mean != "rmi" and p_used is not None:
        pv = p_used.detach() if isinstance(p_used, torch.Tensor) else torch.full((), float(p_used), dtype=dtype,
                                                                                  device=l.device)
        pv = pv.to(dtype).expand(l.shape[0])
        out["p"] = seq_mean(pv)
        out["p_min"] = torch.where(nonempty, pv, math.inf).amin()
        out["p_max"] = torch.where(nonempty, pv, -math.inf).amax()
    if "adaptive_signal" in extra:
        out["adaptive_signal"] = extra["adaptive_signal"]
    if kl_mat is not None:
        out["kl_ref"] = torch.where(mask, kl_mat, 0.0).sum() / n_tok
    if ent is not None:
        out["entropy"] = torch.where(mask, ent, 0.0).sum() / n_tok
    keys = list(out)
    vals = torch.stack([v.detach().to(torch.float64).reshape(()) for v in out.values()]).tolist()
    res = dict(zip(keys, vals, strict=True))
    if not res["n_seqs"]:
        for k in ("p", "p_min", "p_max", "seq_ratio_min", "seq_ratio_max"):
            if k in res:
                res[k] = math.nan
    return res

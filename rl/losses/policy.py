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

Structure: :class:`~rl.losses.LossConfig` holds the validated options (built once per run);
:func:`loss_from_config` prepares the batch (:mod:`rl.losses.batch`), picks the level's
surrogate from :data:`SURROGATES`, clips with :func:`rl.losses.clipping.clip_log_ratio` per token
and :func:`rl.losses.clipping.clipped_sum` per sequence (which also return the flags the metrics
count; the latter clips, exponentiates and aggregates in one autograd node), adds the KL and entropy terms, and computes the
metrics apart (:mod:`rl.losses.metrics`); :func:`policy_loss` is the keyword wrapper that TRL
and verl call. With one advantage per sequence, ``"sequence-token"`` has exactly the value and
gradient of ``"sequence"`` (each token's term is ``-A_i s_i`` with gradient ``-A_i s_i n_i pi_it``,
so the token sum is the sequence term weighted by ``n_i``): it is computed as such, and differs
only in counting its clip fractions over tokens.

Numerics: everything in log space; the ratio is exponentiated only after clamping, as
``exp(x_eff)`` with ``x_eff <= max(hi, log c, max_log_ratio)``. Inputs in float16/bfloat16 are
computed in float32 (float64 stays float64); padding (mask False) may hold NaN or -inf and
never reaches the loss or gradients. ``old_logp``, ``ref_logp`` and ``advantages`` are constants.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch

from rl.losses.aggregation import row_weights
from rl.losses.batch import Batch, prepare, value_checks
from rl.losses.clipping import Bound, clip_log_ratio, clipped_sum, window_shift
from rl.losses.config import LossConfig
from rl.losses.kl import kl_estimate
from rl.losses.means import power_ratio, sequence_log_ratio
from rl.losses.metrics import Surrogate, loss_metrics, read_back

__all__ = ["SURROGATES", "loss_from_config", "policy_loss"]


# --------------------------------------------------------------------------- pieces


def _token_sum(x: torch.Tensor, b: Batch, config: LossConfig) -> torch.Tensor:
    """``agg`` of a per-token loss ``x`` [B, T] (padding may hold anything)."""
    w = row_weights(b.n, config.agg, b.T, config.loss_scale_factor)
    return torch.dot(torch.where(b.mask, x, 0.0).sum(-1), w)


def _sequence_coef(b: Batch, config: LossConfig) -> torch.Tensor:
    """``coef_i = -w_i A_i`` [B]: the sequence-level loss ``-A_i exp(x_i)`` broadcast over each
    sequence's tokens has ``agg = sum_i coef_i exp(x_i)``
    (:func:`rl.losses.aggregation.aggregate_sequences`); 0 on a row without tokens (``A = 0``)."""
    if config.agg == "seq-mean-token-mean":
        # GSPO's mean over the sequences with tokens: an empty row's A is 0, so its term needs no
        # mask, and the count is B where every row is known to have tokens (the same division
        # either way: the same bits on every device).
        return b.a_seq / (-float(b.n.shape[0]) if b.every_row_nonempty else -b.n_seq.clamp(min=1.0))
    w = row_weights(b.n, config.agg, b.T, config.loss_scale_factor, times_n=True, nonempty=b.nonempty,
                    n_seq=b.n_seq)
    return torch.mul(b.a_seq, w).neg_()


def _geometric(b: Batch, config: LossConfig) -> bool:
    """The geometric mean (GSPO): its token weights are 1/n_i by definition, so the metrics need
    not form them."""
    return config.mean == "power" and isinstance(b.p, float) and b.p == 0.0


def _sequence_ratio(b: Batch, config: LossConfig, l: torch.Tensor, weights: bool, p: Any = None,
                    sum_sq: bool = False):
    """``(log_s, pi, p_in_force, extra, pi_sum_sq)`` of the configured mean over ``l`` [B, T] (``pi``
    if ``weights``; ``sum_t pi_t^2`` [B] if ``sum_sq`` and the mean is a power mean, which gives it
    without forming ``pi``; ``p`` overrides the batch's exponent)."""
    win = config.window
    p = b.p if p is None else p
    # The batch's masked row sums (which the checks and metrics read too) are the geometric mean's,
    # and its mask as numbers, counts and zero-filled log-ratios feed the masked fast path.
    own = l is b.l
    # check=False: the values meantheory would check (finite l on the mask, p not NaN) are
    # checked by the loss (rl.losses.batch.value_checks), once.
    if config.mean == "power":
        r = power_ratio(l, b.mask, p, check=False, n=b.n, weights=weights, sum_sq=sum_sq,
                        row_sum=b.row_sum if own and _geometric(b, config) else None, rows=b.rows if own else None)
        return r.log_s, r.pi, p, {}, r.pi_sum_sq
    log_s, pi, p_used, extra = sequence_log_ratio(l, b.mask, p, mean=config.mean, check=False, n=b.n,
                                                  weights=weights or sum_sq, adv_seq=b.a_seq, log_lo=win.lo,
                                                  log_hi=win.hi, clip_l=b.l, **config.mean_options)
    return log_s, pi, p_used, extra, None


def _window(b: Batch, config: LossConfig, p: Any) -> tuple[Bound, Bound]:
    """``(lo, hi)`` in force: the plain window, or shifted by ``p Var / 2`` per sequence."""
    win = config.window
    if not config.bias_corrected:
        return win.lo, win.hi
    shift = window_shift(b.ls, b.mask, b.n, p)
    return shift + win.lo, shift + win.hi


def _col(v: Bound) -> Bound:
    return v.unsqueeze(-1) if isinstance(v, torch.Tensor) else v


# --------------------------------------------------------------------------- one surrogate per level


def token_surrogate(b: Batch, config: LossConfig) -> Surrogate:
    """PPO/GRPO: ``L_it = -min(r_it A, clip(r_it) A)`` for every token."""
    win = config.window
    x, flags = clip_log_ratio(b.ls, b.a_tok, lo=win.lo, hi=win.hi, log_c=win.log_c, cap=win.cap,
                              flags=config.metrics)
    pg = _token_sum(-torch.exp(x) * b.a_tok, b, config)
    return Surrogate(pg=pg, clips=((flags, "token"),))


def sequence_surrogate(b: Batch, config: LossConfig) -> Surrogate:
    """GSPO/HMPO: ``L_i = -min(s_i A_i, clip(s_i) A_i)`` with ``s_i = M_p(r_i)``."""
    return _sequence_level(b, config, b.p, "sequence")


def _sequence_level(b: Batch, config: LossConfig, p: Any, unit: str) -> Surrogate:
    win = config.window
    geometric = _geometric(b, config)
    log_s, pi, p_used, extra, sq = _sequence_ratio(b, config, b.l, weights=False, p=p,
                                                   sum_sq=config.metrics and not geometric)
    lo, hi = _window(b, config, p_used)
    pg, flags = clipped_sum(log_s, b.a_seq, _sequence_coef(b, config), lo=lo, hi=hi, log_c=win.log_c, cap=win.cap,
                            flags=config.metrics)
    return Surrogate(pg=pg, log_s=log_s, pi=pi, pi_sum_sq=sq, uniform_pi=geometric, p_used=p_used, extra=extra,
                     clips=((flags, unit),))


def sequence_token_surrogate(b: Batch, config: LossConfig) -> Surrogate:
    """GSPO-token: ``log s_it = sg[log s_i] + n_i sg[pi_it] (l_it - sg[l_it])``, clipped per token."""
    if not b.per_token_adv:
        # The same value and gradient as "sequence" (module doc). sg[log s_i] passes no gradient
        # to p, so a learnable p is detached here as it is below.
        p = b.p.detach() if isinstance(b.p, torch.Tensor) else b.p
        return _sequence_level(b, config, p, "sequence-tokens")
    win = config.window
    log_s, pi, p_used, extra, _ = _sequence_ratio(b, config, b.l, weights=True)
    lo, hi = _window(b, config, p_used)
    ls = b.ls
    x_tok = log_s.detach().unsqueeze(-1) + (b.n.unsqueeze(-1) * pi) * (ls - ls.detach())
    x, flags = clip_log_ratio(x_tok, b.a_tok, lo=_col(lo), hi=_col(hi), log_c=win.log_c, cap=win.cap,
                              flags=config.metrics)
    pg = _token_sum(-torch.exp(x) * b.a_tok, b, config)
    return Surrogate(pg=pg, log_s=log_s, pi=pi, p_used=p_used, extra=extra, clips=((flags, "token"),))


def gmpo_surrogate(b: Batch, config: LossConfig) -> Surrogate:
    """GMPO: token log-ratios clipped on the advantage's side, then ``L_i = -A_i M_p(exp(l'_i))``."""
    win = config.window
    lc, tok_flags = clip_log_ratio(b.ls, b.a_seq.unsqueeze(-1), lo=win.lo, hi=win.hi, flags=config.metrics)
    geometric = _geometric(b, config)
    log_s, pi, p_used, extra, sq = _sequence_ratio(b, config, lc, weights=False,
                                                   sum_sq=config.metrics and not geometric)
    pg, seq_flags = clipped_sum(log_s, b.a_seq, _sequence_coef(b, config), lo=-math.inf, hi=math.inf,
                                log_c=win.log_c, cap=win.cap, flags=config.metrics)
    return Surrogate(pg=pg, log_s=log_s, pi=pi, pi_sum_sq=sq, uniform_pi=geometric, p_used=p_used, extra=extra,
                     clips=((tok_flags, "token"), (seq_flags, "sequence")))


#: level -> its surrogate
SURROGATES: dict[str, Callable[[Batch, LossConfig], Surrogate]] = {
    "token": token_surrogate,
    "sequence": sequence_surrogate,
    "sequence-token": sequence_token_surrogate,
    "gmpo": gmpo_surrogate,
}


# --------------------------------------------------------------------------- the loss


def loss_from_config(
    config: LossConfig,
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logp: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of :func:`policy_loss` for a prebuilt configuration (see there for arguments and returns).

    ``pg + kl_coef agg(KL(logp || ref_logp)) - entropy_coef agg(entropy)``; metrics (when
    ``config.metrics``) and the value checks (when ``config.check``) are read in one sync.
    """
    b = prepare(config, logp, old_logp, advantages, mask, ref_logp, entropy)
    checks = value_checks(b, config) if config.check else []
    sur = SURROGATES[config.level](b, config)
    loss = sur.pg
    kl = None
    if b.ref_logp is not None:
        kl = kl_estimate(b.logp, b.ref_logp, config.kl_estimator, max_log_ratio=config.window.cap)
        if config.kl_coef != 0.0:
            loss = loss + config.kl_coef * _token_sum(kl, b, config)
    if b.entropy is not None and config.entropy_coef != 0.0:
        loss = loss - config.entropy_coef * _token_sum(b.entropy, b, config)
    metrics = loss_metrics(loss, sur, b, max_log_ratio=config.window.cap, kl=kl) if config.metrics else None
    return loss, read_back(checks, metrics)


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    level: str = LossConfig.level,
    p: Any = LossConfig.p,
    eps_low: float = LossConfig.eps_low,
    eps_high: float | None = LossConfig.eps_high,
    agg: str = LossConfig.agg,
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
        ``adaptive_ps``), ``"pmpo"`` (p per sequence by PMPO's clip-aware ESS rule), ``"rmi"``
        (``rmi_steps``), ``"multiscale"`` (``chunk_size``, ``chunk_p``); see :func:`sequence_log_ratio`.
      max_log_ratio: safety cap of the effective log-ratio (default 20; None: off).
      loss_scale_factor: the divisor of ``"seq-mean-token-sum-norm"`` (default ``T``).
      check: validate values (NaN/inf on unmasked tokens, NaN p, non-constant sequence
        advantages), read back with the metrics in one device sync. ``False`` for hot loops: no
        sync at all when ``metrics=False`` too.
      metrics: compute the metrics dict (under ``no_grad``, from what the loss computed).

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
      sequences) for power/adaptive/pmpo/multiscale means; ``adaptive_signal``; ``kl_ref``;
      ``entropy``. Statistics over an empty set are NaN; the loss never is: a batch without
      tokens (all masked, or ``[B, 0]``) gives a loss of exactly 0 that depends on ``logp``
      with gradient 0.

    Raises:
      ValueError: unknown level/agg/mean/option names, shapes or dtypes that do not match, a
        non-bool mask, NaN p, bad clip parameters, and (with ``check``) bad values.
    """
    ref_logp = options.pop("ref_logp", None)
    entropy = options.pop("entropy", None)
    options.update(level=level, p=p, eps_low=eps_low, eps_high=eps_high, agg=agg)
    return loss_from_config(_config(options), logp, old_logp, advantages, mask, ref_logp=ref_logp, entropy=entropy)


def _config(options: dict[str, Any]) -> LossConfig:
    """``LossConfig.create(**options)``, remembered for options that are plain values (a trainer
    calls with the same ones every step; validating them costs as much as a few kernels)."""
    try:
        # the type is part of the key: True == 1 == 1.0 hash alike, but only 1.0 is a valid p; the
        # order is the call's (a call site keeps it: one entry per site, no sort per call)
        key = tuple((k, type(v), v) for k, v in options.items())
        hash(key)
    except TypeError:  # a tensor p, a LearnablePowerMean, a list: built afresh
        return LossConfig.create(**options)
    if any(isinstance(v, torch.Tensor | torch.nn.Module) for v in options.values()):
        return LossConfig.create(**options)
    return _cached_config(key)


@functools.lru_cache(maxsize=64)
def _cached_config(key: tuple) -> LossConfig:
    return LossConfig.create(**{k: v for k, _, v in key})

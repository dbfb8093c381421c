r"""Power-mean policy loss as a verl loss mode: ``actor.policy_loss.loss_mode=power_mean``.

:func:`compute_policy_loss_power_mean` has verl's ``PolicyLossFn`` signature
(``verl.trainer.ppo.core_algos``: ``(old_log_prob, log_prob, advantages, response_mask,
loss_agg_mode, config, rollout_is_weights) -> (loss, metrics)``) and computes
:func:`rl.losses.policy_loss`. Importing this module registers it with verl's
``register_policy_loss("power_mean")`` when verl is importable; without verl the function is
still usable with any config object that has the attributes below.

The sequence ratio is the power mean of the token ratios (p = 0 geometric / GSPO, p = -1
harmonic / HMPO, p = 1 arithmetic). The default level is ``"sequence-token"`` (GSPO-token
generalised to every p, see :mod:`rl.losses.policy`) because verl hands the loss per-token
advantages ``[B, T]``; for the outcome advantages of GRPO (constant over a response) it has the
value and gradient of the sequence-level loss. At p = 0 it equals verl's own ``gspo`` loss mode
for every ``loss_agg_mode`` (tested in ``tests/rl/integrations/test_verl.py``).

Configuration, read from the actor config (``actor_rollout_ref.actor``):

==========================================  ==========================================================
``clip_ratio_low`` / ``clip_ratio_high``     clip window ``[1 - low, 1 + high]`` (fallback ``clip_ratio``)
``loss_agg_mode``                            verl's aggregation, incl. its global-batch normalisation
``policy_loss.power_mean_p``                 exponent p (default 0.0; float, ``inf``/``-inf`` allowed)
``policy_loss.power_mean_level``             ``"sequence-token"`` (default), ``"sequence"``, ``"gmpo"``, ``"token"``
``policy_loss.power_mean_mean``              ``"power"`` (default), ``"adaptive"``, ``"rmi"``, ``"multiscale"``
``policy_loss.power_mean_clip_c``            dual-clip constant > 1 for negative advantages (default None)
``policy_loss.power_mean_clip_center``       ``"plain"`` (default) or ``"bias-corrected"``
``policy_loss.power_mean_max_log_ratio``     safety cap on the log-ratio (default 10.0, verl's gspo clamp)
``policy_loss.power_mean_options``           dict of further ``policy_loss`` options (e.g. ``rmi_steps``)
==========================================  ==========================================================

verl's ``PolicyLossConfig`` is a closed dataclass, so set ``policy_loss._target_`` to
:class:`PowerMeanPolicyLossConfig` (the same dataclass with the keys above) and add the keys with
Hydra's ``+``; see the README section "Use it in your trainer". The KL and entropy terms stay
verl's (``use_kl_loss``, ``entropy_coeff``), added by verl outside the policy loss. verl's rollout
correction weights (``rollout_is_weights``) are not supported and raise a ``ValueError``; a
learnable p needs trainer state and is offered in the TRL integration only.

For verl's workers (Ray processes) to see the loss mode, this module must be imported in each
of them: set ``VERL_USE_EXTERNAL_MODULES=rl.integrations.verl`` (verl imports it on ``import verl``)
or install the package with its ``verl.plugins`` entry point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from rl.losses import policy_loss

__all__ = [
    "LOSS_MODE",
    "PowerMeanPolicyLossConfig",
    "compute_policy_loss_power_mean",
    "power_mean_options",
    "register_verl_loss",
]

LOSS_MODE = "power_mean"

#: key under ``actor.policy_loss`` -> default
DEFAULTS: dict[str, Any] = {
    "power_mean_p": 0.0,
    "power_mean_level": "sequence-token",
    "power_mean_mean": "power",
    "power_mean_clip_c": None,
    "power_mean_clip_center": "plain",
    "power_mean_max_log_ratio": 10.0,
    "power_mean_options": None,
}

_VERL_AGG = ("token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg.key`` for a dataclass, verl ``BaseConfig``, OmegaConf ``DictConfig`` or plain dict."""
    if cfg is None:
        return default
    if isinstance(cfg, Mapping) or hasattr(cfg, "get"):
        try:
            value = cfg.get(key, default)
        except Exception:  # a structured DictConfig raises on unknown keys instead of returning default
            value = getattr(cfg, key, default)
    else:
        value = getattr(cfg, key, default)
    return default if value is None and default is not None else value


def power_mean_options(config: Any) -> dict[str, Any]:
    """The ``policy_loss`` keyword arguments (without ``agg``) that ``config`` (an actor config) selects."""
    pl = _get(config, "policy_loss")
    o = {k: _get(pl, k, v) for k, v in DEFAULTS.items()}
    p = o["power_mean_p"]
    if isinstance(p, bool) or not isinstance(p, int | float) or math.isnan(p):
        raise ValueError(f"policy_loss.power_mean_p: expected a real number, got {p!r}")
    clip_ratio = _get(config, "clip_ratio")
    low = _get(config, "clip_ratio_low")
    high = _get(config, "clip_ratio_high")
    low = clip_ratio if low is None else low
    high = clip_ratio if high is None else high
    if low is None:
        raise ValueError("actor config: clip_ratio_low (or clip_ratio) is not set")
    kwargs: dict[str, Any] = {
        "level": o["power_mean_level"],
        "p": float(p),
        "eps_low": float(low),
        "eps_high": float(high) if high is not None else None,
        "mean": o["power_mean_mean"],
        "clip_center": o["power_mean_clip_center"],
        "max_log_ratio": o["power_mean_max_log_ratio"],
    }
    if o["power_mean_clip_c"] is not None:
        kwargs["clip_c"] = float(o["power_mean_clip_c"])
    extra = o["power_mean_options"]
    if extra:
        extra = dict(extra)
        clash = sorted(set(extra) & {"level", "p", "eps_low", "eps_high", "agg", "mean", "clip_c", "clip_center"})
        if clash:
            raise ValueError(f"policy_loss.power_mean_options: {clash} have their own power_mean_* keys; set those")
        kwargs.update(extra)
    return kwargs


def compute_policy_loss_power_mean(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "seq-mean-token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    r"""verl ``PolicyLossFn`` computing the clipped power-mean surrogate :func:`rl.losses.policy_loss`.

    Args:
      old_log_prob, log_prob: ``[B, T]`` log-probabilities of the response tokens under the
        behaviour and the current policy.
      advantages: ``[B, T]`` (verl's layout) or ``[B]``.
      response_mask: ``[B, T]`` bool or 0/1.
      loss_agg_mode: verl's ``"token-mean"``, ``"token-sum"``, ``"seq-mean-token-mean"``,
        ``"seq-mean-token-sum"`` or ``"seq-mean-token-sum-norm"``.
      config: the actor config (see the module table); its ``global_batch_info`` (``dp_size``,
        ``batch_num_tokens``, ``global_batch_size``, ``loss_scale_factor``) normalises the
        micro-batch loss by global counts exactly as verl's ``agg_loss`` does.
      rollout_is_weights: must be None.

    Returns:
      ``(loss, metrics)``: with ``L`` the loss matrix of :func:`policy_loss` (one value per token,
      a sequence-level loss broadcast over its tokens), ``S = sum_{i,t} m_it L_it``,
      ``S_seq = sum_i L_i`` (token-mean per sequence), ``dp`` the data-parallel size and ``N``,
      ``G`` the global token and sequence counts (the local ones when not given):
      token-mean ``S dp / N``; token-sum ``S dp``; seq-mean-token-mean ``S_seq dp / G``;
      seq-mean-token-sum ``S dp / G``; seq-mean-token-sum-norm ``S dp / (G loss_scale_factor)``
      (default factor ``T``). Metrics: verl's ``actor/pg_clipfrac`` (low + high clip fractions),
      ``actor/pg_clipfrac_lower`` (dual clip), ``actor/ppo_kl`` (k1 estimate of KL(old || new)),
      and every metric of :func:`policy_loss` as ``actor/power_mean/<name>``.

    Raises:
      ValueError: unknown ``loss_agg_mode``, rollout-correction weights, a non-0/1 mask, bad
        options (from :func:`policy_loss`).
    """
    if config is None:
        raise ValueError("config: compute_policy_loss_power_mean needs verl's actor config")
    if rollout_is_weights is not None:
        raise ValueError(
            "rollout_is_weights: verl's rollout-correction weights multiply a per-token loss and are not supported "
            "by the power_mean loss mode; disable algorithm.rollout_correction"
        )
    if loss_agg_mode not in _VERL_AGG:
        raise ValueError(f"loss_agg_mode: unknown mode {loss_agg_mode!r}; expected one of {', '.join(_VERL_AGG)}")
    mask = response_mask
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("response_mask: expected a bool or 0/1 tensor")
        mask = mask != 0

    kwargs = power_mean_options(config)
    info = _get(config, "global_batch_info") or {}
    dp = int(info.get("dp_size", None) or 1)
    n_tok_global = info.get("batch_num_tokens", None)
    n_seq_global = info.get("global_batch_size", None)
    scale_factor = info.get("loss_scale_factor", None)

    # Only the three aggregations whose local meaning is unambiguous are asked of policy_loss; the
    # global normalisation of verl's agg_loss is then a rescaling by local over global counts.
    n_tok_local = float(mask.sum())
    n_seq_local = float((mask.sum(-1) > 0).sum())
    if loss_agg_mode in ("token-mean", "token-sum"):
        agg = "token-mean"
        if loss_agg_mode == "token-sum":
            factor = n_tok_local * dp
        else:
            if n_tok_global is None and dp > 1:
                raise ValueError("global_batch_info: batch_num_tokens is required when dp_size > 1")
            denom = n_tok_local if n_tok_global is None else float(n_tok_global)
            factor = n_tok_local * dp / denom if denom > 0 else 0.0
    else:
        agg = "seq-mean-token-mean" if loss_agg_mode == "seq-mean-token-mean" else "seq-mean-token-sum"
        if n_seq_global is None and dp > 1:
            raise ValueError("global_batch_info: global_batch_size is required when dp_size > 1")
        denom = n_seq_local if n_seq_global is None else float(n_seq_global)
        factor = n_seq_local * dp / denom if denom > 0 else 0.0
        if loss_agg_mode == "seq-mean-token-sum-norm":
            factor = factor / float(mask.shape[-1] if scale_factor is None else scale_factor)

    loss, metrics = policy_loss(log_prob, old_log_prob, advantages, mask, agg=agg, **kwargs)
    loss = loss * factor

    out: dict[str, Any] = {
        "actor/pg_clipfrac": metrics.get("clip_frac_low", 0.0) + metrics.get("clip_frac_high", 0.0),
        "actor/pg_clipfrac_lower": metrics.get("clip_frac_dual", 0.0),
        "actor/ppo_kl": metrics.get("approx_kl_old_k1", 0.0),
    }
    out.update({f"actor/power_mean/{k}": v for k, v in metrics.items()})
    return loss, out


def _verl_policy_loss_config() -> type | None:
    try:
        from verl.workers.config import PolicyLossConfig
    except ImportError:
        return None
    return PolicyLossConfig


_Base = _verl_policy_loss_config()

if _Base is not None:

    @dataclass
    class PowerMeanPolicyLossConfig(_Base):  # type: ignore[valid-type, misc]
        """verl's ``PolicyLossConfig`` with the ``power_mean_*`` keys (defaults in the module table).

        Select it with ``actor_rollout_ref.actor.policy_loss._target_=rl.integrations.verl.PowerMeanPolicyLossConfig``.
        """

        loss_mode: str = LOSS_MODE
        power_mean_p: float = 0.0
        power_mean_level: str = "sequence-token"
        power_mean_mean: str = "power"
        power_mean_clip_c: float | None = None
        power_mean_clip_center: str = "plain"
        power_mean_max_log_ratio: float | None = 10.0
        power_mean_options: dict[str, Any] = field(default_factory=dict)

else:

    @dataclass
    class PowerMeanPolicyLossConfig:  # type: ignore[no-redef]
        """Stand-in with the same keys when verl is not installed (verl's base adds its own fields)."""

        loss_mode: str = LOSS_MODE
        power_mean_p: float = 0.0
        power_mean_level: str = "sequence-token"
        power_mean_mean: str = "power"
        power_mean_clip_c: float | None = None
        power_mean_clip_center: str = "plain"
        power_mean_max_log_ratio: float | None = 10.0
        power_mean_options: dict[str, Any] = field(default_factory=dict)

        def get(self, key: str, default: Any = None) -> Any:
            return getattr(self, key, default)


def register_verl_loss(name: str = LOSS_MODE) -> bool:
    """Register :func:`compute_policy_loss_power_mean` in verl's policy-loss registry under ``name``.

    Returns False (and does nothing) when verl is not importable. Called on import of this module.
    """
    try:
        from verl.trainer.ppo.core_algos import register_policy_loss
    except ImportError:
        return False
    register_policy_loss(name)(compute_policy_loss_power_mean)
    return True


VERL_REGISTERED = register_verl_loss()

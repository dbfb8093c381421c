"""rl.losses: the policy-loss family for every mean (GRPO, GSPO, HMPO, GMPO and every M_p).

The entry point is :func:`policy_loss` (contract in the module doc of :mod:`rl.losses.policy`)::

    loss, metrics = policy_loss(logp, old_logp, advantages, mask, level="sequence", p=-1.0)  # HMPO

or, with the options validated once (a trainer's loop)::

    config = LossConfig.create(level="sequence", p=-1.0)
    loss, metrics = loss_from_config(config, logp, old_logp, advantages, mask)

Pure functions over tensors, no trainer state: they plug into any trainer (TRL, verl, the
project's own). Sequence ratios come from :mod:`rl.losses.means` (power means via
meantheory, recursive mean iteration, multi-scale means), adaptive p from
:mod:`rl.losses.adaptive`, PMPO's p per sequence from :mod:`rl.losses.pmpo`, learnable p
from :class:`LearnablePowerMean`, the clip from :mod:`rl.losses.clipping`, the diagnostics
from :mod:`rl.losses.metrics`.
"""

from rl.losses.adaptive import ADAPTIVE_PS, ADAPTIVE_SIGNALS, ADAPTIVE_THRESHOLDS, adaptive_signal, select_p
from rl.losses.aggregation import AGG_MODES, aggregate, aggregate_sequences
from rl.losses.chunked import chunked_policy_loss
from rl.losses.config import CLIP_CENTERS, LEVELS, LossConfig
from rl.losses.kl import KL_ESTIMATORS, kl_estimate
from rl.losses.learnable import LearnablePowerMean
from rl.losses.means import MEANS, multiscale_log_ratio, power_log_ratio, rmi_log_ratio, sequence_log_ratio
from rl.losses.pmpo import pmpo_p
from rl.losses.policy import loss_from_config, policy_loss

__all__ = [
    "ADAPTIVE_PS",
    "ADAPTIVE_SIGNALS",
    "ADAPTIVE_THRESHOLDS",
    "AGG_MODES",
    "CLIP_CENTERS",
    "KL_ESTIMATORS",
    "LEVELS",
    "MEANS",
    "LearnablePowerMean",
    "LossConfig",
    "adaptive_signal",
    "aggregate",
    "aggregate_sequences",
    "chunked_policy_loss",
    "kl_estimate",
    "loss_from_config",
    "multiscale_log_ratio",
    "pmpo_p",
    "policy_loss",
    "power_log_ratio",
    "rmi_log_ratio",
    "select_p",
    "sequence_log_ratio",
]

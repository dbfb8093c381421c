"""rl.losses: the policy-loss family for every mean (GRPO, GSPO, HMPO, GMPO and every M_p).

The entry point is :func:`policy_loss` (contract in the module doc of :mod:`rl.losses.policy`)::

    loss, metrics = policy_loss(logp, old_logp, advantages, mask, level="sequence", p=-1.0)  # HMPO

Pure functions over tensors, no trainer state: they plug into any trainer (TRL, verl, the
project's own). Sequence ratios come from :mod:`rl.losses.means` (power means via
meantheory, recursive mean iteration, multi-scale means), adaptive p from
:mod:`rl.losses.adaptive`, learnable p from :class:`LearnablePowerMean`.
"""

from rl.losses.adaptive import ADAPTIVE_PS, ADAPTIVE_SIGNALS, ADAPTIVE_THRESHOLDS, adaptive_signal, select_p
from rl.losses.aggregation import AGG_MODES, aggregate, aggregate_sequences
from rl.losses.chunked import chunked_policy_loss
from rl.losses.kl import KL_ESTIMATORS, kl_estimate
from rl.losses.learnable import LearnablePowerMean
from rl.losses.means import multiscale_log_ratio, power_log_ratio, rmi_log_ratio
from rl.losses.policy import CLIP_CENTERS, LEVELS, MEANS, OPTIONS, policy_loss, sequence_log_ratio

__all__ = [
    "ADAPTIVE_PS",
    "ADAPTIVE_SIGNALS",
    "ADAPTIVE_THRESHOLDS",
    "AGG_MODES",
    "CLIP_CENTERS",
    "KL_ESTIMATORS",
    "LEVELS",
    "MEANS",
    "OPTIONS",
    "LearnablePowerMean",
    "adaptive_signal",
    "aggregate",
    "aggregate_sequences",
    "chunked_policy_loss",
    "kl_estimate",
    "multiscale_log_ratio",
    "policy_loss",
    "power_log_ratio",
    "rmi_log_ratio",
    "select_p",
    "sequence_log_ratio",
]

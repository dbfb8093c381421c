"""meantheory: verified, numerically exact, differentiable power means.

The primary function is :func:`log_power_mean`, because the importance ratios of policy
optimization arrive as log-probabilities; :func:`power_mean` wraps it. See the module
docstring of :mod:`meantheory.power_mean` for the conventions (masks, weights, zeros,
empty rows) and :mod:`meantheory.reference` for the mpmath oracles.
"""

from meantheory.iterations import (
    IterationTrace,
    PairIterationResult,
    arithmetic_harmonic_iteration,
    gauss_agm,
    mean_pair_iteration,
)
from meantheory._masked import MaskedPowerMean, MaskedRows, masked_fast_path, masked_log_power_mean
from meantheory.power_mean import (
    SERIES_THRESHOLD,
    arithmetic_mean,
    dlog_power_mean_dp,
    geometric_mean,
    harmonic_mean,
    log_power_mean,
    mean_weights,
    power_mean,
)
from meantheory.series import cumulant_series, weighted_cumulants

__all__ = [
    "SERIES_THRESHOLD",
    "IterationTrace",
    "MaskedPowerMean",
    "MaskedRows",
    "PairIterationResult",
    "arithmetic_harmonic_iteration",
    "arithmetic_mean",
    "cumulant_series",
    "dlog_power_mean_dp",
    "gauss_agm",
    "geometric_mean",
    "harmonic_mean",
    "log_power_mean",
    "mean_pair_iteration",
    "masked_fast_path",
    "masked_log_power_mean",
    "mean_weights",
    "power_mean",
    "weighted_cumulants",
]

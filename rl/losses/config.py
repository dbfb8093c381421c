r"""The loss configuration: every option of :func:`rl.losses.policy_loss`, validated once.

:class:`LossConfig` is a frozen record of the options (not of the per-call tensors). The defaults
live here and nowhere else (``policy_loss``'s signature reads them from this class); building a
configuration validates every option, so a trainer builds it once per run and a typo fails at the
start, not at the first minibatch::

    config = LossConfig.create(level="sequence", p=-1.0, eps_low=0.2, clip_c=3.0)   # HMPO, dual clip
    loss, metrics = loss_from_config(config, logp, old_logp, advantages, mask)

The meaning of every option is in :func:`rl.losses.policy_loss` and the module doc of
:mod:`rl.losses.policy`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from rl.losses.adaptive import ADAPTIVE_PS, ADAPTIVE_THRESHOLDS, check_ps, check_signal, check_thresholds
from rl.losses.aggregation import check_agg, check_scale
from rl.losses.clipping import ClipWindow, real
from rl.losses.kl import KL_ESTIMATORS
from rl.losses.learnable import LearnablePowerMean
from rl.losses.means import MEANS

__all__ = ["CALL_TENSORS", "CLIP_CENTERS", "LEVELS", "MEANS", "MEAN_OPTIONS", "LossConfig"]

LEVELS = ("token", "sequence", "sequence-token", "gmpo")
CLIP_CENTERS = ("plain", "bias-corrected")
#: mean -> the options only that mean reads
MEAN_OPTIONS: dict[str, tuple[str, ...]] = {
    "rmi": ("rmi_steps",),
    "multiscale": ("chunk_size", "chunk_p"),
    "adaptive": ("adaptive_signal", "adaptive_thresholds", "adaptive_ps"),
}
#: policy_loss's options that are per-call tensors, not configuration
CALL_TENSORS = ("ref_logp", "entropy")


def _count(name: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
    return v


def _exponent(p: Any) -> float | torch.Tensor | LearnablePowerMean:
    """p as the loss reads it: a float, a floating tensor (0-d or one per sequence), or the module."""
    if isinstance(p, LearnablePowerMean):
        return p
    if isinstance(p, bool):
        raise ValueError("p: expected a real number or tensor, got a bool")
    if isinstance(p, int | float):
        if math.isnan(p):
            raise ValueError("p: NaN is not a valid exponent")
        return float(p)
    if isinstance(p, torch.Tensor):
        if not p.is_floating_point():
            raise ValueError(f"p: expected a floating tensor, got {p.dtype}")
        if p.ndim > 1:
            raise ValueError(f"p: expected a 0-d tensor or one p per sequence [B], got shape {tuple(p.shape)}")
        return p
    raise ValueError(f"p: expected a float, a tensor or a LearnablePowerMean, got {type(p).__name__}")


def _is_zero_float(p: Any) -> bool:
    return isinstance(p, float) and p == 0.0


@dataclass(frozen=True, eq=False)
class LossConfig:
    """Validated options of the policy loss (compared by identity: ``p`` may be a tensor or a module).

    Build it with :meth:`create` (which also checks option names); constructing it directly
    validates the values the same way. ``window`` is derived: the clip bounds in log space.
    """

    level: str = "sequence"
    p: Any = 0.0
    eps_low: float = 0.2
    eps_high: float | None = None
    agg: str = "seq-mean-token-mean"
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    clip_c: float | None = None
    log_clip_low: float | None = None
    log_clip_high: float | None = None
    clip_center: str = "plain"
    mean: str = "power"
    max_log_ratio: float | None = 20.0
    loss_scale_factor: float | None = None
    check: bool = True
    metrics: bool = True
    rmi_steps: int = 5
    chunk_size: int | None = None
    chunk_p: float = 0.0
    adaptive_signal: str = "spread"
    adaptive_thresholds: tuple[float, float] | None = None
    adaptive_ps: tuple[float, float, float] = ADAPTIVE_PS
    window: ClipWindow = field(init=False, repr=False)

    @classmethod
    def create(cls, **options: Any) -> LossConfig:
        """A configuration from ``policy_loss``'s keyword options (``level``, ``p``, ``eps_low``,
        ``eps_high``, ``agg`` and the rest), without the per-call tensors ``ref_logp``/``entropy``.

        Raises:
          ValueError: an unknown option, a per-call tensor, an option of another mean (e.g.
            ``rmi_steps`` with ``mean="power"``), and every bad value (see ``__post_init__``).
        """
        tensors = sorted(set(options) & set(CALL_TENSORS))
        if tensors:
            raise ValueError(f"{', '.join(tensors)}: a per-call tensor, not configuration; pass it to "
                             "loss_from_config (or policy_loss)")
        unknown = sorted(set(options) - _OPTION_NAMES)
        if unknown:
            raise ValueError(f"policy_loss: unknown option(s) {', '.join(unknown)}; valid options: "
                             f"{', '.join(sorted([*_OPTION_NAMES, *CALL_TENSORS]))}")
        mean = options.get("mean", cls.mean)
        for m_name, opts in MEAN_OPTIONS.items():
            for nm in opts:
                if nm in options and mean != m_name:
                    raise ValueError(f"{nm}: only applies to mean={m_name!r} (mean is {mean!r})")
        return cls(**options)

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if self.level not in LEVELS:
            raise ValueError(f"level: unknown level {self.level!r}; expected one of {', '.join(LEVELS)}")
        check_agg(self.agg)
        check_scale(self.loss_scale_factor)
        if self.mean not in MEANS:
            raise ValueError(f"mean: unknown mean {self.mean!r}; expected one of {', '.join(MEANS)}")
        if self.clip_center not in CLIP_CENTERS:
            raise ValueError(f"clip_center: unknown value {self.clip_center!r}; expected one of "
                             f"{', '.join(CLIP_CENTERS)}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator: unknown estimator {self.kl_estimator!r}; expected one of "
                             f"{', '.join(KL_ESTIMATORS)}")
        put("kl_coef", real("kl_coef", self.kl_coef))
        put("entropy_coef", real("entropy_coef", self.entropy_coef))
        put("window", ClipWindow.create(self.eps_low, self.eps_high, log_clip_low=self.log_clip_low,
                                        log_clip_high=self.log_clip_high, clip_c=self.clip_c,
                                        max_log_ratio=self.max_log_ratio))
        if self.bias_corrected and (self.level in ("token", "gmpo") or self.mean not in ("power", "adaptive")):
            raise ValueError("clip_center: 'bias-corrected' applies to levels 'sequence'/'sequence-token' with mean "
                             f"'power' or 'adaptive' (got level={self.level!r}, mean={self.mean!r})")
        put("p", _exponent(self.p))
        if self.level == "token":
            if not _is_zero_float(self.p):
                raise ValueError("p: level='token' uses each token's own ratio; p has no effect there "
                                 "(leave it at 0.0)")
            if self.mean != "power":
                raise ValueError(f"mean: level='token' has no sequence mean (got mean={self.mean!r})")
        if self.mean == "adaptive" and not _is_zero_float(self.p):
            raise ValueError("p: mean='adaptive' chooses p itself; leave p at 0.0")
        if self.mean == "pmpo" and not _is_zero_float(self.p):
            raise ValueError("p: mean='pmpo' chooses p itself (one per sequence); leave p at 0.0")
        if self.mean == "rmi" and not _is_zero_float(self.p):
            raise ValueError("p: mean='rmi' has no exponent (it iterates arithmetic and harmonic means); "
                             "leave p at 0.0")
        put("rmi_steps", _count("rmi_steps", self.rmi_steps, 0))
        if self.mean == "multiscale" and self.chunk_size is None:
            raise ValueError("chunk_size: mean='multiscale' needs chunk_size (tokens per chunk)")
        if self.chunk_size is not None:
            put("chunk_size", _count("chunk_size", self.chunk_size, 1))
        put("chunk_p", real("chunk_p", self.chunk_p, allow_inf=True))
        check_signal(self.adaptive_signal)
        if self.adaptive_thresholds is not None:
            put("adaptive_thresholds", check_thresholds(self.adaptive_thresholds))
        put("adaptive_ps", check_ps(self.adaptive_ps))
        put("check", bool(self.check))
        put("metrics", bool(self.metrics))

    @property
    def bias_corrected(self) -> bool:
        return self.clip_center == "bias-corrected"

    @property
    def thresholds(self) -> tuple[float, float]:
        """The adaptive signal's thresholds in force (the signal's defaults unless given)."""
        if self.adaptive_thresholds is not None:
            return self.adaptive_thresholds
        return ADAPTIVE_THRESHOLDS[self.adaptive_signal]

    @property
    def mean_options(self) -> dict[str, Any]:
        """The keyword options of :func:`rl.losses.sequence_log_ratio` for this configuration's mean."""
        return {name: getattr(self, name) for name in MEAN_OPTIONS.get(self.mean, ())}


_OPTION_NAMES = frozenset(f.name for f in fields(LossConfig) if f.init)

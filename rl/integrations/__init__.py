"""rl.integrations: the power-mean losses of :mod:`rl.losses` inside TRL and verl.

* :mod:`rl.integrations.trl` -- ``PowerMeanGRPOTrainer`` / ``PowerMeanGRPOConfig``, a
  ``trl.GRPOTrainer`` whose loss is :func:`rl.losses.policy_loss` (extra ``hmpo[trl]``).
* :mod:`rl.integrations.verl` -- ``compute_policy_loss_power_mean``, a verl ``PolicyLossFn``
  registered as loss mode ``"power_mean"`` when verl is importable (extra ``hmpo[verl]``).

Importing this package imports neither framework: each is imported by its submodule, on first
use, so ``import rl.integrations`` works in an environment that has neither. The names below
are resolved lazily from the submodules.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "PowerMeanGRPOConfig",
    "PowerMeanGRPOTrainer",
    "PowerMeanPolicyLossConfig",
    "compute_policy_loss_power_mean",
    "register_verl_loss",
]

_LAZY = {
    "PowerMeanGRPOConfig": "rl.integrations.trl",
    "PowerMeanGRPOTrainer": "rl.integrations.trl",
    "PowerMeanPolicyLossConfig": "rl.integrations.verl",
    "compute_policy_loss_power_mean": "rl.integrations.verl",
    "register_verl_loss": "rl.integrations.verl",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rl.integrations' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""Policies: the protocol (base), tabular/small autoregressive policies for bandits, the tiny LM."""

from rl.policies.base import Env, Policy, Rollout, check_rollout
from rl.policies.tabular import AutoregressivePolicy, TabularPolicy

__all__ = ["AutoregressivePolicy", "Env", "Policy", "Rollout", "TabularPolicy", "check_rollout"]

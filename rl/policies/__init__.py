"""Policies: the protocol (base; environments are in rl.envs), tabular/small autoregressive policies for bandits, the tiny LM."""

from rl.policies.base import Policy, Rollout, check_rollout
from rl.policies.hf import HFPolicy, tiny_llama
from rl.policies.tabular import AutoregressivePolicy, TabularPolicy
from rl.policies.tiny_lm import TinyLM, TinyLMConfig, TinyLMPolicy

__all__ = [
    "AutoregressivePolicy",
    "HFPolicy",
    "Policy",
    "Rollout",
    "TabularPolicy",
    "TinyLM",
    "TinyLMConfig",
    "TinyLMPolicy",
    "check_rollout",
    "tiny_llama",
]

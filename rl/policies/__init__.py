"""Policies: the protocol (base), tabular/small autoregressive policies for bandits, the tiny LM."""

from rl.policies.base import Env, Policy, Rollout, check_rollout
from rl.policies.hf import HFPolicy, tiny_llama
from rl.policies.tabular import AutoregressivePolicy, TabularPolicy
from rl.policies.tiny_lm import TinyLM, TinyLMConfig, TinyLMPolicy

__all__ = [
    "AutoregressivePolicy",
    "Env",
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

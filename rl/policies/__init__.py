"""Policies: the protocol (base; environments are in rl.envs), tabular/small autoregressive policies for
bandits, the tiny LM, any Hugging Face causal LM, and the supervised warm start (SFT, cached; its
function is ``rl.policies.warm_start.warm_start``, not re-exported here, where the name would hide
the module)."""

from rl.policies.base import Policy, Rollout, check_rollout
from rl.policies.hf import HFPolicy, tiny_llama
from rl.policies.tabular import AutoregressivePolicy, TabularPolicy, perturbed_copy
from rl.policies.tiny_lm import TinyLM, TinyLMConfig, TinyLMPolicy
from rl.policies.warm_start import WarmStartSpec

__all__ = [
    "AutoregressivePolicy",
    "HFPolicy",
    "Policy",
    "Rollout",
    "TabularPolicy",
    "TinyLM",
    "TinyLMConfig",
    "TinyLMPolicy",
    "WarmStartSpec",
    "check_rollout",
    "perturbed_copy",
    "tiny_llama",
]

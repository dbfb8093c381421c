"""The environment protocol the trainer speaks (the policy's half is :mod:`rl.policies.base`).

An *environment* draws prompts, scores answers and builds a fresh policy suited to it.
Environments without prompts (the bandits) return an empty LongTensor of shape [n, 0] from
``sample_prompts`` rather than None, so that ``Policy.sample`` still learns the batch size
from ``prompts.shape[0]``.

Reference: the rollout / reward split follows verl's and TRL's.
"""

from __future__ import annotations

import abc
from typing import Protocol, runtime_checkable

import torch

from rl.policies.base import Policy

__all__ = ["Env", "ExactObjective"]


class Env(abc.ABC):
    """A verifiable task: prompts, a reward for each answer, and a policy to train on it.

    Attributes:
        name: the registry name ("bandit", "seq-bandit", ...).
        default_lr: the learning rate a trainer uses when its config leaves it unset (None:
            the trainer's own default, rl.trainer.DEFAULT_LR).

    Subclasses implement:
        sample_prompts(n, generator) -> LongTensor [n, P] (P may be 0) or None
        reward(prompts, tokens, mask) -> float32 Tensor [B]
        make_policy(**kw) -> Policy   (a fresh, untrained policy; kw are policy options)

    Environments with internal randomness (noisy rewards) keep it in their own
    ``torch.Generator`` and expose it through ``state_dict`` / ``load_state_dict`` so that a
    resumed run equals an uninterrupted one; the defaults below suit stateless environments.
    """

    name: str = "env"
    default_lr: float | None = None

    @abc.abstractmethod
    def sample_prompts(self, n: int, generator: torch.Generator) -> torch.Tensor | None:
        raise NotImplementedError

    @abc.abstractmethod
    def reward(
        self, prompts: torch.Tensor | None, tokens: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError

    @abc.abstractmethod
    def make_policy(self, **kw) -> Policy:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Internal random state to checkpoint (empty for deterministic environments)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""
        if state:
            raise ValueError(f"{type(self).__name__} is stateless but got state keys {sorted(state)}")


@runtime_checkable
class ExactObjective(Protocol):
    """An environment that computes its own exact objective (the trainer logs it as it logs the
    enumeration oracle's J, rl.trainer.exact_metrics).

    ``exact_metrics(policy)`` returns floats without sampling noise: ``exact_reward`` (J, the
    expected reward of the policy on a fixed prompt set) and any others worth logging beside
    it (e.g. ``greedy_accuracy``).
    """

    def exact_metrics(self, policy: Policy) -> dict[str, float]: ...

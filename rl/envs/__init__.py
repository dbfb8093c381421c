"""Environments by name: bandits with an exact oracle, and the tiny-LM task (registered lazily).

``make_env(name, **kw)`` builds one; the registry maps names to "module:factory" strings so that
choosing a bandit never imports the language-model code.
"""

from __future__ import annotations

import importlib
import inspect

from rl.envs.bandits import ContextualSequenceBandit, KArmedBandit, SequenceBandit
from rl.envs.oracle import enumerate_answers, exact_expected_reward, exact_policy_gradient, supports_oracle
from rl.envs.base import Env

__all__ = [
    "ENVS", "WARM_STARTED", "make_env", "available_envs", "KArmedBandit", "SequenceBandit", "ContextualSequenceBandit",
    "enumerate_answers", "exact_expected_reward", "exact_policy_gradient", "supports_oracle",
]

# name -> "module:factory"; the factory takes keyword options (and ``seed`` where it accepts one).
ENVS: dict[str, str] = {
    "bandit": "rl.envs.bandits:KArmedBandit",
    "seq-bandit": "rl.envs.bandits:SequenceBandit",
    "contextual-bandit": "rl.envs.bandits:ContextualSequenceBandit",
    "tiny-lm": "rl.envs.addition:AdditionEnv",
    "tiny-lm-scratchpad": "rl.envs.scratchpad:ScratchpadAdditionEnv",
}


#: environments whose policies start from a cached SFT warm start (a study builds each distinct
#: one once before dispatching runs, so parallel workers do not all train it at the same time)
WARM_STARTED = frozenset({"tiny-lm", "tiny-lm-scratchpad"})


def available_envs() -> list[str]:
    """Registered environment names."""
    return list(ENVS)


def _factory(name: str):
    if name not in ENVS:
        raise ValueError(f"unknown environment {name!r}; choose one of {sorted(ENVS)}")
    modname, attr = ENVS[name].split(":")
    return getattr(importlib.import_module(modname), attr)


def make_env(name: str, *, seed: int | None = None, **kw) -> Env:
    """Build the environment registered as ``name`` with options ``kw``.

    ``seed`` seeds the environment's own randomness (reward noise) and is passed only to
    factories that declare a ``seed`` parameter, so a deterministic task need not.
    """
    factory = _factory(name)
    sig = inspect.signature(factory)
    if seed is not None and "seed" in sig.parameters:
        kw["seed"] = seed
    try:
        sig.bind(**kw)
    except TypeError as exc:
        raise ValueError(f"bad options for environment {name!r}: {exc}") from exc
    return factory(**kw)

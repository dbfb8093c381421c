"""The environment registry of rl/envs/__init__.py (each environment's own tests are beside this file)."""

from __future__ import annotations

import pytest

from rl.envs import ContextualSequenceBandit, KArmedBandit, SequenceBandit, make_env


def test_registry():
    assert isinstance(make_env("bandit"), KArmedBandit)
    assert isinstance(make_env("seq-bandit", vocab=3, length=2), SequenceBandit)
    assert isinstance(make_env("contextual-bandit", seed=1), ContextualSequenceBandit)
    with pytest.raises(ValueError, match="unknown environment"):
        make_env("chess")
    with pytest.raises(ValueError, match="bad options"):
        make_env("seq-bandit", vocabulary=3)

"""Fixtures of the rl tests: the quick scratchpad warm start, trained once per test process."""

from __future__ import annotations

import pytest

from rl.envs.scratchpad import QUICK_SCRATCHPAD
from rl.policies.warm_start import warm_start


@pytest.fixture(scope="session")
def quick_scratchpad_cache(tmp_path_factory):
    """A cache folder holding the quick scratchpad checkpoint (rl.envs.scratchpad.QUICK_SCRATCHPAD)."""
    path = tmp_path_factory.mktemp("scratchpad_sft")
    warm_start(QUICK_SCRATCHPAD, cache_dir=path, progress=False)
    return path

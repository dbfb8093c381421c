"""Fixtures of the rl tests: the quick scratchpad warm start."""

from __future__ import annotations

import pytest

from rl.envs.scratchpad import QUICK_SCRATCHPAD
from rl.policies.warm_start import default_cache_dir, warm_start


@pytest.fixture(scope="session")
def quick_scratchpad_cache():
    """The cache folder holding the quick scratchpad checkpoint (rl.envs.scratchpad.QUICK_SCRATCHPAD):
    the default cache ($HMPO_CACHE or ~/.cache/hmpo), as for the default addition warm start, so it
    is trained once per machine (about 6 CPU-s) rather than once per test process. Two processes
    that miss it at once train the same weights (the SFT is deterministic) and write them atomically."""
    warm_start(QUICK_SCRATCHPAD, progress=False)
    return default_cache_dir()

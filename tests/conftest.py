"""Shared test configuration.

Hypothesis profiles: ``ci`` (derandomized, no example database, no deadline) is
selected when the environment variable CI is "true"; ``dev`` otherwise.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("ci" if os.environ.get("CI", "").lower() == "true" else "dev")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The tests' tensors are tiny: intra-op threads only add synchronisation, and on 2 shared
# cores (pytest -n 2 in CI) they made these operations 7-70x slower (two TRL steps: 27 s
# with the default threads, 1.8 s with one). No test measures speed, so one thread for all.
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def verify_json():
    """`hmpo verify --json` through the CLI dispatcher with a tenth of the numeric cases, once per
    session: the verify command's tests and the ledger's tests read the same run."""
    from tests.proofs.proofs_helpers import verify_json as run_verify_json

    return run_verify_json("--cases-scale", "0.1", "--seed", "1")

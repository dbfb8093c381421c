"""Fixtures for the proofs tests: one derivation per theorem and one `hmpo verify --json` run per session."""

from __future__ import annotations

import pytest

from proofs import THEOREMS

from tests.proofs.proofs_helpers import verify_json as run_verify_json


@pytest.fixture(scope="session")
def derivations():
    """Each theorem derived once per test session (the verify command itself re-derives every run)."""
    return {th.id: th.derive() for th in THEOREMS}


@pytest.fixture(scope="session")
def verify_json():
    """`hmpo verify --json` through the CLI dispatcher, with a reduced number of numeric cases."""
    return run_verify_json("--cases-scale", "0.1", "--seed", "1")

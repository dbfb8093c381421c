"""Fixtures for the proofs tests: one derivation per theorem per session (`verify_json` is in tests/conftest.py)."""

from __future__ import annotations

import pytest

from proofs import THEOREMS


@pytest.fixture(scope="session")
def derivations():
    """Each theorem derived once per test session (the verify command itself re-derives every run)."""
    return {th.id: th.derive() for th in THEOREMS}

"""Fixtures for the proofs tests: one derivation per theorem and one `hmpo verify --json` run per session."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from proofs import THEOREMS


@pytest.fixture(scope="session")
def derivations():
    """Each theorem derived once per test session (the verify command itself re-derives every run)."""
    return {th.id: th.derive() for th in THEOREMS}


@pytest.fixture(scope="session")
def verify_json():
    """`hmpo verify --json` through the CLI dispatcher, with a reduced number of numeric cases."""
    from rl.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["verify", "--json", "--cases-scale", "0.1", "--seed", "1"])
    return code, json.loads(buf.getvalue())

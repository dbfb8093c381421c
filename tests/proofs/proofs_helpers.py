"""Helpers for the proofs tests (imported by path, like tests/meantheory/mt_helpers.py)."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable

import numpy as np
import torch
from hypothesis import strategies as st

from proofs import BY_ID, DEFAULT_IMPL, RngDrawer, check_theorem
from proofs.core import Derivation, Drawer


class HypothesisDrawer(Drawer):
    """The Drawer interface over hypothesis' interactive data, so make_case serves both."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def float(self, lo: float, hi: float) -> float:
        return self.data.draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))


def assert_caught(tid: str, field: str, wrong: Callable, derivations: dict[str, Derivation]) -> None:
    """The numeric check of theorem ``tid`` passes with the project's functions and fails, by a
    clear margin, with ``wrong`` substituted for ``Impl.<field>``, on the same 30 cases."""
    th = BY_ID[tid]
    d = derivations[tid]
    good = check_theorem(th, d, RngDrawer(np.random.default_rng(7)), DEFAULT_IMPL, cases=30)
    bad = check_theorem(th, d, RngDrawer(np.random.default_rng(7)), DEFAULT_IMPL.with_(**{field: wrong}), cases=30)
    assert good.passed, good.worst
    assert not bad.passed, f"{wrong.__name__} slipped through {tid}: worst ratio {bad.max_ratio}"
    assert bad.max_ratio > 10, "caught by a clear margin, not by rounding"


def sqrt_ah_geometric(x, dim=-1, *, weights=None, mask=None, keepdim=False, check=True):
    """sqrt(A H) passed off as the geometric mean (seed 000's RMI limit)."""
    a = DEFAULT_IMPL.arithmetic_mean(x, weights=weights)
    h = DEFAULT_IMPL.harmonic_mean(x, weights=weights)
    return torch.sqrt(a * h)


def verify_json(*argv: str) -> tuple[int, dict]:
    """`hmpo verify --json ARGV` through the CLI dispatcher: (exit status, the printed JSON object)."""
    from rl.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["verify", "--json", *argv])
    return code, json.loads(buf.getvalue())

"""Helpers for the proofs tests (imported by path, like tests/meantheory/mt_helpers.py)."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable

import numpy as np
import sympy as sp
import torch
from hypothesis import strategies as st

from proofs import BY_ID, DEFAULT_IMPL, RngDrawer, check_theorem
from proofs.core import Case, Derivation, Drawer, Proof, Status, Theorem


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


def assert_key_steps_verified(verified: dict[str, set[str]], module, tid: str, derivations: dict[str, Derivation]) -> None:
    """``verified`` (theorem id -> step keys, one entry per theorem of ``module``) lists the steps sympy
    must verify; they must be verified in this derivation and required by the theorem (``key_steps``)."""
    assert set(verified) == {th.id for th in module.THEOREMS}
    assert verified[tid] <= derivations[tid].verified_keys(), tid
    assert verified[tid] <= set(BY_ID[tid].key_steps), "hmpo verify must fail the theorem without them"


_x = sp.Symbol("x", positive=True)


def derive_false_identity() -> Derivation:
    """A derivation whose key step is the false identity log(x^2) = log(x) (x > 0)."""
    pf = Proof()
    pf.equal(sp.log(_x**2), sp.log(_x), "log(x^2) = log(x)", log_form=True, key="key")
    return pf.done(Status.PROVED)


def derive_key_step_as_remark() -> Derivation:
    """A derivation whose key step is only a remark: nothing verifies it."""
    pf = Proof()
    pf.note("x + 1 = x")
    return pf.done(Status.PROVED)


def _three_values(d: Drawer) -> Case:
    return Case(u=d.floats(3, -1.0, 1.0))


def fake_theorem(derive: Callable[[], Derivation], evaluate=None, expected: Status = Status.PROVED,
                 tid: str = "X-fake") -> Theorem:
    """A small theorem around ``derive`` with key step "key" (and three-entry cases if ``evaluate`` is given)."""
    return Theorem(id=tid, title="a deliberately wrong theorem", statement="s", latex="l", assumptions=(), derive=derive,
                   certifies=(), expected=expected, key_steps=("key",), cases=5,
                   make_case=_three_values if evaluate else None,
                   evaluate=evaluate)


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

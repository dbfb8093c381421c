"""proofs/core.py: a derivation step that does not hold raises, the steps are typed, a theorem whose
key step is not verified fails, and the worst-case picker lets a NaN or an overflow win."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp

from proofs.core import (
    DEFAULT_IMPL,
    DerivationError,
    Proof,
    RngDrawer,
    Status,
    StepKind,
    Theorem,
    check_theorem,
    ratio,
    run_theorem,
    worst,
)

from tests.proofs.proofs_helpers import derive_false_identity, derive_key_step_as_remark, fake_theorem

x = sp.Symbol("x", positive=True)
t = sp.Symbol("t", real=True)

# ----------------------------------------------------------------------------- Proof: false steps raise


@pytest.mark.parametrize("step", [
    lambda pf: pf.zero(sp.log(x**2) - sp.log(x), "log(x^2) = log(x)"),
    lambda pf: pf.zero(sp.log(x**2) - sp.log(x), "log(x^2) = log(x)", log_form=True),
    lambda pf: pf.equal(sp.log(x**2), sp.log(x), "log(x^2) = log(x)", log_form=True),
    lambda pf: pf.equal(x + 1, x, "x + 1 = x"),
    lambda pf: pf.equal(sp.sin(t) ** 2 + sp.cos(t) ** 2, 2, "sin^2 + cos^2 = 2"),
    lambda pf: pf.same(x + 1, x, "x + 1 is x"),
    lambda pf: pf.limit(1 / x, x, sp.oo, 1, "1/x -> 1"),
    lambda pf: pf.limit(sp.exp(x), x, sp.oo, 5, "exp(x) -> 5"),
    lambda pf: pf.true(x < 0, "x < 0 for positive x"),
    lambda pf: pf.true(False, "a false exact comparison"),
], ids=["zero-log", "zero-log-form", "equal-log-form", "equal-x+1", "equal-trig", "same", "limit", "limit-inf",
        "true-relation", "true-bool"])
def test_a_false_step_raises_and_records_nothing(step):
    pf = Proof()
    with pytest.raises(DerivationError):
        step(pf)
    assert pf.steps == []


def test_true_steps_are_recorded_typed_and_keyed():
    pf = Proof()
    pf.equal(sp.log(x**2), 2 * sp.log(x), "log(x^2) = 2 log(x)", log_form=True, key="log")
    pf.equal(sp.sin(t) ** 2 + sp.cos(t) ** 2, 1, "Pythagoras")
    pf.same(sp.Integer(2) + x, x + 2, "canonical order")
    pf.limit(1 / x, x, sp.oo, 0, "1/x -> 0", key="lim")
    pf.true(x > 0, "x > 0")
    pf.note("a remark")
    kinds = [s.kind for s in pf.steps]
    assert kinds == [StepKind.REDUCED, StepKind.REDUCED, StepKind.IDENTICAL, StepKind.LIMIT, StepKind.ESTABLISHED,
                     StepKind.NOTE]
    assert [s.verified for s in pf.steps] == [True] * 5 + [False]
    d = pf.done(Status.PROVED)
    assert d.verified_keys() == {"log", "lim"}
    assert [s.text for s in d.verified_steps][0] == "log(x^2) = 2 log(x): sympy reduces the difference to 0"
    assert d.steps[-1].as_dict() == {"text": "a remark", "kind": "note", "key": None, "verified": False}
    with pytest.raises(ValueError, match="'log' used twice"):
        pf.equal(x, x, "again", key="log")


# ----------------------------------------------------------------------------- the worst-case picker

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("checks,expected", [
    (((NAN, 1.0), (5.0, 1.0)), (INF, 1.0)),               # NaN beats a larger finite ratio ...
    (((5.0, 1.0), (NAN, 2.0)), (INF, 2.0)),               # ... in either position, with its own tolerance
    (((1e300, 1e-300), (NAN, 1.0)), (INF, 1.0)),          # ... even an overflowing finite ratio
    (((2.0, 1.0), (INF, 1.0), (NAN, 1.0)), (INF, 1.0)),   # inf beats finite
    (((3.0, 1.0), (-INF, 1.0)), (INF, 1.0)),              # -inf (an overflowed difference) too
    (((1.0, 2.0), (3.0, 6.0)), (1.0, 2.0)),               # tie: the first
    (((3.0, 6.0), (1.0, 2.0)), (3.0, 6.0)),
    (((1.0, 4.0), (3.0, 2.0), (2.0, 1.0)), (2.0, 1.0)),   # by ratio, not by error
    (((0.0, 1.0),), (0.0, 1.0)),
    ((), (0.0, 1.0)),                                     # nothing checked: a zero error
    (((1e-300, 0.0), (1.0, 1.0)), (1e-300, 0.0)),         # a non-zero error against a zero tolerance fails
])
def test_worst_picks_the_largest_ratio_and_lets_nan_and_inf_win(checks, expected):
    got = worst(*checks)
    assert got == expected
    if math.isinf(got[0]) or expected[1] == 0.0:
        assert ratio(*got) == INF


def test_ratio_is_what_a_check_passes_on():
    assert ratio(1.0, 2.0) == 0.5
    assert ratio(0.0, 0.0) == 0.0
    assert ratio(1e-300, 0.0) == INF
    assert ratio(NAN, 1.0) == INF and ratio(INF, 1.0) == INF
    assert ratio(1e300, 1e-300) == INF  # overflow of the division itself


# ----------------------------------------------------------------------------- run_theorem on fake theorems

u1 = sp.Symbol("u1", real=True)


def _derive_true() -> object:
    pf = Proof()
    pf.equal(sp.exp(u1) * sp.exp(-u1), 1, "e^u e^-u = 1", key="key")
    pf.note("so much for that")
    return pf.done(Status.PROVED)


def _fake(derive, evaluate=None, expected=Status.PROVED) -> Theorem:
    return fake_theorem(derive, evaluate, expected)


def _run(th: Theorem):
    return run_theorem(th, RngDrawer(np.random.default_rng(0)), DEFAULT_IMPL)


def test_a_sound_fake_theorem_passes():
    r = _run(_fake(_derive_true, evaluate=lambda d, c, impl: (0.0, 1.0)))
    assert r.passed and r.status is Status.PROVED and r.error is None
    assert [s.key for s in r.verified_steps] == ["key"]
    assert r.as_dict()["key_steps"] == ["key"] and r.as_dict()["steps"][1]["verified"] is False


def test_a_false_identity_fails_the_theorem():
    r = _run(_fake(derive_false_identity))
    assert not r.passed and r.status is Status.FAILED
    assert r.derivation is None and r.verified_steps == []
    assert "DerivationError" in r.error and "log(x^2) = log(x)" in r.error


def test_a_key_step_that_is_only_a_remark_fails_the_theorem():
    r = _run(_fake(derive_key_step_as_remark, evaluate=lambda d, c, impl: (0.0, 1.0)))
    assert not r.passed and r.status is Status.FAILED
    assert "key steps not verified by sympy: key" in r.error
    assert r.check is None  # a derivation that did not earn its status is not checked numerically
    assert r.as_dict()["status_text"] == "FAILED"


def test_a_status_the_derivation_did_not_earn_fails():
    r = _run(_fake(_derive_true, expected=Status.PROVED_N))
    assert not r.passed and "derivation earned 'proved'" in r.error


@pytest.mark.parametrize("evaluate,why", [
    (lambda d, c, impl: (NAN, 1.0), "error nan"),
    (lambda d, c, impl: worst((0.0, 1.0), (NAN, 1.0)), "error inf"),
    (lambda d, c, impl: (2.0, 1.0), "error 2"),
    (lambda d, c, impl: 1 / 0, "ZeroDivisionError"),
])
def test_a_failing_numeric_check_fails_the_theorem(evaluate, why):
    th = _fake(_derive_true, evaluate=evaluate)
    chk = check_theorem(th, th.derive(), RngDrawer(np.random.default_rng(0)), DEFAULT_IMPL)
    assert not chk.passed and chk.max_ratio > 1 and why in chk.worst
    r = _run(th)
    assert not r.passed and r.status is Status.PROVED and r.error.startswith("numeric check failed")

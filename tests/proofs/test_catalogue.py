"""The catalogue (proofs/catalogue.py), every theorem of it: the derivation earns the status it claims, and
its numeric form agrees with the torch function on hypothesis-drawn inputs (the same make_case/evaluate
that `hmpo verify` runs)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proofs import DEFAULT_IMPL, THEOREMS, Status

from tests.proofs.proofs_helpers import HypothesisDrawer

NUMERIC = [th for th in THEOREMS if th.make_case is not None]


@pytest.mark.parametrize("th", THEOREMS, ids=lambda t: t.id)
def test_derivation_earns_claimed_status(th, derivations):
    d = derivations[th.id]
    assert d.status == th.expected
    assert d.steps, "a derivation records its steps"
    if d.status == Status.PROVED_N:
        assert d.n_max is not None and d.n_max >= 2
        assert f"2..{d.n_max}" in d.describe()
    if d.status == Status.REFUTED:
        assert d.counterexample


@pytest.mark.parametrize("th", THEOREMS, ids=lambda t: t.id)
def test_every_theorem_names_key_steps_that_sympy_verified(th, derivations):
    assert th.key_steps, f"{th.id}: a theorem names the steps its statement rests on"
    assert len(set(th.key_steps)) == len(th.key_steps)
    missing = set(th.key_steps) - derivations[th.id].verified_keys()
    assert not missing, f"{th.id}: key steps {missing} are not verified by sympy"


@pytest.mark.parametrize("th", NUMERIC, ids=lambda t: t.id)
@settings(max_examples=10)
@given(data=st.data())
def test_numeric_form_matches_torch(th, derivations, data):
    case = th.make_case(HypothesisDrawer(data))
    err, tol = th.evaluate(derivations[th.id], case, DEFAULT_IMPL)
    assert err <= tol, f"{th.id}: error {err:.3g} > tolerance {tol:.3g} on u={case.u}, p={case.p}, w={case.w}"


def test_catalogue_covers_issue_items():
    ids = {th.id.split("-")[0] for th in THEOREMS}
    for k in range(1, 14):
        assert f"T{k}" in ids, f"catalogue item {k} missing"
    statuses = {th.expected for th in THEOREMS}
    # the catalogue exercises every earned status except open/failed
    assert {Status.PROVED, Status.PROVED_N, Status.NUMERIC, Status.REFUTED} <= statuses

"""Theorems about the mean iterations and seed 002's demonstration (proofs/theorems_iterations.py)."""

from __future__ import annotations

import pytest
import sympy as sp

from proofs import DEFAULT_IMPL, theorems_iterations
from proofs.theorems_iterations import exact_pair_limit

from tests.proofs.proofs_helpers import assert_caught, assert_key_steps_verified, sqrt_ah_geometric

WRONG = [
    ("T7-ah-from-AH", "geometric_mean", sqrt_ah_geometric),
    ("T6-pair-iteration", "arithmetic_harmonic_iteration", DEFAULT_IMPL.gauss_agm),
]


@pytest.mark.parametrize("tid,field,wrong", WRONG, ids=[f"{t}:{f}:{w.__name__}" for t, f, w in WRONG])
def test_wrong_implementation_is_caught(tid, field, wrong, derivations):
    assert_caught(tid, field, wrong, derivations)


def test_seed_002_agm_demo_symmetric_only():
    lim, g = exact_pair_limit([1, 2, 4, 8])
    assert sp.simplify(lim - g) == 0
    lim, g = exact_pair_limit([1, 1, 4])
    assert sp.nsimplify(lim**6) == sp.Rational(512, 27) and sp.nsimplify(g**6) == 16
    assert float(lim) > float(g)
    lim, g = exact_pair_limit([1, 4, 4])
    assert float(lim) < float(g)


#: the steps sympy must verify in each theorem's derivation (at least those its statement rests on), held
#: here apart from ``Theorem.key_steps`` so that a step demoted to a remark is caught in either place
VERIFIED = {
    "T6-pair-iteration": {"product-invariant", "q-squares", "limit", "quadratic"},
    "T7-ah-from-AH": {"sinh", "odd-cumulants"},
    "T7R-rmi-not-geometric": {"x=(1, 1, 4)", "x=(1, 4, 4)"},
    "T8-agm-different": {"am-gm", "product-grows"},
    "T8b-agm-elliptic": {"series"},
    "S1-seed002-table": {"T2", "violations"},
    "S2-seed002-agm-demo": {"sqrt(AH)=G", "trace"},
}


@pytest.mark.parametrize("tid", sorted(VERIFIED))
def test_sympy_verifies_the_key_steps(tid, derivations):
    assert_key_steps_verified(VERIFIED, theorems_iterations, tid, derivations)

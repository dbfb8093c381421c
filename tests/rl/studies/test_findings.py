"""Typed findings: the JSON round trip, the schema version, and what a verdict means for a claim."""

from __future__ import annotations

import json
import math

import pytest

from rl.studies.findings import (FINDING_VERDICTS, FINDINGS_FORMAT, OUTCOMES, Finding, StatTest, findings_document,
                                 outcome, read_findings)


def _test(**kw) -> StatTest:
    base = dict(cell="c", endpoint="auc", test="sign-flip (exact)", n=8, estimate=-0.004, ci_low=-0.005,
                ci_high=-0.003, margin=0.01, p=0.0078, p_adjusted=0.031, verdict="equivalent", family="f")
    return StatTest(**{**base, **kw})


def test_findings_round_trip_through_json_exactly():
    t1 = _test()
    t2 = _test(verdict="inconclusive", p_tost=math.nan, power=0.31, relative=math.inf, role="secondary")
    f = Finding(id="x", kind="comparison", claim="c", study="s", endpoint="auc: ...", margin="auc 0.01",
                family="f (alpha 0.05)", tests=(t1, t2), verdict="equivalent", supports="better",
                outcome="no effect beyond the margin", summary="...", figure="figures/d.png", notes=("a", "b"))
    doc = findings_document("s", [f], n_runs=3)
    text = json.dumps(doc, allow_nan=False)        # strict JSON: NaN and inf are spelled out
    (back,) = read_findings(text)
    assert back.tests[1].power == 0.31 and math.isnan(back.tests[1].p_tost) and back.tests[1].relative == math.inf
    assert back.tests[0] == t1 and back.notes == ("a", "b") and back.figure == "figures/d.png"
    assert back.primary() == (t1,) and back.p_values() == [0.031]
    with pytest.raises(ValueError, match="format"):
        read_findings({**doc, "format": "hmpo-findings/1"})
    bad = json.loads(text)
    del bad["findings"][0]["tests"][0]["p"]
    with pytest.raises(ValueError, match="missing fields"):
        read_findings(bad)


@pytest.mark.parametrize("verdict, supports, expected", [
    ("better", "better", "supported"),
    ("worse", "better", "contradicted"),
    ("worse", "worse", "supported"),
    ("better", "differs", "supported"),
    ("equivalent", "better", "no effect beyond the margin"),
    ("equivalent", "equivalent", "supported"),
    ("increasing", "monotone", "supported"),
    ("increasing", "optimum", "contradicted"),
    ("optimum", "optimum", "supported"),
    ("flat", "decreasing", "no effect beyond the margin"),
    ("inconclusive", "better", "inconclusive"),
    ("mixed", "better", "mixed"),
    ("identical", None, "identical"),
    ("not identical", None, "control failed"),
    ("descriptive", None, "descriptive"),
])
def test_outcome_reads_a_verdict_against_the_declared_support(verdict, supports, expected):
    assert outcome(verdict, supports) == expected
    assert expected in OUTCOMES and verdict in FINDING_VERDICTS


def test_the_ledger_reads_the_schema_the_studies_write():
    import proofs.claims as claims

    assert claims.FINDINGS_FORMAT == FINDINGS_FORMAT
    assert claims.OUTCOMES == OUTCOMES

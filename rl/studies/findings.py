"""Typed findings: what a study concluded about one claim, with every test behind it.

A :class:`Finding` is written by the analysis (rl.studies.analysis), rendered by the report
writer (rl.studies.report) and read by the claims ledger (proofs.claims reads findings.json by
its schema, :data:`FINDINGS_FORMAT`; it never parses prose). Both records are frozen; their
JSON form is ``dataclasses.asdict`` with non-finite floats written as null / "inf" / "-inf",
and :func:`read_findings` restores them exactly, refusing another schema version.

Test verdicts (:data:`TEST_VERDICTS`): *better* / *worse* (the difference test rejects after
Holm over the claim's family and the estimate is at least the margin), *equivalent* (the two
one-sided tests reject after Holm: the difference lies within +-margin), *inconclusive*
(neither; the test carries the power it had to detect the margin), *identical* (the runs are
equal bit for bit), *not identical* (a control that should be identical is not), *increasing*
/ *decreasing* (a trend in p), *optimum* (an interior optimum at the declared p), *flat* (no
change across the sweep beyond the margin), *holds* / *fails* (an exact identity checked on every
case by enumeration, as the estimator study does), *descriptive* (a number without a test). A
finding's verdict summarises its primary tests the same way, plus *mixed* (significant in
both directions); its ``outcome`` says what that means for the claim, given the verdict the
claim declared would support it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["FINDINGS_FORMAT", "TEST_VERDICTS", "FINDING_VERDICTS", "OUTCOMES", "StatTest", "Finding", "outcome",
           "findings_document", "read_findings"]

FINDINGS_FORMAT = "hmpo-findings/2"
TEST_VERDICTS = ("better", "worse", "equivalent", "inconclusive", "identical", "not identical", "increasing",
                 "decreasing", "optimum", "flat", "holds", "fails", "descriptive")
FINDING_VERDICTS = TEST_VERDICTS + ("mixed",)
#: what a finding's verdict means for its claim
OUTCOMES = ("supported", "contradicted", "no effect beyond the margin", "inconclusive", "mixed", "identical",
            "control failed", "descriptive")
_DIRECTIONAL = ("better", "worse", "increasing", "decreasing", "optimum")


@dataclass(frozen=True)
class StatTest:
    """One test of one endpoint in one condition (or pooled over conditions).

    ``estimate`` is the effect in the endpoint's units: the mean per-seed difference variant
    minus baseline (comparison), the change of that gap between factor levels (interaction),
    the change across the sweep or the optimum's smallest lead (sweep), or the mean value
    (descriptive); ``ci_low``/``ci_high`` its 95% interval; ``relative`` the estimate over the
    baseline's mean where one exists. ``p`` is the raw p of the difference (or trend) test,
    ``p_adjusted`` Holm's over the family ``family``; ``p_tost`` the equivalence test's.
    ``power``: of the difference test at Holm's first-step level to detect ``margin``.
    ``role``: "primary" (feeds the finding's verdict), "secondary" (where, after a pooled
    primary test), "control", or "outside regime" (the means coincide in that condition).
    """

    cell: str
    endpoint: str
    test: str
    n: int
    estimate: float
    ci_low: float
    ci_high: float
    margin: float
    p: float
    p_adjusted: float
    verdict: str
    family: str
    role: str = "primary"
    variant: str = ""
    baseline: str = ""
    variant_mean: float = math.nan
    baseline_mean: float = math.nan
    relative: float = math.nan
    p_tost: float = math.nan
    p_tost_adjusted: float = math.nan
    mc_error: float = 0.0
    check: str = ""
    check_p: float = math.nan
    power: float = math.nan
    censored: int = 0
    paired: bool = True
    note: str = ""


@dataclass(frozen=True)
class Finding:
    """What one study says about one claim: the claim, its declared endpoint(s) and margin(s),
    the family the tests were corrected in, every test, the verdict and the figure that shows it."""

    id: str
    kind: str
    claim: str
    study: str
    endpoint: str
    margin: str
    family: str
    tests: tuple[StatTest, ...]
    verdict: str
    supports: str | None
    outcome: str
    summary: str
    figure: str | None = None
    notes: tuple[str, ...] = ()

    def primary(self) -> tuple[StatTest, ...]:
        return tuple(t for t in self.tests if t.role == "primary")

    def p_values(self) -> list[float]:
        """Holm-adjusted p of the primary tests (finite ones), smallest first."""
        return sorted(t.p_adjusted for t in self.primary() if math.isfinite(t.p_adjusted))


def outcome(verdict: str, supports: str | None) -> str:
    """A finding's verdict read against the verdict its claim declared would support it."""
    if verdict not in FINDING_VERDICTS:
        raise ValueError(f"unknown finding verdict {verdict!r}; one of {FINDING_VERDICTS}")
    if verdict == "not identical":
        return "control failed"
    if verdict in ("identical", "mixed", "inconclusive"):
        return verdict
    if verdict == "descriptive" or supports is None:
        return "descriptive"
    if verdict in ("holds", "fails"):
        return "supported" if verdict == supports else "contradicted"
    if verdict in ("equivalent", "flat"):
        return "supported" if supports == "equivalent" else "no effect beyond the margin"
    if supports == verdict or (supports == "differs" and verdict in ("better", "worse")) or \
            (supports == "monotone" and verdict in ("increasing", "decreasing")):
        return "supported"
    return "contradicted" if verdict in _DIRECTIONAL else "inconclusive"


def _jsonable(x: Any) -> Any:
    if isinstance(x, float):
        if math.isnan(x):
            return None
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _float(x: Any) -> float:
    if x is None:
        return math.nan
    if x == "inf":
        return math.inf
    if x == "-inf":
        return -math.inf
    return float(x)


def findings_document(study: str, findings: list[Finding], **extra: Any) -> dict[str, Any]:
    """The findings.json document: {"format", "study", "findings": [...], **extra} (strict JSON)."""
    return _jsonable({"format": FINDINGS_FORMAT, "study": study, **extra,
                      "findings": [asdict(f) for f in findings]})


def _record(cls, d: dict[str, Any]):
    """``cls`` from its asdict() form: every required field present, no unknown one, floats
    restored from their JSON spelling (null = NaN, "inf", "-inf")."""
    import dataclasses

    names = {f.name: f for f in fields(cls)}
    missing = [n for n, f in names.items() if n not in d and f.default is dataclasses.MISSING]
    unknown = sorted(set(d) - set(names))
    if missing or unknown:
        raise ValueError(f"{cls.__name__}: missing fields {missing}, unknown fields {unknown}")
    return cls(**{n: (_float(v) if names[n].type in ("float", float) else v) for n, v in d.items()})


def read_findings(doc: dict[str, Any] | str) -> list[Finding]:
    """Findings from a findings.json document (or its text); ValueError on another format."""
    if isinstance(doc, str):
        doc = json.loads(doc)
    if not isinstance(doc, dict) or doc.get("format") != FINDINGS_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"findings: expected format {FINDINGS_FORMAT!r}, got {got!r}")
    out = []
    for f in doc.get("findings", []):
        f = dict(f)
        f["tests"] = tuple(_record(StatTest, t) for t in f.get("tests", []))
        f["notes"] = tuple(f.get("notes", ()))
        out.append(_record(Finding, f))
    return out

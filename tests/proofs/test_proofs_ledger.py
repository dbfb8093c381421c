"""The claims ledger: coverage of the issue's claims, verdict discipline, and the seeds' numbers."""

from __future__ import annotations

from pathlib import Path

import sympy as sp

from proofs import BY_ID, CLAIMS, VERDICTS, Claim, Status, resolve
from proofs.claims import REQUIRED
from proofs.core import TheoremResult
from proofs.seeds import SEED_002_TABLE, table_violations
from proofs.theorems_iterations import exact_pair_limit

ROOT = Path(__file__).resolve().parents[2]


def test_required_claims_present():
    ids = {c.id for c in CLAIMS}
    assert len(ids) == len(CLAIMS), "claim ids are unique"
    for what, cid in REQUIRED.items():
        assert cid in ids, f"required claim '{what}' ({cid}) missing"


def test_every_seed_has_claims_and_fields_are_valid():
    for c in CLAIMS:
        assert c.verdict in VERDICTS, c.id
        assert c.source.split(" ", 1)[0] in {"000", "001", "002"}, c.id
        assert c.claim and "\n" not in c.claim, c.id
        for tid in c.theorem_ids():
            assert tid in BY_ID, f"{c.id} cites unknown theorem {tid}"
        for path in c.tests():
            assert (ROOT / path).is_file(), f"{c.id} cites missing test file {path}"
        if c.verdict == "proved":
            assert c.theorem_ids(), f"{c.id}: verdict proved needs a theorem"
        if c.verdict in ("refuted", "conditional"):
            assert c.theorem_ids() or c.tests(), f"{c.id}: verdict {c.verdict} needs a theorem or a test"
        if c.verdict == "measured":
            assert c.studies(), c.id
    for seed in ("000", "001", "002"):
        assert sum(c.source.startswith(seed) for c in CLAIMS) >= 10


def test_proved_claims_cite_proved_theorems():
    for c in CLAIMS:
        if c.verdict == "proved":
            assert any(BY_ID[t].expected in (Status.PROVED, Status.PROVED_N) for t in c.theorem_ids()), c.id


def test_verdict_falls_to_open_when_evidence_fails(derivations):
    """A claim is never proved by assertion: break T2 and every claim citing it loses its verdict."""
    results = []
    for tid, th in BY_ID.items():
        d = None if tid == "T2-monotone" else derivations[tid]
        results.append(TheoremResult(th, d, None, 0.0, 0.0, None if d else "broken on purpose"))
    led = {c["id"]: c for c in resolve(results)}
    for c in CLAIMS:
        if "T2-monotone" in c.evidence and c.verdict in ("proved", "refuted", "conditional"):
            assert led[c.id]["verdict"] == "open" and not led[c.id]["ok"], c.id
    assert led["C000-10"]["verdict"] == "proved" and led["C000-10"]["ok"]


def test_test_backed_verdict_stands_only_on_supplied_passing_results(derivations):
    """C001-10 (MuonClip) rests on tests/rl/test_muonclip.py, which hmpo verify does not run."""
    results = [TheoremResult(th, derivations[tid], None, 0.0, 0.0) for tid, th in BY_ID.items()]
    path = "tests/rl/test_muonclip.py"
    claim = next(c for c in CLAIMS if c.id == "C001-10")
    assert claim.tests() == [path] and not claim.theorem_ids()
    for supplied, verdict, ok in (({}, "open", True), ({path: True}, claim.verdict, True), ({path: False}, "open", False)):
        (r,) = resolve(results, claims=[claim], tests=supplied)
        assert (r["verdict"], r["ok"]) == (verdict, ok), supplied
    proved_by_test = Claim("X-1", "c", "001 README / x", "proved", (f"test: {path}",))
    (r,) = resolve(results, claims=[proved_by_test], tests={path: True})
    assert r["verdict"] == "open", "a test never earns proved"


def test_seed_002_table_is_not_monotone():
    viol = table_violations(SEED_002_TABLE)
    assert any("H <= G violated" in v for v in viol)
    assert len(viol) >= 3
    monotone = [(p, float(2 ** p), "") for p in (-2.0, -1.0, 0.0, 1.0, 2.0)]
    assert table_violations(monotone) == []


def test_seed_002_agm_demo_symmetric_only():
    lim, g = exact_pair_limit([1, 2, 4, 8])
    assert sp.simplify(lim - g) == 0
    lim, g = exact_pair_limit([1, 1, 4])
    assert sp.nsimplify(lim**6) == sp.Rational(512, 27) and sp.nsimplify(g**6) == 16
    assert float(lim) > float(g)
    lim, g = exact_pair_limit([1, 4, 4])
    assert float(lim) < float(g)


def test_verify_json_reports_every_theorem_and_backs_every_verdict(verify_json):
    code, out = verify_json
    assert code == 0, out["failures"]
    assert out["ok"]
    assert {t["id"] for t in out["theorems"]} == set(BY_ID)
    passed = {t["id"]: t for t in out["theorems"] if t["passed"]}
    assert len(passed) == len(BY_ID)
    for c in out["ledger"]:
        if c["verdict"] == "proved":
            assert any(t in passed and passed[t]["status"] in ("proved", "proved-n") for t in c["evidence"]), c["id"]
    assert sum(out["ledger_summary"].values()) == len(CLAIMS)
    for t in out["theorems"]:
        if t["numeric"] is not None:
            assert t["numeric"]["passed"] and t["numeric"]["cases"] >= 1

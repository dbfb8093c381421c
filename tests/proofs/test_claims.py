"""The claims ledger (proofs/claims.py): coverage of the issue's claims, verdict discipline, measured claims."""

from __future__ import annotations

import pytest

from proofs import BY_ID, CLAIMS, VERDICTS, CheckOutcome, Claim, Status, resolve
from proofs.claims import REQUIRED
from proofs.core import TheoremResult

from rl.ledger_checks import CHECKS as LEDGER_CHECKS


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
        for name in c.checks():
            assert name in LEDGER_CHECKS, f"{c.id} cites unknown check {name}"
        if c.verdict == "proved":
            assert c.theorem_ids(), f"{c.id}: verdict proved needs a theorem"
        if c.verdict in ("refuted", "conditional"):
            assert c.theorem_ids() or c.checks(), f"{c.id}: verdict {c.verdict} needs a theorem or a check"
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


def test_check_backed_verdict_stands_only_on_a_check_that_ran_and_passed(derivations):
    """C001-10 (MuonClip) rests on the check muonclip-qk-cap of rl.ledger_checks, which hmpo verify runs."""
    results = [TheoremResult(th, derivations[tid], None, 0.0, 0.0) for tid, th in BY_ID.items()]
    name = "muonclip-qk-cap"
    claim = next(c for c in CLAIMS if c.id == "C001-10")
    assert claim.checks() == [name] and not claim.theorem_ids()
    passed, failed = CheckOutcome(name, True, "capped"), CheckOutcome(name, False, "AssertionError: logit 130 > tau")
    for supplied, verdict, ok in (({}, "open", True), ({name: passed}, claim.verdict, True), ({name: failed}, "open", False)):
        (r,) = resolve(results, claims=[claim], checks=supplied)
        assert (r["verdict"], r["ok"]) == (verdict, ok), supplied
        assert r["checks"] == [{"name": name, "passed": o.passed, "detail": o.detail} for o in supplied.values()]
    (r,) = resolve(results, claims=[claim])
    assert name in r["pending"] and "did not run" in r["pending"]
    (r,) = resolve(results, claims=[claim], checks={name: failed})
    assert r["broken_evidence"] == [f"check: {name}"] and not r["pending"]
    proved_by_check = Claim("X-1", "c", "001 README / x", "proved", (f"check: {name}",))
    (r,) = resolve(results, claims=[proved_by_check], checks={name: passed})
    assert r["verdict"] == "open", "a check never earns proved"
    refuted_by_check = Claim("X-2", "c", "001 README / x", "refuted", (f"check: {name}",))
    (r,) = resolve(results, claims=[refuted_by_check], checks={name: passed})
    assert (r["verdict"], r["ok"]) == ("refuted", True)


# ----------------------------------------------------------------------------- measured claims (studies)

def _passing(derivations):
    return [TheoremResult(th, derivations[tid], None, 0.0, 0.0) for tid, th in BY_ID.items()]


def _finding(fid: str, verdict: str, study: str = "toy", fig: str | None = "figures/f.png") -> dict:
    """One entry as rl.studies.report.ledger_evidence writes it (made up here, not copied from a run)."""
    return {"id": fid, "study": study, "verdict": verdict, "claim": f"claim of {fid}",
            "figure": f"{study}/{fig}" if fig else None, "link": f"{study}/{fig}" if fig else f"{study}/README.md",
            "p_values": [0.0123, 0.004], "effect": "Hedges' g -1.5", "summary": f"Holm p = 0.0123, Hedges' g -1.5 ({fid})"}


def test_measured_claims_take_direction_p_values_and_figure_from_the_findings(derivations, tmp_path):
    from proofs.report import claims_markdown
    from proofs.runner import VerifyResults

    studies = {
        "stability": {"findings": [_finding("hmpo-more-stable-than-gspo", "not separated"),
                                   _finding("not-a-ledger-finding", "supported")],
                      "reports_dir": str(tmp_path / "reports")},
        "sample-efficiency": {"findings": [_finding("hmpo-sample-efficiency-vs-gspo", "refuted"),
                                           _finding("hmpo-sample-efficiency-vs-gspo", "supported", study="other")],
                              "reports_dir": str(tmp_path / "reports")},
        "cost-of-means": {"findings": [_finding("cost-of-the-means", "measured", fig=None)]},
    }
    led = {c["id"]: c for c in resolve(_passing(derivations), studies)}
    c15 = led["C000-15"]
    assert (c15["verdict"], c15["ok"], c15["direction"]) == ("measured", True, "not separated (toy)")
    assert [e["id"] for e in c15["measured"]] == ["hmpo-more-stable-than-gspo"]   # the unrelated finding is not used
    assert c15["measured"][0]["p_values"] == [0.0123, 0.004]
    assert led["C000-16"]["direction"] == "refuted (toy); supported (other)"       # each study keeps its own word
    assert led["C001-12"]["verdict"] == "measured" and led["C001-12"]["direction"] == "descriptive, no test (toy)"
    # the stability study ran, but without the findings C000-04 needs: open, and the note says which
    assert led["C000-04"]["verdict"] == "open" and "arithmetic-less-stable-than-gspo" in led["C000-04"]["pending"]
    assert "produced none" in led["C000-04"]["pending"]
    # a study that did not run leaves its claims open, naming what would settle them
    assert led["C000-17"]["verdict"] == "open" and "off-policy-degree" in led["C000-17"]["pending"]
    assert "did not run" in led["C000-17"]["pending"] and not led["C000-17"]["measured"]
    # theorem-backed verdicts are untouched
    assert led["C000-38"]["verdict"] == "proved" and not led["C000-38"]["measured"]

    res = VerifyResults([], list(led.values()), 0, 0.0)
    md = claims_markdown(res, tmp_path / "reports")
    row15 = next(ln for ln in md.splitlines() if ln.startswith("| C000-15 "))
    assert "**measured**: not separated (toy)" in row15
    assert "[figure](toy/figures/f.png)" in row15 and "Holm p = 0.0123" in row15
    # written elsewhere, the link still points at the figure
    md_up = claims_markdown(res, tmp_path)
    assert "[figure](reports/toy/figures/f.png)" in md_up
    row_cost = next(ln for ln in md.splitlines() if ln.startswith("| C001-12 "))
    assert "descriptive, no test" in row_cost and "(toy/README.md)" in row_cost
    row17 = next(ln for ln in md.splitlines() if ln.startswith("| C000-17 "))
    assert "**open** (declared measured)" in row17 and "did not run" in row17


def test_a_study_never_proves(derivations):
    results = _passing(derivations)
    bad = {"stability": {"findings": [_finding("hmpo-more-stable-than-gspo", "proved")]}}
    with pytest.raises(ValueError, match="'proved'"):
        resolve(results, bad)
    with pytest.raises(ValueError, match="findings"):
        resolve(results, {"stability": {"findings": "supported"}})
    good = {"stability": {"findings": [_finding("hmpo-more-stable-than-gspo", "supported")]}}
    # a claim declared proved on study evidence alone is not backed: open, whatever the study says
    by_study = Claim("X-2", "c", "000 notes / x", "proved", ("study: stability",), findings=("hmpo-more-stable-than-gspo",))
    (r,) = resolve(results, good, claims=[by_study])
    assert r["verdict"] == "open"
    # declared conditional on a theorem: the finding is shown beside it, the verdict stays the theorem's
    cond = Claim("X-3", "c", "000 notes / x", "conditional", ("T10-on-policy", "study: stability"),
                 findings=("hmpo-more-stable-than-gspo",))
    (r,) = resolve(results, good, claims=[cond])
    assert r["verdict"] == "conditional" and r["measured"][0]["verdict"] == "supported"
    # "not measured" findings count as absent
    (r,) = resolve(results, {"stability": {"findings": [_finding("hmpo-more-stable-than-gspo", "not measured")]}},
                   claims=[next(c for c in CLAIMS if c.id == "C000-15")])
    assert r["verdict"] == "open" and not r["measured"]


def test_measured_claim_falls_to_open_when_its_theorem_fails(derivations):
    """C000-17 leans on T10 (on-policy equivalence): a study cannot carry it if T10 broke."""
    results = [TheoremResult(th, None if tid == "T10-on-policy" else derivations[tid], None, 0.0, 0.0,
                             "broken on purpose" if tid == "T10-on-policy" else None) for tid, th in BY_ID.items()]
    studies = {"off-policy-degree": {"findings": [_finding("off-policy-degree-effect", "supported")]}}
    led = {c["id"]: c for c in resolve(results, studies)}
    assert led["C000-17"]["verdict"] == "open" and not led["C000-17"]["ok"]
    assert led["C000-17"]["broken_evidence"] == ["T10-on-policy"]


def test_declared_measured_claims_name_their_findings_and_stay_open_in_verify(verify_json):
    for c in CLAIMS:
        assert bool(c.findings) == (c.verdict == "measured"), c.id
        if c.findings:
            assert c.studies(), c.id
    _, out = verify_json
    led = {c["id"]: c for c in out["ledger"]}
    assert out["ledger_summary"]["measured"] == 0
    for c in CLAIMS:
        if c.verdict == "measured":
            r = led[c.id]
            assert r["verdict"] == "open" and r["ok"] and not r["measured"], c.id
            assert "did not run" in r["pending"] and c.studies()[0] in r["pending"], c.id
    for what in ("HMPO more stable than GSPO", "cost differences negligible"):
        assert led[REQUIRED[what]]["declared"] == "measured"

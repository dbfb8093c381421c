"""The claims ledger (proofs/claims.py): coverage of the issue's claims, verdict discipline, measured claims."""

from __future__ import annotations

import pytest

from proofs import BY_ID, CLAIMS, VERDICTS, CheckOutcome, Claim, Status, resolve
from proofs.claims import REQUIRED, StudyFindings
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
            assert c.theorem_ids() or c.checks() or c.citations(), \
                f"{c.id}: verdict {c.verdict} needs a theorem, a check or a citation"
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


def _doc(study: str, *findings: tuple) -> dict:
    """A findings.json document of one study (format hmpo-findings/2), findings made up here:
    (id, verdict, outcome[, figure]) each, with one primary test at Holm p 0.0123."""
    out = []
    for fid, verdict, outcome, *fig in findings:
        test = {"role": "primary", "p_adjusted": 0.0123, "cell": "c", "endpoint": "auc"}
        out.append({"id": fid, "kind": "comparison", "claim": f"claim of {fid}", "study": study, "verdict": verdict,
                    "outcome": outcome, "summary": f"key: auc -0.04 [95% CI -0.05, -0.03], Holm p = 0.0123 ({fid})",
                    "figure": fig[0] if fig else "figures/f.png", "tests": [test, {**test, "role": "secondary"}]})
    return {"format": "hmpo-findings/2", "study": study, "findings": out}


def _studies(*docs, reports_dir=None):
    return {d["study"]: StudyFindings.from_document(d, reports_dir) for d in docs}


def test_measured_claims_take_direction_p_values_and_figure_from_the_findings(derivations, tmp_path):
    from proofs.report import claims_markdown
    from proofs.runner import VerifyResults

    reports = str(tmp_path / "reports")
    studies = _studies(
        _doc("toy", ("hmpo-more-stable-than-gspo", "equivalent", "no effect beyond the margin"),
             ("not-a-ledger-finding", "better", "supported"),
             ("hmpo-sample-efficiency-vs-gspo", "worse", "contradicted"),
             ("cost-of-the-means", "descriptive", "descriptive", None)),
        _doc("other", ("hmpo-sample-efficiency-vs-gspo", "inconclusive", "inconclusive")), reports_dir=reports)
    led = {c["id"]: c for c in resolve(_passing(derivations), studies)}
    c15 = led["C000-15"]
    assert (c15["verdict"], c15["ok"]) == ("measured", True)
    assert c15["direction"] == "no effect beyond the margin: equivalent (toy)"
    assert [e["id"] for e in c15["measured"]] == ["hmpo-more-stable-than-gspo"]   # the unrelated finding is not used
    assert c15["measured"][0]["p_values"] == [0.0123]                             # primary tests only
    assert led["C000-16"]["direction"] == "contradicted: worse (toy); inconclusive (other)"   # each study its word
    assert led["C001-12"]["verdict"] == "measured" and led["C001-12"]["direction"] == "descriptive (toy)"
    # the studies ran, but without the findings C000-04 needs: open, and the note says which
    assert led["C000-04"]["verdict"] == "open" and "arithmetic-less-stable-than-gspo" in led["C000-04"]["pending"]
    assert "did not produce" in led["C000-04"]["pending"]
    # theorem-backed verdicts are untouched
    assert led["C000-38"]["verdict"] == "proved" and not led["C000-38"]["measured"]

    res = VerifyResults([], list(led.values()), 0, 0.0)
    md = claims_markdown(res, tmp_path / "reports")
    row15 = next(ln for ln in md.splitlines() if ln.startswith("| C000-15 "))
    assert "**measured**: no effect beyond the margin: equivalent (toy)" in row15
    assert "[figure](toy/figures/f.png)" in row15 and "Holm p = 0.0123" in row15
    # written elsewhere, the link still points at the figure
    assert "[figure](reports/toy/figures/f.png)" in claims_markdown(res, tmp_path)
    row_cost = next(ln for ln in md.splitlines() if ln.startswith("| C001-12 "))
    assert "descriptive" in row_cost and "(toy/README.md)" in row_cost
    # no study at all: open, naming what would settle it
    (c17,) = [c for c in resolve(_passing(derivations), {}) if c["id"] == "C000-17"]
    assert c17["verdict"] == "open" and "off-policy-degree" in c17["pending"] and "did not run" in c17["pending"]


def test_study_findings_are_read_by_schema_never_guessed(derivations):
    doc = _doc("toy", ("hmpo-more-stable-than-gspo", "better", "supported"))
    with pytest.raises(ValueError, match="hmpo-findings/2"):
        StudyFindings.from_document({**doc, "format": "hmpo-findings/1"})
    del doc["findings"][0]["outcome"]
    with pytest.raises(ValueError, match="outcome"):
        StudyFindings.from_document(doc)
    bad = _doc("toy", ("hmpo-more-stable-than-gspo", "proved", "proved"))   # a study never proves
    with pytest.raises(ValueError, match="'proved'"):
        StudyFindings.from_document(bad)
    with pytest.raises(ValueError, match="StudyFindings"):
        resolve(_passing(derivations), {"toy": {"findings": []}})


def test_a_study_never_proves(derivations):
    results = _passing(derivations)
    good = _studies(_doc("toy", ("hmpo-more-stable-than-gspo", "better", "supported")))
    # a claim declared proved on study evidence alone is not backed: open, whatever the study says
    by_study = Claim("X-2", "c", "000 notes / x", "proved", ("study: stability",), findings=("hmpo-more-stable-than-gspo",))
    (r,) = resolve(results, good, claims=[by_study])
    assert r["verdict"] == "open"
    # declared conditional on a theorem: the finding is shown beside it, the verdict stays the theorem's
    cond = Claim("X-3", "c", "000 notes / x", "conditional", ("T10-on-policy", "study: stability"),
                 findings=("hmpo-more-stable-than-gspo",))
    (r,) = resolve(results, good, claims=[cond])
    assert r["verdict"] == "conditional" and r["measured"][0]["verdict"] == "better"
    # a citation backs a refutation (a literature claim), never a proof
    cited = Claim("X-4", "c", "002 report / x", "refuted", ("cite: someone's repository",))
    assert resolve(results, {}, claims=[cited])[0]["verdict"] == "refuted"
    assert resolve(results, {}, claims=[Claim("X-5", "c", "x / y", "proved", ("cite: a paper",))])[0]["verdict"] == "open"


def test_measured_claim_falls_to_open_when_its_theorem_fails(derivations):
    """C000-17 leans on T10 (on-policy equivalence): a study cannot carry it if T10 broke."""
    results = [TheoremResult(th, None if tid == "T10-on-policy" else derivations[tid], None, 0.0, 0.0,
                             "broken on purpose" if tid == "T10-on-policy" else None) for tid, th in BY_ID.items()]
    studies = _studies(_doc("toy", ("off-policy-degree-effect", "better", "supported")))
    led = {c["id"]: c for c in resolve(results, studies)}
    assert led["C000-17"]["verdict"] == "open" and not led["C000-17"]["ok"]
    assert led["C000-17"]["broken_evidence"] == ["T10-on-policy"]


def test_the_issue_11_ledger_rows(derivations):
    by_id = {c.id: c for c in CLAIMS}
    # verdicts that said more than their evidence
    assert by_id["C000-32"].verdict == "open"                                   # a design question, T12 only locates
    assert by_id["C002-11"].verdict == "measured" and "T13-learnable-p" in by_id["C002-11"].evidence
    assert by_id["C000-30"].verdict == "conditional" and "payoffs" in by_id["C000-30"].note
    assert by_id["C000-11"].verdict == by_id["C001-09"].verdict == "measured"
    # settled by citation
    c15 = by_id["C002-15"]
    assert c15.verdict == "refuted" and any("callsys/GMPO" in e for e in c15.citations())
    assert any("2605.12058" in e for e in c15.citations())
    (r,) = resolve(_passing(derivations), {}, claims=[c15])
    assert r["verdict"] == "refuted" and r["ok"]
    # the seed claims that were missing, each measured by a finding or saying which study will answer it
    added = {c.id: c for c in CLAIMS if c.id in ("C000-41", "C000-42", "C000-43", "C000-44", "C000-45", "C002-16")}
    assert len(added) == 6
    for c in added.values():
        assert c.findings or ("issue" in c.note and c.verdict == "open"), c.id


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

"""proofs/runner.py: run_all runs the ledger's checks that the resolved claims cite, and a failing or
crashing check fails the run and breaks the claims resting on it."""

from __future__ import annotations

from proofs import BY_ID, CLAIMS, run_all, run_checks
from proofs.claims import Claim


def _claim(cid: str, check: str) -> Claim:
    return Claim(cid, "c", "001 README / x", "conditional", (f"check: {check}",))


def test_run_checks_runs_the_cited_checks_and_records_failures():
    ran = []

    def ok() -> str:
        ran.append("ok")
        return "it held"

    def fails() -> str:
        raise AssertionError("max logit 130 > tau = 100")

    def crashes() -> str:
        return 1 / 0

    def uncited() -> str:
        ran.append("uncited")
        return "never"

    claims = [_claim("X-1", "ok"), _claim("X-2", "fails"), _claim("X-3", "crashes"), _claim("X-4", "not supplied")]
    out = run_checks({"ok": ok, "fails": fails, "crashes": crashes, "uncited": uncited}, claims)
    assert ran == ["ok"] and set(out) == {"ok", "fails", "crashes"}
    assert out["ok"].passed and out["ok"].detail == "it held" and out["ok"].seconds >= 0
    assert not out["fails"].passed and out["fails"].detail.startswith("AssertionError: max logit 130 > tau = 100 (")
    assert not out["crashes"].passed and "ZeroDivisionError" in out["crashes"].detail


def test_a_failing_check_fails_the_run_and_breaks_its_claim():
    theorems = [BY_ID["T8-agm-different"]]  # quick; the check-backed claim C001-10 cites no theorem
    cited = {k for c in CLAIMS for k in c.checks()}
    assert cited == {"muonclip-qk-cap"}

    def broken() -> str:
        raise AssertionError("a head's max logit is 130 > tau = 100")

    res = run_all(0, theorems=theorems, cases_scale=0.05, checks={"muonclip-qk-cap": broken})
    led = {c["id"]: c for c in res.ledger}
    assert not res.ok and led["C001-10"]["verdict"] == "open" and not led["C001-10"]["ok"]
    assert "C001-10: evidence check: muonclip-qk-cap did not pass" in res.failures()
    (chk,) = res.as_dict()["checks"]
    assert (chk["name"], chk["passed"]) == ("muonclip-qk-cap", False) and "130 > tau" in chk["detail"]

    res = run_all(0, theorems=theorems, cases_scale=0.05, checks={"muonclip-qk-cap": lambda: "capped"})
    led = {c["id"]: c for c in res.ledger}
    assert res.ok and led["C001-10"]["verdict"] == "conditional" and led["C001-10"]["checks"][0]["detail"] == "capped"

    res = run_all(0, theorems=theorems, cases_scale=0.05)  # no checks supplied: open, but nothing broken
    led = {c["id"]: c for c in res.ledger}
    assert res.ok and res.checks == [] and led["C001-10"]["verdict"] == "open" and led["C001-10"]["ok"]

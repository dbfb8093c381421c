"""`hmpo verify` (rl/commands/verify.py): its JSON reports every theorem and backs every verdict, and a
deliberately wrong theorem ends FAILED with exit status 1."""

from __future__ import annotations

import json

import pytest

from proofs import BY_ID, CLAIMS

from tests.proofs.proofs_helpers import derive_false_identity, derive_key_step_as_remark, fake_theorem
from tests.proofs.proofs_helpers import verify_json as run_verify_json


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


def test_json_lists_the_verified_steps_of_every_theorem(verify_json):
    _, out = verify_json
    for t in out["theorems"]:
        verified = {s["key"] for s in t["steps"] if s["verified"]}
        assert t["key_steps"] and set(t["key_steps"]) <= verified, t["id"]
        assert all(s["kind"] == "note" for s in t["steps"] if not s["verified"]), t["id"]


# ----------------------------------------------------------------------------- a wrong theorem ends FAILED

@pytest.mark.parametrize("derive", [derive_false_identity, derive_key_step_as_remark])
@pytest.mark.parametrize("as_json", [False, True])
def test_a_wrong_theorem_ends_failed(derive, as_json, monkeypatch, capsys):
    import proofs
    from rl.cli import main

    monkeypatch.setattr(proofs, "THEOREMS", [*proofs.THEOREMS, fake_theorem(derive, tid="X-wrong")])
    code = main(["verify", "--only", "X-wrong", "--no-ledger", *(["--json"] if as_json else [])])
    out = capsys.readouterr().out
    assert code == 1
    if as_json:
        res = json.loads(out)
        (t,) = res["theorems"]
        assert (t["id"], t["status"], t["passed"], res["ok"]) == ("X-wrong", "failed", False, False)
        assert res["failures"] and res["failures"][0].startswith("X-wrong: derivation")
    else:
        row = next(ln for ln in out.splitlines() if "X-wrong" in ln and "FAILED" in ln)
        assert "FAIL" in row.rsplit("FAILED", 1)[1]
        assert "0/1 theorems passed" in out and "FAIL X-wrong: derivation" in out


def test_verify_runs_the_ledgers_checks_and_resolves_their_claims(verify_json):
    """C001-10 (MuonClip) rests on rl.ledger_checks' muonclip-qk-cap, which `hmpo verify` runs."""
    _, out = verify_json
    (chk,) = out["checks"]
    assert chk["name"] == "muonclip-qk-cap" and chk["passed"] and "<= tau" in chk["detail"]
    c = next(c for c in out["ledger"] if c["id"] == "C001-10")
    assert (c["verdict"], c["ok"], c["pending"]) == ("conditional", True, "")
    assert c["checks"] == [{"name": chk["name"], "passed": True, "detail": chk["detail"]}]


def test_verify_only_skips_the_checks(monkeypatch, capsys):
    from rl import ledger_checks
    from rl.cli import main

    def explode() -> str:
        raise AssertionError("ran")

    monkeypatch.setitem(ledger_checks.CHECKS, "muonclip-qk-cap", explode)
    code, out = run_verify_json("--only", "T8-agm", "--cases-scale", "0.05")
    assert code == 0 and out["checks"] == []
    c = next(c for c in out["ledger"] if c["id"] == "C001-10")
    assert c["verdict"] == "open" and c["ok"] and "muonclip-qk-cap" in c["pending"]
    assert main(["verify", "--only", "T8-agm", "--cases-scale", "0.05", "--no-ledger"]) == 0
    assert "check " not in capsys.readouterr().out

"""`hmpo verify` (rl/commands/verify.py): the JSON it prints reports every theorem and backs every verdict."""

from __future__ import annotations

import pytest

from proofs import BY_ID, CLAIMS

from tests.proofs.proofs_helpers import verify_json as run_verify_json


@pytest.fixture(scope="module")
def verify_json():
    return run_verify_json("--cases-scale", "0.1", "--seed", "1")


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

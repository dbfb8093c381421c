"""``hmpo report``: studies, their reports, the claims ledger fed by the typed findings, the index."""

from __future__ import annotations

from rl.cli import main

SYNTH = "rl.studies.synthetic:run"


def test_report_runs_reports_feeds_the_ledger_and_indexes(tmp_path, monkeypatch, capsys):
    # the real ledger and claims.md, without the minute of derivations and theory figures
    import proofs
    from proofs.report import claims_markdown

    real_run_all = proofs.run_all
    monkeypatch.setattr(proofs, "run_all", lambda studies=None, checks=None: real_run_all(theorems=[], studies=studies, checks=checks))
    monkeypatch.setattr(proofs, "write_reports",
                        lambda res, out: (tmp_path / "reports" / "claims.md").write_text(claims_markdown(res, out)))
    sd, rd = tmp_path / "studies", tmp_path / "reports"
    assert main(["report", "--out", str(rd), "--study-dir", str(sd), "--studies", "smoke", "--run-fn", SYNTH,
                 "--executor", "inline", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"reports written to {rd}" in out and "hmpo-sample-efficiency-vs-gspo:" in out
    assert "measured by the studies" in out
    assert (rd / "smoke" / "README.md").exists() and (rd / "README.md").exists()
    index = (rd / "README.md").read_text()
    assert "[smoke](smoke/README.md)" in index and "claims.md" in index
    # the ledger read the study's findings.json: C000-16 is measured, with the study's figure
    row = next(ln for ln in (rd / "claims.md").read_text().splitlines() if ln.startswith("| C000-16 "))
    assert "**measured**" in row and "(smoke)" in row and "smoke/figures/differences.png" in row
    # hmpo report runs the ledger's checks as hmpo verify does: the MuonClip claim rests on one
    row = next(ln for ln in (rd / "claims.md").read_text().splitlines() if ln.startswith("| C001-10 "))
    assert "**conditional**" in row, row
    # --no-run reports what exists and starts nothing: with no study there, it says so
    assert main(["report", "--out", str(tmp_path / "r2"), "--study-dir", str(tmp_path / "none"), "--studies", "smoke",
                 "--no-run", "--skip-theory"]) == 1
    captured = capsys.readouterr()
    assert "holds no study" in captured.err and "ran," not in captured.out


def test_report_answers_a_bad_study_with_one_line_and_exit_2(tmp_path, capsys):
    assert main(["report", "--out", str(tmp_path), "--studies", "no-such-study", "--skip-theory"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "neither a preset" in err[0]

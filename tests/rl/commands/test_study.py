"""``hmpo study``: list, run, the report in DIR/report by default, --no-report, stale results named."""

from __future__ import annotations

import json

from rl.cli import main

SYNTH = "rl.studies.synthetic:run"


def test_study_lists_runs_and_writes_its_report_into_the_study_dir(tmp_path, capsys):
    out = tmp_path / "smoke"
    assert main(["study", "smoke", "--out", str(out), "--list"]) == 0
    assert "15 runs planned" in capsys.readouterr().out
    assert main(["study", "smoke", "--out", str(out), "--run-fn", SYNTH, "--executor", "inline", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert f"report: {out / 'report' / 'README.md'}" in text
    assert (out / "report" / "findings.json").exists() and (out / "runs").is_dir()
    # a result made by another code version is listed as stale and rerun, by name
    victim = sorted((out / "runs").glob("*.json"))[0]
    rec = json.loads(victim.read_text())
    rec["code_version"] = "0" * 16
    victim.write_text(json.dumps(rec))
    assert main(["study", "smoke", "--out", str(out), "--list", "--run-fn", SYNTH]) == 0
    assert f"stale  {victim.stem}" in capsys.readouterr().out
    assert main(["study", "smoke", "--out", str(out), "--run-fn", SYNTH, "--executor", "inline", "--no-progress",
                 "--no-report"]) == 0
    text = capsys.readouterr().out
    assert "reran 1 stale results" in text and victim.stem in text and "report:" not in text


def test_study_answers_a_bad_argument_with_one_line_and_exit_2(capsys):
    assert main(["study", "nonexistent-preset"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "neither a preset" in err[0]

"""Study specs, the runner (atomic results, resume, failures) and the report, end to end."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from rl.studies import load_spec, parse_spec, run_study, write_index, write_study_report
from rl.studies.presets import PRESETS
from rl.studies.runner import RESULT_FORMAT, load_results, read_metrics_jsonl
from rl.studies.spec import MIN_SEEDS_FOR_COMPARISON, clip_settings, config_hash, off_policy_settings
from rl.studies.stats import final_value, metric_series

SYNTH = "rl.studies.synthetic:run"
REPO = Path(__file__).resolve().parents[2]

EXAMPLE_TOML = """
[study]
name = "example"
description = "off-policy comparison"
baseline = "gspo"
threshold = 0.5
metric = "exact_reward"

[base]
env = "seq-bandit"
steps = 20

[[grid]]
variant = ["p=1", "p=0", "hmpo", "grpo-token"]
clip = ["0.2", "gspo"]
off_policy = ["1x1", "4x2"]
seeds = 5

[[grid]]
variant = ["p=0", "p=-1"]
seq_len = [2, 8]
seeds = [10, 11, 12, 13, 14]
"""


# ----------------------------------------------------------------------------- specs

def test_toml_spec_expands_to_the_grid(tmp_path):
    path = tmp_path / "example.toml"
    path.write_text(EXAMPLE_TOML)
    spec = load_spec(path)
    runs = spec.runs()
    assert len(runs) == 4 * 2 * 2 * 5 + 2 * 2 * 5
    assert len({r.run_id for r in runs}) == len(runs) == len({r.config_hash for r in runs})
    assert spec.baseline == "p=0"
    hm = next(r for r in runs if r.variant == "p=-1" and r.cell.get("seq_len") == "8")
    assert hm.config["p"] == -1.0 and hm.config["level"] == "sequence" and hm.config["seq_len"] == 8
    assert hm.seed in range(10, 15)
    g = next(r for r in runs if r.variant == "p=0" and r.cell.get("clip") == "gspo")
    assert (g.config["eps_low"], g.config["eps_high"]) == (3e-4, 4e-4)
    t = next(r for r in runs if r.variant == "grpo-token" and r.cell.get("off_policy") == "4x2")
    assert t.config["level"] == "token" and (t.config["epochs"], t.config["minibatches"]) == (4, 2)
    # hashes are stable under key order and change with any value
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 1.5})


def test_spec_errors_name_the_problem():
    base = {"study": {"name": "x"}, "grid": [{"variant": ["p=0", "p=-1"], "seeds": 5}]}
    parse_spec(base)
    with pytest.raises(ValueError, match="unknown variant"):
        parse_spec({**base, "grid": [{"variant": ["p=0", "hamonic"], "seeds": 5}]})
    with pytest.raises(ValueError, match="fewer than 5 seeds"):
        parse_spec({**base, "grid": [{"variant": ["p=0", "p=-1"], "seeds": 3}]})
    parse_spec({"study": {"name": "x", "compare": False}, "grid": [{"variant": ["p=0", "p=-1"], "seeds": 3}]})
    with pytest.raises(ValueError, match="lacks the baseline"):
        parse_spec({**base, "grid": [{"variant": ["p=1", "p=-1"], "seeds": 5}]})
    with pytest.raises(ValueError, match="unknown top-level"):
        parse_spec({**base, "grids": []})
    with pytest.raises(ValueError, match="factor"):
        parse_spec({**base, "base": {"variant": "p=0"}})
    with pytest.raises(ValueError, match="name"):
        parse_spec({"study": {"name": "a b"}})
    with pytest.raises(ValueError, match="clip"):
        clip_settings("wide")
    with pytest.raises(ValueError, match="off_policy"):
        off_policy_settings("4by2")
    with pytest.raises(ValueError, match="neither a preset"):
        load_spec("no-such-preset-or-file")


def test_presets_parse_and_compare_with_enough_seeds():
    for name in PRESETS:
        spec = load_spec(name)          # check() enforces >= 5 seeds wherever variants are compared
        assert spec.name == name
        cells: dict[str, dict[str, int]] = {}
        for r in spec.runs():
            cells.setdefault(r.cell_label, {}).setdefault(r.variant, 0)
            cells[r.cell_label][r.variant] += 1
        compared = [c for c in cells.values() if len(c) > 1]
        assert compared, name
        assert all(n >= MIN_SEEDS_FOR_COMPARISON for c in compared for n in c.values()), name
    assert len(load_spec("smoke").runs()) == 15


# ----------------------------------------------------------------------------- runner

def _spec(sleep: float = 0.0, fail_seed: int | None = None, seeds: int = 5):
    grid = {"variant": ["p=1", "p=0", "p=-1"], "seeds": seeds, "off_policy": "2x2"}
    base = {"steps": 15, "synthetic_sleep": sleep, "synthetic_effect": 0.5}
    spec = {"study": {"name": "synth", "metric": "exact_reward", "run_fn": SYNTH}, "base": base, "grid": [grid]}
    if fail_seed is not None:
        spec["grid"] = [grid, {**grid, "seeds": [fail_seed], "synthetic_fail": True, "variant": ["p=0"]}]
    return parse_spec(spec)


def test_results_are_atomic_complete_and_resumable_after_interrupt(tmp_path):
    spec = _spec()
    seen = []

    def stop_after_two(rec):
        seen.append(rec["run_id"])
        if len(seen) == 2:
            raise KeyboardInterrupt

    out = run_study(spec, tmp_path, executor="inline", progress=False, on_result=stop_after_two)
    assert out.interrupted and out.ran == 2
    first = {p.name: p.read_bytes() for p in (tmp_path / "runs").glob("*.json")}
    assert len(first) == 2
    # a process killed inside the atomic write leaves a temp file and possibly a torn file
    (tmp_path / "runs" / ".p0-s9-junk.json.abc.tmp").write_text("{")
    torn = next(r for r in spec.runs() if r.run_id + ".json" not in first)
    (tmp_path / "runs" / f"{torn.run_id}.json").write_text('{"format": "hmpo-run/1", "run_')
    out2 = run_study(spec, tmp_path, executor="inline", progress=False)
    assert not out2.interrupted and out2.skipped == 2 and out2.ran == 13 and out2.failed == 0
    files = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert files == sorted(f"{r.run_id}.json" for r in spec.runs())       # no temp files, no extras
    for name, data in first.items():                                      # finished runs untouched
        assert (tmp_path / "runs" / name).read_bytes() == data
    recs = load_results(tmp_path)
    assert all(r["format"] == RESULT_FORMAT and r["status"] == "ok" and r["n_steps"] == 15 for r in recs.values())
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest["invocations"]) == 2
    assert manifest["status"]["finished"] == manifest["status"]["planned"] == 15
    assert {k: v["config_hash"] for k, v in manifest["runs"].items()} == {r.run_id: r.config_hash for r in spec.runs()}
    prov = manifest["invocations"][-1]
    assert prov["packages"]["torch"] and prov["packages"]["numpy"] and "commit" in prov["git"]
    # a third call has nothing to do
    out3 = run_study(spec, tmp_path, executor="inline", progress=False)
    assert out3.ran == 0 and out3.skipped == 15


def test_failed_runs_are_recorded_reported_and_retried(tmp_path):
    spec = _spec(fail_seed=7)
    out = run_study(spec, tmp_path, executor="inline", progress=False)
    assert out.failed == 1 and out.ran == 16
    bad = [r for r in load_results(tmp_path).values() if r["status"] == "failed"]
    assert len(bad) == 1 and "synthetic failure" in bad[0]["error"]
    info = write_study_report(tmp_path, tmp_path / "report")
    assert info["n_failed"] == 1 and info["n_runs"] == 16
    assert "1 failed" in info["readme"].read_text()
    again = run_study(spec, tmp_path, executor="inline", progress=False)   # failed runs are retried
    assert again.ran == 1 and again.skipped == 15


def test_killed_study_process_resumes_without_loss_or_duplicates(tmp_path):
    # a real `hmpo study` process on the local process pool, killed with SIGKILL mid-study
    spec_file = tmp_path / "slow.toml"
    spec_file.write_text(textwrap.dedent(f"""
        [study]
        name = "slow"
        metric = "exact_reward"
        run_fn = "{SYNTH}"
        compare = false
        [base]
        steps = 10
        synthetic_sleep = 0.3
        [[grid]]
        variant = ["p=0", "p=-1"]
        seeds = 4
    """))
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "rl.cli", "study", str(spec_file), "--out", str(out), "--workers", "1",
           "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list((out / "runs").glob("*.json"))) < 2:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)     # the study and its own worker processes only
        proc.wait()
    before = {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")}
    assert 2 <= len(before) < 8, len(before)
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    recs = load_results(out)
    assert sorted(recs) == sorted(r.run_id for r in load_spec(spec_file).runs())
    for name, data in before.items():
        assert (out / "runs" / name).read_bytes() == data
    assert not [p for p in (out / "runs").iterdir() if p.name.startswith(".")]
    # every run's metrics are complete and each step appears once
    for r in recs.values():
        assert r["metrics"]["step"] == list(range(10))


def test_metrics_jsonl_reader_drops_repeated_steps_and_torn_lines(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1, "r": 0.1}\n{"step": 2, "r": 0.2}\n{"step": 2, "r": 0.25}\n{"step": 3, "r"')
    rows = read_metrics_jsonl(p)
    assert [(r["step"], r["r"]) for r in rows] == [(1, 0.1), (2, 0.25)]


# ----------------------------------------------------------------------------- end to end

def _png_ok(path: Path) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


@pytest.mark.slow
def test_smoke_preset_end_to_end_with_the_trainer(tmp_path):
    pytest.importorskip("rl.trainer")
    spec = load_spec("smoke")
    t0 = time.perf_counter()
    # in this process (the spawn pool is exercised by the kill test, Ray by its own test)
    out = run_study(spec, tmp_path / "study", executor="inline", progress=False)
    print(f"smoke preset: {time.perf_counter() - t0:.1f} s for {out.ran} runs")
    assert out.ok and out.ran == 15, out
    write_study_report(tmp_path / "study", tmp_path / "reports" / "smoke")
    rep = tmp_path / "reports" / "smoke"
    for f in ("README.md", "summary.csv", "runs.csv", "comparisons.csv", "findings.json"):
        assert (rep / f).stat().st_size > 0, f
    for name in ("reward_curves", "final_vs_p", "final_by_variant", "clip_fractions", "ratio_distribution", "kl"):
        assert _png_ok(rep / "figures" / f"{name}.png"), name
    readme = (rep / "README.md").read_text()
    assert readme.index("## Findings") < readme.index("## Figures") < readme.index("## Summary table")
    # the CSVs agree with the per-run results files
    recs = {r["run_id"]: r for r in load_results(tmp_path / "study").values()}
    runs = list(csv.DictReader(open(rep / "runs.csv")))
    assert len(runs) == 15
    for row in runs:
        series = metric_series(recs[row["run_id"]], "exact_reward")
        assert float(row["final"]) == pytest.approx(final_value(series), rel=1e-12)
    summary = list(csv.DictReader(open(rep / "summary.csv")))
    assert sorted(s["variant"] for s in summary) == ["p=-1", "p=0", "p=1"]
    for s in summary:
        finals = [float(r["final"]) for r in runs if r["variant"] == s["variant"]]
        assert int(s["n"]) == 5
        assert float(s["final_mean"]) == pytest.approx(np.mean(finals), rel=1e-12)
        assert float(s["final_lo"]) <= float(s["final_mean"]) <= float(s["final_hi"])
    findings = json.loads((rep / "findings.json").read_text())
    assert findings["n_runs"] == 15 and findings["baseline"] == "p=0"
    for c in findings["claims"]:
        assert c["verdict"] in ("supported", "refuted", "mixed", "not separated", "identical", "measured")
        if c.get("figure"):
            assert (rep / c["figure"]).exists()
    # same seeds, same numbers: a rerun of one run in this process reproduces its metrics
    from rl.studies.runner import execute_task

    r0 = spec.runs()[0]
    again = execute_task({"run_id": r0.run_id, "config": r0.config, "variant": r0.variant, "cell": r0.cell,
                          "seed": r0.seed, "config_hash": r0.config_hash, "run_fn": "rl.studies.runner:train_run",
                          "work_dir": None})
    assert again["metrics"]["exact_reward"] == recs[r0.run_id]["metrics"]["exact_reward"]
    index = write_index(tmp_path / "reports")
    text = index.read_text()
    assert "[smoke](smoke/README.md)" in text and "theory.md" in text and "claims.md" in text


def test_cli_study_list_and_report_command(tmp_path, capsys):
    from rl.cli import main

    sd, rd = tmp_path / "studies", tmp_path / "reports"
    assert main(["study", "smoke", "--out", str(sd / "smoke"), "--list"]) == 0
    assert "15 runs planned" in capsys.readouterr().out
    code = main(["report", "--out", str(rd), "--study-dir", str(sd), "--studies", "smoke", "--run-fn", SYNTH,
                 "--executor", "inline", "--skip-theory", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"reports written to {rd}" in out
    assert (rd / "smoke" / "README.md").exists() and (rd / "README.md").exists()
    assert "[smoke](smoke/README.md)" in (rd / "README.md").read_text()
    assert main(["study", "nonexistent-preset"]) == 2


def test_the_documented_spec_example_parses():
    import tomllib

    import rl.studies.spec as sp

    doc = sp.__doc__
    block = doc[doc.index("    [study]"):doc.index("Factors with a special meaning")]
    spec = parse_spec(tomllib.loads("\n".join(line[4:] for line in block.splitlines())))
    assert spec.name == "offpolicy" and len(spec.runs()) == 4 * 2 * 2 * 5 + 2 * 2 * 5


def _cmp(cond: str, metric: str, verdict: str, p_adj: float, g: float | None = None) -> dict:
    return {"condition": cond, "metric": metric, "verdict": verdict, "test": "permutation (exact)",
            "p_value": p_adj / 2, "p_adjusted": p_adj, "variant_value": 0.8, "baseline_value": 0.85,
            "hedges_g": g, "cliffs_delta": None, "n": [8, 8]}


def test_findings_give_the_claims_ledger_its_measured_verdicts(tmp_path):
    """findings.json contents (made up here) -> ledger_evidence -> the ledger: verdict, wording, p-values, figure."""
    from proofs import resolve
    from proofs.claims import CLAIMS, MEASURED_BY
    from proofs.report import claims_markdown
    from proofs.runner import VerifyResults
    from rl.studies.report import LEDGER_STUDIES, ledger_evidence

    from rl.studies.estimator import finding_ids

    # every finding a ledger claim waits for is one that ledger_evidence forwards under that claim's study name
    # (the exact estimator study forwards its own findings under "estimator": rl.studies.estimator.ledger_evidence)
    forwarded = {**LEDGER_STUDIES, "estimator": tuple(i for ids in finding_ids().values() for i in ids)}
    for c in CLAIMS:
        for fid in MEASURED_BY.get(c.id, ()):
            assert any(fid in forwarded.get(s, ()) for s in c.studies()), (c.id, fid)

    a, b = "env=x, lag=0", "env=x, lag=2"
    findings = {"toy": {"claims": [
        {"id": "hmpo-sample-efficiency-vs-gspo", "verdict": "refuted", "baseline": "p=0",
         "figure": "figures/auc_by_variant.png",
         "conditions": [_cmp(a, "auc", "not separated", 0.4, -0.3), _cmp(a, "auc", "not separated", 0.5, -0.2),
                        _cmp(b, "auc", "worse", 0.0021, -2.5)]},
        {"id": "hmpo-more-stable-than-gspo", "verdict": "not separated", "baseline": "p=0",
         "figure": "figures/final_by_variant.png", "conditions": [_cmp(a, "auc", "not separated", 0.3, 0.1)]},
        {"id": "policy-lag-effect", "verdict": "supported", "factor": "policy_lag", "interaction_test": "permutation (exact)",
         "p_value": 0.0004, "figure": "figures/reward_curves.png", "held_fixed": "env=x",
         "levels": {"0": {"verdict": "not separated", "auc_diff_mean": -0.001},
                    "2": {"verdict": "refuted", "auc_diff_mean": -0.04}}},
        {"id": "sequence-length-effect", "verdict": "not measured"},
    ]}}
    ev = ledger_evidence(findings, tmp_path)
    assert "sequence-length" not in ev
    (se,) = ev["sample-efficiency"]["findings"]
    assert se["p_values"] == [0.0021, 0.00105] and "Hedges' g -2.5" in se["effect"] and "lag=2" in se["summary"]
    assert "1 of 3 comparisons with p=0 separated (0 better, 1 worse)" in se["summary"]
    lag = ev["off-policy-degree"]["findings"][0]
    assert lag["p_values"] == [0.0004] and "2: -0.04 (p=-1 worse)" in lag["summary"]

    led = {c["id"]: c for c in resolve([], ev, claims=[c for c in CLAIMS if not c.theorem_ids()])}
    assert led["C000-16"]["verdict"] == "measured" and led["C000-16"]["direction"] == "refuted (toy)"
    assert led["C000-15"]["verdict"] == "measured" and led["C000-15"]["direction"] == "not separated (toy)"
    assert led["C000-04"]["verdict"] == "open"      # its findings (p=1, token-level GRPO) are not in this report
    md = claims_markdown(VerifyResults([], list(led.values()), 0, 0.0), tmp_path)
    row = next(ln for ln in md.splitlines() if ln.startswith("| C000-16 "))
    assert "**measured**: refuted (toy)" in row and "[figure](toy/figures/auc_by_variant.png)" in row
    assert "Holm p = 0.0021" in row

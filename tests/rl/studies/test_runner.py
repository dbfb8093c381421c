"""The runner: atomic results files, resume after an interrupt or a kill, failed runs retried,
results of another code version rerun and named; the local, inline and Ray executors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rl.studies import load_spec, parse_spec, run_study, write_study_report
from rl.studies.runner import RESULT_FORMAT, code_version, load_results, read_metrics_jsonl, stale_results

SYNTH = "rl.studies.synthetic:run"
REPO = Path(__file__).resolve().parents[3]


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
    assert info.n_failed == 1 and info.n_runs == 16
    assert "1 failed" in info.readme.read_text()
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
           "--no-progress", "--no-report"]
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
        assert r["metrics"]["step"] == list(range(1, 11))


def test_metrics_jsonl_reader_drops_repeated_steps_and_torn_lines(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1, "r": 0.1}\n{"step": 2, "r": 0.2}\n{"step": 2, "r": 0.25}\n{"step": 3, "r"')
    rows = read_metrics_jsonl(p)
    assert [(r["step"], r["r"]) for r in rows] == [(1, 0.1), (2, 0.25)]




def test_code_version_hashes_the_source_a_run_depends_on(tmp_path, monkeypatch):
    v = code_version(SYNTH)
    assert v == code_version(SYNTH) and len(v) == 16
    trainer = code_version("rl.studies.training:run")
    assert trainer != v
    # the trainer's version covers the losses and the trainer, not the statistics or the reports
    import rl.studies.training as training

    files = {p for p in training.CODE_PATHS}
    assert "rl/studies/training.py" in files and "rl/studies" in training.CODE_EXCLUDE
    # a module that names a missing path is refused
    mod = type(sys)("fake_run_fn")
    mod.__file__ = str(tmp_path / "fake_run_fn.py")
    (tmp_path / "fake_run_fn.py").write_text("def run(c, w): return {}\n")
    mod.run = lambda c, w: {}
    mod.CODE_PATHS = ("no/such/dir",)
    monkeypatch.setitem(sys.modules, "fake_run_fn", mod)
    with pytest.raises(ValueError, match="does not exist"):
        code_version("fake_run_fn:run")
    # edits of the run function's own file change its version
    del mod.CODE_PATHS
    before = code_version("fake_run_fn:run")
    (tmp_path / "fake_run_fn.py").write_text("def run(c, w): return {'metrics': []}\n")
    assert code_version("fake_run_fn:run") != before


def test_results_of_another_code_version_are_rerun_and_named(tmp_path):
    spec = _spec()
    run_study(spec, tmp_path, executor="inline", progress=False)
    # pretend two results were made by an older code: they are stale, the rest is reused
    victims = sorted(load_results(tmp_path))[:2]
    for rid in victims:
        path = tmp_path / "runs" / f"{rid}.json"
        rec = json.loads(path.read_text())
        rec["code_version"] = "0000000000000000"
        path.write_text(json.dumps(rec))
    assert stale_results(tmp_path, spec, code_version(SYNTH)) == [r.run_id for r in spec.runs() if r.run_id in victims]
    out = run_study(spec, tmp_path, executor="inline", progress=False)
    assert out.ran == 2 and out.skipped == 13 and sorted(out.stale) == victims
    assert out.code_version == code_version(SYNTH)
    assert all(r["code_version"] == out.code_version for r in load_results(tmp_path).values())
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["code_version"] == out.code_version


@pytest.mark.slow
def test_ray_executor_runs_resumes_and_matches_inline(tmp_path):
    ray = pytest.importorskip("ray")  # the optional extra hmpo[ray]
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        spec = parse_spec({
            "study": {"name": "ray-check", "metric": "exact_reward", "compare": False},
            "base": {"env": "seq-bandit", "vocab": 4, "seq_len": 3, "steps": 4, "prompts_per_step": 2,
                     "group_size": 4},
            "grid": [{"variant": ["p=0", "p=-1"], "off_policy": "2x2", "seeds": 2}],
        })
        # part of the study on Ray, the rest on resume: every run exactly once
        first = run_study(spec, tmp_path / "ray", executor="ray", max_runs=2, progress=False)
        assert first.ran == 2 and first.failed == 0 and ray.is_initialized()  # our Ray instance is left running
        second = run_study(spec, tmp_path / "ray", executor="ray", progress=False)
        assert second.skipped == 2 and second.ran == 2 and second.failed == 0
        on_ray = load_results(tmp_path / "ray")
        assert sorted(on_ray) == sorted(r.run_id for r in spec.runs())
        # the trainer in a Ray worker gives the same numbers as in this process (same seed)
        run_study(spec, tmp_path / "inline", executor="inline", progress=False)
        inline = load_results(tmp_path / "inline")
        for rid, rec in on_ray.items():
            assert rec["status"] == "ok", rec.get("error")
            assert rec["metrics"]["exact_reward"] == inline[rid]["metrics"]["exact_reward"]
            assert rec["metrics"]["loss"] == inline[rid]["metrics"]["loss"]
    finally:
        ray.shutdown()

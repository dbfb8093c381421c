"""The trainer as a study run function: config mapping, and the smoke preset end to end."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from rl.studies import load_spec, run_study, write_index, write_study_report
from rl.studies.endpoints import endpoint_value
from rl.studies.runner import execute_task, load_results
from rl.studies.training import to_train_config


def _png_ok(path: Path) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_to_train_config_places_every_setting_or_names_it():
    cfg = to_train_config({"env": "seq-bandit", "seq_len": 3, "vocab": 4, "reward_noise": 0.5, "clip_c": 3.0,
                           "mean": "power", "learnable_p": True, "p": 0.0, "env.partial_credit": True})
    assert cfg.env_kwargs == {"length": 3, "vocab": 4, "noise": "gaussian", "noise_scale": 0.5, "partial_credit": True}
    assert cfg.loss_options == {"clip_c": 3.0} and cfg.learnable_p is True
    with pytest.raises(ValueError, match=r"no place in rl.trainer.TrainConfig: \['learn_p', 'speed'\]"):
        to_train_config({"learn_p": True, "speed": 2})


@pytest.mark.slow
def test_smoke_preset_end_to_end_with_the_trainer(tmp_path):
    spec = load_spec("smoke")
    t0 = time.perf_counter()
    # in this process (the spawn pool is exercised by the kill test, Ray by its own test)
    out = run_study(spec, tmp_path / "study", executor="inline", progress=False)
    print(f"smoke preset: {time.perf_counter() - t0:.1f} s for {out.ran} runs")
    assert out.ok and out.ran == 15, out
    info = write_study_report(tmp_path / "study", tmp_path / "reports" / "smoke", spec=spec)
    rep = tmp_path / "reports" / "smoke"
    for f in ("README.md", "summary.csv", "runs.csv", "comparisons.csv", "findings.json"):
        assert (rep / f).stat().st_size > 0, f
    for name in ("curves", "differences", "sweep", "clip_fractions", "kl", "ess"):
        assert _png_ok(rep / "figures" / f"{name}.png"), name
    readme = (rep / "README.md").read_text()
    assert readme.index("## Findings") < readme.index("## Figures") < readme.index("## Summary table")
    # the CSVs agree with the per-run results files
    recs = {r["run_id"]: r for r in load_results(tmp_path / "study").values()}
    runs = list(csv.DictReader(open(rep / "runs.csv")))
    assert len(runs) == 15
    auc = spec.plan.endpoints["auc"]
    for row in runs:
        assert float(row["auc"]) == pytest.approx(endpoint_value(auc, recs[row["run_id"]]).value, rel=1e-12)
    summary = list(csv.DictReader(open(rep / "summary.csv")))
    assert sorted(s["variant"] for s in summary) == ["p=-1", "p=0", "p=1"]
    for s in summary:
        aucs = [float(r["auc"]) for r in runs if r["variant"] == s["variant"]]
        assert int(s["n"]) == 5
        assert float(s["auc_mean"]) == pytest.approx(sum(aucs) / 5, rel=1e-12)
        assert float(s["auc_lo"]) <= float(s["auc_mean"]) <= float(s["auc_hi"])
    findings = json.loads((rep / "findings.json").read_text())
    assert findings["n_runs"] == 15 and findings["baseline"] == "p=0"
    assert [f.id for f in info.findings] == ["hmpo-sample-efficiency-vs-gspo"]
    for f in findings["findings"]:
        if f.get("figure"):
            assert (rep / f["figure"]).exists()
    # same seeds, same numbers: a rerun of one run in this process reproduces its metrics
    r0 = spec.runs()[0]
    again = execute_task({"run_id": r0.run_id, "config": r0.config, "variant": r0.variant, "cell": r0.cell,
                          "seed": r0.seed, "config_hash": r0.config_hash, "run_fn": "rl.studies.training:run",
                          "work_dir": None})
    assert again["metrics"]["exact_reward"] == recs[r0.run_id]["metrics"]["exact_reward"]
    index = write_index(tmp_path / "reports")
    text = index.read_text()
    assert "[smoke](smoke/README.md)" in text and "theory.md" in text and "claims.md" in text


def test_prepare_builds_each_distinct_checkpoint_once_in_parallel(tmp_path):
    """Seeds 0..3 over 2 warm starts need 2 checkpoints (seed mod 2): prepare builds exactly those,
    in spawned processes, into the cache; the RL seeds sharing a checkpoint share its key; the
    checkpoint is the same one an in-process build makes (equal weights, bit for bit)."""
    import torch

    from rl.studies.training import _checkpoint_key, prepare

    env = {"env": "tiny-lm-scratchpad", "env.quick": True, "env.warm_starts": 2, "env.progress": False,
           "env.cache_dir": str(tmp_path / "parallel")}
    configs = [{**env, "seed": s} for s in range(4)]
    keys = [_checkpoint_key(to_train_config(c)) for c in configs]
    assert keys[0] == keys[2] and keys[1] == keys[3] and keys[0] != keys[1]
    prepare(configs, workers=2)
    built = sorted((tmp_path / "parallel" / "tiny_lm_sft").glob("*.pt"))
    assert len(built) == 2 and not any(p.name.endswith(".partial.pt") for p in built)
    from rl.envs import make_env

    here = make_env("tiny-lm-scratchpad", seed=1, quick=True, warm_starts=2, progress=False,
                    cache_dir=str(tmp_path / "inline")).make_policy()
    there = make_env("tiny-lm-scratchpad", seed=1, quick=True, warm_starts=2, progress=False,
                     cache_dir=str(tmp_path / "parallel")).make_policy()
    assert all(torch.equal(a, b) for a, b in zip(here.state_dict().values(), there.state_dict().values()))


def test_runner_passes_its_worker_count_to_a_prepare_hook_that_takes_one(monkeypatch):
    import types

    import rl.studies.runner as runner

    seen = []
    mod = types.SimpleNamespace(prepare=lambda configs, workers=1: seen.append(("w", workers)))
    old = types.SimpleNamespace(prepare=lambda configs: seen.append(("old", len(configs))))
    monkeypatch.setattr(runner.importlib, "import_module", lambda name: {"new": mod, "old": old}[name])
    runner._prepare("new:run", [{}], "local", 3)
    runner._prepare("new:run", [{}], "inline", 3)   # the inline executor works in this process alone
    runner._prepare("old:run", [{}, {}], "local", 3)
    runner._prepare("new:run", [{}], "ray", 3)      # on a cluster every node prepares for itself
    assert seen == [("w", 3), ("w", 1), ("old", 2)]

"""``hmpo train`` through the dispatcher rl.cli.main."""

from __future__ import annotations

import json

import pytest
import torch

from rl.cli import main


def test_default_seq_bandit_run_writes_metrics_and_summary(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--env", "seq-bandit", "--out", str(out), "--no-progress"]) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 100
    recs = [json.loads(line) for line in lines]
    assert [r["step"] for r in recs] == list(range(1, 101))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "completed" and summary["steps_done"] == 100
    assert (out / "checkpoint.pt").exists() and (out / "policy.pt").exists() and (out / "config.json").exists()
    text = capsys.readouterr().out
    assert "exact expected reward" in text and "steps/s" in text


def test_options_reach_the_config_and_resume_extends(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--env", "contextual-bandit", "--policy", "autoregressive", "--policy-opt", "hidden=8",
            "--env-opt", "vocab=4", "--env-opt", "length=3", "--env-opt", "noise=flip", "--env-opt", "noise_scale=0.1",
            "--level", "sequence", "--p", "-1", "--epochs", "2", "--minibatches", "2", "--policy-lag", "1",
            "--group-size", "4", "--prompts", "4", "--optimizer", "muon", "--lr", "0.01", "--eps-high", "0.28",
            "--loss-opt", "kl_coef=0.01", "--seed", "3", "--out", str(out), "--no-progress", "--json"]
    assert main(args + ["--steps", "3"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["env_kwargs"] == {"vocab": 4, "length": 3, "noise": "flip", "noise_scale": 0.1}
    assert cfg["policy_kwargs"] == {"hidden": 8, "kind": "autoregressive"}
    assert (cfg["p"], cfg["epochs"], cfg["minibatches"], cfg["policy_lag"], cfg["optimizer"]) == (-1.0, 2, 2, 1, "muon")
    assert cfg["loss_options"] == {"kl_coef": 0.01} and cfg["eps_high"] == 0.28
    capsys.readouterr()
    assert main(args + ["--steps", "5", "--resume"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps_done"] == 5
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 5


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["train", "--env", "seq-bandit", "--optimizer", "muonclip", "--steps", "2", "--no-progress"]) == 2
    assert "q_proj" in capsys.readouterr().err
    assert main(["train", "--env", "seq-bandit", "--env-opt", "vocab=1", "--steps", "2", "--no-progress"]) == 2
    assert "vocab" in capsys.readouterr().err
    assert main(["train", "--resume", "--steps", "2"]) == 2
    with pytest.raises(SystemExit):
        main(["train", "--env", "go"])


def test_learnable_p_flags_train_p_and_log_it(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--env", "seq-bandit", "--env-opt", "vocab=4", "--env-opt", "length=3", "--policy", "autoregressive",
            "--epochs", "2", "--minibatches", "2", "--learnable-p", "--p", "-1", "--p-range", "-1.5", "1.5",
            "--p-lr", "0.05", "--kl-every", "0", "--steps", "4", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["learnable_p"] is True and cfg["p_range"] == [-1.5, 1.5] and cfg["p_lr"] == 0.05
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(-1.5 < r["p"] < 1.5 for r in recs) and recs[-1]["p"] != -1.0
    assert all(r["kl_old_new"] is None for r in recs)
    assert "learnable p" in capsys.readouterr().out
    assert main(args[:-3] + ["--p", "2", "--no-progress"]) == 2
    assert "p_range" in capsys.readouterr().err


def test_issue13_flags_reach_the_config(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--env", "seq-bandit", "--optimizer", "sgd", "--sgd-momentum", "0.9", "--lr", "0.5",
            "--p-schedule", "linear", "2", "-1", "--sampler-dtype", "bfloat16", "--no-recompute-old-logp",
            "--old-logp-noise", "0.3", "--epochs", "2", "--steps", "3", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["optimizer"], cfg["sgd_momentum"], cfg["p_schedule"]) == ("sgd", 0.9, ["linear", 2.0, -1.0])
    assert (cfg["sampler_dtype"], cfg["recompute_old_logp"], cfg["old_logp_noise"]) == ("bfloat16", False, 0.3)
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["p"] for r in recs] == [2.0, 0.5, -1.0] and all(r["log_ratio_spread"] > 0 for r in recs)
    assert "scheduled p" in capsys.readouterr().out
    assert main(["train", "--p-schedule", "linear", "two", "-1", "--steps", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "p-schedule" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--p-schedule", "cosine", "2", "-1", "--steps", "2", "--no-progress"]) == 2
    assert "p_schedule" in capsys.readouterr().err

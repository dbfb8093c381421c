"""The Ray executor against a local Ray instance (Ray is an optional extra: hmpo[ray])."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")  # the optional-extra guard

from rl.studies import parse_spec, run_study  # noqa: E402
from rl.studies.runner import load_results  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_executor_runs_resumes_and_matches_inline(local_ray, tmp_path):
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

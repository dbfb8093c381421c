"""The redesigned bandit study (issue 13): its design holds what its spec says (paired seeds,
equal optimizer updates across reuse levels, the calibrated clip per p, a random target and
initial policy per seed shared by the variants of that seed), and its verdicts do not hinge on
the last bits of the arithmetic."""

from __future__ import annotations

import math

import pytest
import torch

from rl.studies import load_spec
from rl.studies.presets import (BANDIT_PILOT, BANDIT_PRIMARY_SEEDS, BANDIT_REWARDS, DEFAULT_STUDIES, PRESETS,
                                REUSE_STEP_FACTOR)
from rl.studies.spec import CALIBRATED_CLIP, clip_settings, parse_spec
from rl.studies.training import to_train_config


@pytest.fixture(scope="module")
def spec():
    return load_spec("bandit")


def _cells(spec):
    cells: dict[str, dict] = {}
    for r in spec.runs():
        c = cells.setdefault(r.cell_label, {"cell": r.cell, "variants": {}, "configs": []})
        c["variants"].setdefault(r.variant, set()).add(r.seed)
        c["configs"].append(r)
    return cells


def test_the_preset_parses_and_stays_a_default_study(spec):
    assert "bandit" in DEFAULT_STUDIES and spec.metric == "exact_reward"
    assert parse_spec(spec.to_dict()).runs() == spec.runs()          # round trip through the TOML shape
    assert "before the first real run" in spec.plan_note
    reg = spec.plan.regime
    assert (reg.coincide_above, reg.objective_max, reg.saturation) == (0.95, 1.0, 0.9)


def test_primary_cells_have_16_paired_seeds_and_every_variant(spec):
    claim = next(c for c in spec.plan.claims if c.id == "hmpo-sample-efficiency-vs-gspo")
    from rl.studies.plan import matches

    primary = [c for c in _cells(spec).values() if matches(c["cell"], claim.where)]
    assert len(primary) == 3
    for c in primary:
        seeds = set(range(BANDIT_PRIMARY_SEEDS))
        assert len(seeds) >= 16
        assert all(s == seeds for s in c["variants"].values()), c["cell"]
        assert {"p=1", "p=0", "p=-1", "grpo-token", "gmpo", "holderpo", "pmpo", "luspo"} <= set(c["variants"])


def test_every_compared_cell_runs_p_1_0_and_minus_1(spec):
    for c in _cells(spec).values():
        if len(c["variants"]) > 1:
            assert {"p=1", "p=0", "p=-1"} <= set(c["variants"]), c["cell"]


def test_reuse_levels_hold_the_optimizer_updates_equal(spec):
    cells = _cells(spec)
    pairs = 0
    for c in cells.values():
        if c["cell"]["off_policy"] != "1x1" or c["cell"].get("env") != "seq-bandit":
            continue
        one = c["configs"][0].config
        # the 4x4 cell with every other factor equal (but the steps, which reuse carries)
        twin = [d for d in cells.values() if d["cell"]["off_policy"] == "4x4" and all(
            d["cell"][k] == v for k, v in c["cell"].items() if k not in ("off_policy", "steps"))]
        if not twin:
            continue   # the on-policy control has no 4x4 twin at tau 0, lag 0
        four = twin[0]["configs"][0].config
        updates = lambda cfg: cfg["steps"] * cfg["epochs"] * cfg["minibatches"]   # noqa: E731
        assert (one["epochs"], one["minibatches"], four["epochs"], four["minibatches"]) == (1, 1, 4, 4)
        assert updates(one) == updates(four) == 16 * four["steps"]
        assert one["steps"] == REUSE_STEP_FACTOR * four["steps"]
        pairs += 1
    assert pairs == 3     # one per reward kind


def test_calibrated_resolves_per_p_from_the_recorded_table(spec):
    cal = BANDIT_PILOT["calibration"]
    assert cal["eps"] == CALIBRATED_CLIP
    # the recorded eps lies between the two pilot eps whose clip fractions bracket the target
    for v, eps in CALIBRATED_CLIP.items():
        grid = sorted(cal[v].items())
        lo = max(e for e, f in grid if f >= cal["target_clip_fraction"])
        hi = min(e for e, f in grid if f <= cal["target_clip_fraction"])
        assert lo <= eps <= hi, v
    cfgs = [r for r in spec.runs() if r.cell.get("clip") == "calibrated"]
    assert {r.variant for r in cfgs} == {"p=1", "p=0", "p=-1"}
    for r in cfgs:
        assert r.config["eps_low"] == r.config["eps_high"] == CALIBRATED_CLIP[r.variant]
    assert clip_settings("calibrated", "hmpo") == {"eps_low": 0.44, "eps_high": 0.44}   # aliases resolve
    assert CALIBRATED_CLIP["p=-1"] > CALIBRATED_CLIP["p=0"] > CALIBRATED_CLIP["p=1"]
    with pytest.raises(ValueError, match="no calibrated window for variant 'gmpo'"):
        clip_settings("calibrated", "gmpo")
    with pytest.raises(ValueError, match="no calibrated window"):
        clip_settings("calibrated")


def _start(config: dict):
    """The environment's hidden target and the initial policy's logits a run starts from."""
    import rl.trainer as trainer
    from rl.envs import make_env

    cfg = to_train_config(config)
    env = make_env(cfg.env, seed=cfg.seed, **cfg.env_kwargs)
    state = trainer.RunState.create(cfg, env)
    return env.targets.clone(), state.policy.logits.detach().clone()


def test_target_and_initial_policy_differ_across_seeds_and_agree_across_variants(spec):
    runs = [r for r in spec.runs() if r.cell.get("reward") == "prefix" and r.cell["seq_len"] == "8"
            and r.cell["off_policy"] == "4x4" and r.cell["optimizer"] == "adamw" and r.cell["clip"] == "0.2"
            and r.cell["clip_center"] == "plain" and r.cell["policy_lag"] == "2" and r.cell["old_logp_noise"] == "0.3"
            and r.cell["reward_noise"] == "0"]
    by_seed: dict[int, list] = {}
    for r in runs:
        if r.seed in (0, 1):
            by_seed.setdefault(r.seed, []).append(r)
    starts = {s: [_start(r.config) for r in rs] for s, rs in by_seed.items()}
    for s, xs in starts.items():
        assert len(xs) == 13
        for tgt, logits in xs[1:]:
            assert torch.equal(tgt, xs[0][0]) and torch.equal(logits, xs[0][1])      # paired: bit for bit
    (t0, l0), (t1, l1) = starts[0][0], starts[1][0]
    assert not torch.equal(t0, t1) and not torch.equal(l0, l1)
    # the initial logits are init_scale N(0, 1): their SD is near the declared scale, not uniform (0)
    assert abs(float(l0.std()) - BANDIT_REWARDS["prefix"]["policy.init_scale"]) < 0.35


# ----------------------------------------------------------------------------- reproducibility

_SYNTH = "rl.studies.synthetic:run"
_PLAN = {
    "endpoints": {"auc": {"kind": "mean", "margin": 0.01},
                  "final": {"kind": "final", "margin": 0.02},
                  "samples_to_0.5": {"kind": "to_threshold", "threshold": 0.5, "margin": 0.05, "relative": True},
                  "drawdown": {"kind": "max_drawdown", "margin": 0.02, "collapse": 0.2}},
    "controls": [{"where": [{"off_policy": "1x1"}], "reason": "on-policy"}],
    "claims": [
        {"id": "hmpo-vs-gspo", "kind": "comparison", "variant": "p=-1", "endpoints": ["auc", "final", "samples_to_0.5"],
         "supports": "better", "where": [{"off_policy": "4x4"}]},
        {"id": "arith-vs-gspo", "kind": "comparison", "variant": "p=1", "endpoints": ["auc", "drawdown"],
         "supports": "better", "where": [{"off_policy": "4x4"}]},
        {"id": "gap-with-off-policy", "kind": "interaction", "variant": "p=-1", "factor": "off_policy",
         "endpoints": ["auc"], "supports": "differs"},
        {"id": "sweep", "kind": "sweep", "endpoints": ["auc"], "supports": "monotone"},
        {"id": "optimum", "kind": "sweep", "endpoints": ["auc"], "supports": "optimum"},
    ],
}


def _synthetic_study(tmp_path, effect: float, run_noise: float):
    from rl.studies.runner import load_results, run_study

    grid = [{"variant": ["p=1", "p=0.5", "p=0", "p=-0.5", "p=-1"], "off_policy": "4x4", "seeds": 16},
            {"variant": ["p=1", "p=0", "p=-1"], "off_policy": "1x1", "seeds": 8, "synthetic_effect": 0.0,
             "synthetic_run_noise": 0.0}]
    base = {"steps": 30, "synthetic_effect": effect, "synthetic_noise": 0.0, "synthetic_seed_sd": 0.05,
            "synthetic_run_noise": run_noise}
    spec = parse_spec({"study": {"name": "repro", "metric": "exact_reward", "run_fn": _SYNTH}, "base": base,
                       "grid": grid, **_PLAN})
    run_study(spec, tmp_path, executor="inline", progress=False)
    return spec, list(load_results(tmp_path).values())


def _verdicts(spec, recs):
    from rl.studies.analysis import analyze

    a = analyze(recs, spec)
    return {f.id: (f.verdict, tuple((t.cell, t.endpoint, t.verdict) for t in f.tests)) for f in a.findings}


def _perturbed(recs, delta: float, pattern: str, baseline: str = "p=0"):
    """Every run's exact J shifted by +-delta at every step; runs equal bit for bit (the controls) get the
    same shift, as the same arithmetic gives the same result on any one machine."""
    import numpy as np

    out = []
    for r in recs:
        y = r["metrics"]["exact_reward"]
        if r["cell"].get("off_policy") == "1x1":   # the on-policy control: its runs are equal bit for bit
            s = 1.0 if np.random.default_rng(abs(hash(tuple(y))) % 2**32).random() < 0.5 else -1.0
        elif pattern == "towards-variant":
            s = -1.0 if r["variant"] == baseline else 1.0
        elif pattern == "towards-baseline":
            s = 1.0 if r["variant"] == baseline else -1.0
        else:   # a sign per run drawn from the run's own values
            s = 1.0 if np.random.default_rng(abs(hash((r["seed"], tuple(y)))) % 2**32).random() < 0.5 else -1.0
        out.append({**r, "metrics": {**r["metrics"], "exact_reward": [v + s * delta for v in y]}})
    return out


@pytest.mark.parametrize("effect,run_noise", [(0.5, 0.004), (0.0, 0.002)])
def test_an_arithmetic_sized_perturbation_of_every_run_changes_no_verdict(tmp_path, effect, run_noise):
    rep = BANDIT_PILOT["reproducibility"]
    delta = rep["largest_endpoint_change"] * rep["safety_factor"]
    assert 0 < delta < 0.1 * min(0.01, 0.02)     # far below the smallest declared J margin (auc 0.01)
    spec, recs = _synthetic_study(tmp_path, effect, run_noise)
    before = _verdicts(spec, recs)
    assert {v for v, _ in before.values()} - {"inconclusive"}, before   # the design decides something
    for pattern in ("towards-variant", "towards-baseline", "random"):
        assert _verdicts(spec, _perturbed(recs, delta, pattern)) == before, pattern


def test_carried_factors_let_levels_pair_and_levels_restrict_the_contrast(tmp_path):
    from rl.studies.analysis import analyze
    from rl.studies.runner import load_results, run_study

    grid = [{"variant": ["p=0", "p=-1"], "off_policy": "4x4", "steps": 20, "seeds": 6},
            {"variant": ["p=0", "p=-1"], "off_policy": "1x1", "steps": 40, "seeds": 6},
            {"variant": ["p=0", "p=-1"], "off_policy": "2x2", "steps": 30, "seeds": 6}]
    inter = {"kind": "interaction", "variant": "p=-1", "factor": "off_policy", "endpoints": ["auc"], "supports": "differs"}
    plan = {"endpoints": {"auc": {"kind": "mean", "margin": 0.01}},
            "claims": [{"id": "carried", **inter, "carried": ["steps"], "levels": ["1x1", "4x4"]},
                       {"id": "not-carried", **inter}]}
    spec = parse_spec({"study": {"name": "carry", "metric": "exact_reward", "run_fn": _SYNTH},
                       "base": {"synthetic_effect": 0.3, "synthetic_seed_sd": 0.05, "synthetic_run_noise": 0.004},
                       "grid": grid, **plan})
    run_study(spec, tmp_path, executor="inline", progress=False)
    by = {f.id: f for f in analyze(list(load_results(tmp_path).values()), spec).findings}
    (t,) = by["carried"].primary()          # one contrast, 1x1 -> 4x4 (2x2 left out by `levels`), no Page test
    assert "off_policy 1x1 -> 4x4" in t.cell and t.n == 6
    assert any("steps changes with off_policy" in n for n in by["carried"].notes)
    assert by["not-carried"].primary() == ()  # the steps differ, so no two conditions differ in off_policy alone


def test_levels_and_carried_are_checked():
    base = {"study": {"name": "x", "metric": "exact_reward"}, "grid": [{"variant": ["p=0", "p=-1"], "seeds": 5,
                                                                         "off_policy": ["1x1", "4x4"]}],
            "endpoints": {"auc": {"kind": "mean", "margin": 0.01}}}
    inter = {"id": "c", "kind": "interaction", "variant": "p=-1", "factor": "off_policy", "endpoints": ["auc"],
             "supports": "differs"}
    with pytest.raises(ValueError, match="at least 2 levels"):
        parse_spec({**base, "claims": [{**inter, "levels": ["1x1"]}]})
    with pytest.raises(ValueError, match="cannot also be 'carried'"):
        parse_spec({**base, "claims": [{**inter, "carried": ["off_policy"]}]})
    with pytest.raises(ValueError, match="belong to interaction claims"):
        parse_spec({**base, "claims": [{"id": "d", "kind": "comparison", "variant": "p=-1", "endpoints": ["auc"],
                                        "supports": "better", "levels": ["1x1", "4x4"]}]})


def test_scheduled_and_length_weighted_variants_are_not_on_the_p_axis():
    from rl.studies.spec import variant_p

    assert variant_p("holderpo") is None and variant_p("luspo") is None and variant_p("learnable-p") is None
    assert variant_p("p=-0.5") == -0.5 and variant_p("hmpo") == -1.0


def test_the_autoregressive_cell_is_enumerable_paired_and_judged_by_its_claims(spec):
    """The RNN policy's exact J needs enumeration (rl.envs.oracle): its cell must stay within V^T <=
    65536 answers, keep 16 paired seeds for p in {1, 0, -1}, and be the only condition its claims read."""
    from rl.studies.plan import matches
    from rl.studies.presets import BANDIT_RNN

    every = _cells(spec)
    cells = [label for label, c in every.items() if c["cell"].get("policy.kind") == "autoregressive"]
    assert len(cells) == 1
    c = every[cells[0]]
    assert BANDIT_RNN["vocab"] ** BANDIT_RNN["seq_len"] <= 65536
    assert {v: len(s) for v, s in c["variants"].items()} == {"p=1": 16, "p=0": 16, "p=-1": 16}
    cfg = to_train_config(c["configs"][0].config)
    assert cfg.policy_kwargs["kind"] == "autoregressive" and cfg.env_kwargs["length"] == 6
    others = [x for label, x in every.items() if label != cells[0]]
    assert all(x["cell"].get("policy.kind") == "tabular" for x in others)   # the default, named in labels
    for cid in ("hmpo-vs-gspo-autoregressive", "arithmetic-vs-gspo-autoregressive"):
        claim = next(k for k in spec.plan.claims if k.id == cid)
        assert matches(c["cell"], claim.where) and not any(matches(x["cell"], claim.where) for x in others)

"""The redesigned tiny-LM study is PRESETS["tiny-lm"]: its runs are valid trainer configs, its seeds
cross the 3 SFT checkpoints with RL seeds in both cells, HolderPO is wired in with its schedule,
its plan is declared in the spec format, and its pilot seeds stay out of the study."""

from __future__ import annotations

from collections import Counter

import pytest

import rl.studies.preset_tiny_lm as tiny
from rl.envs.scratchpad import ScratchpadAdditionEnv
from rl.studies.presets import DEFAULT_STUDIES, PRESETS
from rl.studies.spec import VARIANT_NAMES, VARIANTS, load_spec, parse_spec, variant_p, variant_settings
from rl.studies.training import to_train_config
from rl.trainer import scheduled_p


@pytest.fixture(scope="module")
def study():
    return load_spec("tiny-lm")


def test_tiny_lm_is_the_redesigned_study_and_the_old_one_is_kept_aside(study):
    assert study.name == "tiny-lm" and study.base["env"] == "tiny-lm-scratchpad"
    assert parse_spec(tiny.PRESET).to_dict() == study.to_dict()  # the module's PRESET is the registered one
    old = load_spec("tiny-lm-addition")
    assert old.base["env"] == "tiny-lm" and "tiny-lm-addition" not in DEFAULT_STUDIES and "tiny-lm" in DEFAULT_STUDIES
    # the spec round-trips through its TOML-shaped dict
    assert parse_spec(study.to_dict()).to_dict() == study.to_dict()


def test_runs_are_valid_configs_crossing_three_checkpoints_with_nine_seeds_in_both_cells(study):
    runs = study.runs()
    assert len(runs) == (len(tiny.PRIMARY_VARIANTS) + len(tiny.CONTROL_VARIANTS)) * 9 == 72
    cfgs = [(r, to_train_config(r.config)) for r in runs]
    assert all(c.sampler_dtype == "bfloat16" and c.env == "tiny-lm-scratchpad" and c.policy_lag == 8
               and (c.epochs, c.minibatches) == (2, 2) for _, c in cfgs)
    cells = {r.cell_label: set() for r in runs}
    for r, c in cfgs:
        cells[r.cell_label].add(r.variant)
        assert c.recompute_old_logp == (r.cell["recompute_old_logp"] == "True")
    assert cells == {"off_policy=2x2, recompute_old_logp=False": set(tiny.PRIMARY_VARIANTS),
                     "off_policy=2x2, recompute_old_logp=True": set(tiny.CONTROL_VARIANTS)}
    # every variant of each cell sees every checkpoint three times (RL seed mod 3), with the same
    # seeds in both cells, so the mismatch contrasts are paired
    for cell, variants in cells.items():
        for v in variants:
            mine = [(r, c) for r, c in cfgs if r.cell_label == cell and r.variant == v]
            assert sorted(r.seed for r, _ in mine) == list(range(9))
            ckpts = Counter(ScratchpadAdditionEnv(seed=r.seed, **c.env_kwargs).checkpoint for r, c in mine)
            assert ckpts == {0: 3, 1: 3, 2: 3}
    assert not set(tiny.PILOT["seeds"]) & {r.seed for r in runs}


def test_j_is_logged_on_the_last_row_after_thirty_updates(study):
    """J is evaluated before steps 1, 1 + e, ...: with 31 steps and e = 3 the last row (step 31)
    holds J after 30 updates, so no run ends on an empty row (read as non-finite by the drawdown)."""
    cfg = to_train_config(study.runs()[0].config)
    logged = [t for t in range(1, cfg.steps + 1) if (t - 1) % cfg.exact_every == 0]
    assert logged[-1] == cfg.steps == 31 and len(logged) == 11
    # the final endpoint's last 7 rows hold exactly 3 evaluations (after 24, 27, 30 updates)
    assert [t - 1 for t in logged if t > cfg.steps - study.plan.endpoints["final"].last] == [24, 27, 30]


def test_holderpo_is_wired_in_with_its_schedule_and_is_off_the_plain_p_axis(study):
    assert VARIANTS["holderpo"] == {"level": "sequence", "p": 2.0, "mean": "power", "p_schedule": ["linear", 2.0, -1.0]}
    assert VARIANT_NAMES["holderpo"] == "HolderPO (p annealed 2 -> -1)"
    assert variant_p("holderpo") is None and variant_p("p=-1") == -1.0
    assert variant_settings("holderpo")["p_schedule"] == ["linear", 2.0, -1.0]
    (run,) = [r for r in study.runs() if r.variant == "holderpo" and r.seed == 0]
    cfg = to_train_config(run.config)
    assert cfg.p_schedule == ("linear", 2.0, -1.0)
    # closed form over the study's 31 steps: p_k = 2 - 3 (k - 1) / 30, 2 at the first step, -1 at the last,
    # 0 at step 21
    for k in range(1, cfg.steps + 1):
        assert scheduled_p(cfg, k) == pytest.approx(2 - 3 * (k - 1) / 30, abs=1e-15)
    assert scheduled_p(cfg, 1) == 2.0 and scheduled_p(cfg, 31) == -1.0 and abs(scheduled_p(cfg, 21)) < 1e-15
    # the sweep claims order the plain power variants by p only: HolderPO is not among them
    from rl.studies.analysis import _variant_key

    assert _variant_key("holderpo")[0] == 1


def test_plan_declares_thresholds_margins_claims_and_regime(study):
    plan = study.plan
    eps = plan.endpoints
    assert eps["samples_to_0.6"].kind == "to_threshold" and eps["samples_to_0.6"].threshold == 0.6
    assert eps["samples_to_0.6"].margin == 7 * 64 and not eps["samples_to_0.6"].relative
    assert {eps[e].metric for e in ("auc", "final", "drawdown", "samples_to_0.6")} == {"exact_reward"}
    assert eps["drawdown"].collapse == 0.3 and eps["greedy_final"].metric == "greedy_accuracy"
    ids = {c.id for c in plan.claims}
    shared = {"hmpo-sample-efficiency-vs-gspo", "hmpo-final-reward-vs-gspo", "hmpo-more-stable-than-gspo",
              "arithmetic-sample-efficiency-vs-gspo", "arithmetic-less-stable-than-gspo",
              "grpo-token-less-stable-than-gspo", "gspo-interior-optimum", "monotone-in-p", "clip-side-shift-with-p",
              "cost-of-the-means"}
    bandit = {c["id"] for c in PRESETS["bandit"]["claims"]}
    assert shared <= ids and shared <= bandit  # the same ids where the meaning is the same
    assert {"holderpo-vs-gspo", "hmpo-robust-to-mismatch", "hmpo-vs-gspo-without-mismatch"} <= ids
    mismatch = next(c for c in plan.claims if c.id == "hmpo-robust-to-mismatch")
    assert mismatch.kind == "interaction" and mismatch.factor == "recompute_old_logp"
    assert (plan.regime.coincide_above, plan.regime.saturation, plan.regime.objective_max) == (0.95, 0.9, 1.0)
    assert "pilot" in study.plan_note and "before" in study.plan_note


def test_perturbation_record_is_declared_below_every_margin():
    """The part of the cross-machine perturbation that a paired contrast sees (PERTURBATION's
    run_shift, times its safety factor) is, twice over (both runs of a pair move), smaller than the
    margin of every endpoint a tested claim uses: no verdict can come from a difference of that
    size alone."""
    per = tiny.PERTURBATION["run_shift"]
    assert set(per) == set(tiny.PERTURBATION["checkpoint_shift"]) == set(tiny.ENDPOINTS)
    plan = load_spec("tiny-lm").plan
    tested = {e for c in plan.claims if c.kind != "descriptive" for e in c.endpoints}
    assert tested & set(per) == {"samples_to_0.6", "auc", "final", "drawdown"}
    for name in tested & set(per):
        assert 2 * tiny.PERTURBATION["safety"] * per[name] < tiny.ENDPOINTS[name]["margin"], name

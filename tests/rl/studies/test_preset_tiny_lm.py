"""The redesigned tiny-LM preset expands into valid trainer configs once its HolderPO variant is
registered, crosses 3 checkpoints with RL seeds, and keeps its pilot seeds out of the study."""

from __future__ import annotations

from collections import Counter

import rl.studies.spec as spec
from rl.envs.scratchpad import ScratchpadAdditionEnv
from rl.studies.preset_tiny_lm import CONTROL_VARIANTS, HOLDERPO_VARIANT, PILOT, PRESET, PRIMARY_VARIANTS
from rl.studies.training import to_train_config


def test_preset_expands_into_valid_configs_crossing_checkpoints_with_seeds(monkeypatch):
    monkeypatch.setattr(spec, "VARIANTS", {**spec.VARIANTS, **HOLDERPO_VARIANT})
    study = spec.parse_spec(PRESET)
    runs = study.runs()
    assert len(runs) == len(PRIMARY_VARIANTS) * 9 + len(CONTROL_VARIANTS) * 6
    cfgs = [(r, to_train_config(r.config)) for r in runs]
    primary = [(r, c) for r, c in cfgs if not c.recompute_old_logp]
    assert {r.variant for r, _ in primary} == set(PRIMARY_VARIANTS)
    assert all(c.sampler_dtype == "bfloat16" and c.env == "tiny-lm-scratchpad" for _, c in cfgs)
    holder = [c for r, c in cfgs if r.variant == "holderpo"]
    assert holder and all(c.p_schedule == ("linear", 2.0, -1.0) for c in holder)
    # each variant of the primary cell sees every checkpoint three times (seed mod 3)
    for v in PRIMARY_VARIANTS:
        ckpts = Counter(ScratchpadAdditionEnv(seed=r.seed, **c.env_kwargs).checkpoint for r, c in primary
                        if r.variant == v)
        assert ckpts == {0: 3, 1: 3, 2: 3}
    assert not set(PILOT["seeds"]) & {r.seed for r in runs}
    assert {r.cell_label for r in runs} == {"off_policy=2x2, recompute_old_logp=False",
                                            "off_policy=2x2, recompute_old_logp=True"}

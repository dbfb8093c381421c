"""Study specs: TOML grids expand into runs; errors name the problem; the documented example parses."""

from __future__ import annotations

import pytest

from rl.studies import load_spec, parse_spec
from rl.studies.spec import clip_settings, config_hash, off_policy_settings, variant_p, variant_settings

EXAMPLE_TOML = """
[study]
name = "example"
description = "off-policy comparison"
baseline = "gspo"
metric = "exact_reward"

[base]
env = "seq-bandit"
steps = 20

[endpoints."samples_to_0.5"]
kind = "to_threshold"
threshold = 0.5
margin = 0.05
relative = true

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


def test_toml_spec_expands_to_the_grid(tmp_path):
    path = tmp_path / "example.toml"
    path.write_text(EXAMPLE_TOML)
    spec = load_spec(path)
    runs = spec.runs()
    assert len(runs) == 4 * 2 * 2 * 5 + 2 * 2 * 5
    assert len({r.run_id for r in runs}) == len(runs) == len({r.config_hash for r in runs})
    assert spec.baseline == "p=0"
    assert spec.plan.endpoints["samples_to_0.5"].threshold == 0.5
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
    with pytest.raises(ValueError, match="declare thresholds in an endpoint"):
        parse_spec({**base, "study": {"name": "x", "threshold": 0.8}})
    with pytest.raises(ValueError, match="alpha"):
        parse_spec({**base, "study": {"name": "x", "alpha": 1.5}})
    with pytest.raises(ValueError, match="clip"):
        clip_settings("wide")
    with pytest.raises(ValueError, match="off_policy"):
        off_policy_settings("4by2")
    with pytest.raises(ValueError, match="neither a preset"):
        load_spec("no-such-preset-or-file")


def test_the_documented_spec_example_parses():
    import tomllib

    import rl.studies.spec as sp

    doc = sp.__doc__
    block = doc[doc.index("    [study]"):doc.index("Factors with a special meaning")]
    spec = parse_spec(tomllib.loads("\n".join(line[4:] for line in block.splitlines())))
    assert spec.name == "offpolicy" and len(spec.runs()) == 4 * 2 * 2 * 5 + 2 * 2 * 5
    assert spec.plan_note == "declared before the runs" and spec.plan.alpha == 0.05


def test_the_learnable_p_variant_uses_the_trainers_field_name():
    import dataclasses

    import rl.trainer

    s = variant_settings("learnable-p")
    assert s["learnable_p"] is True and "learnable_p" in {f.name for f in dataclasses.fields(rl.trainer.TrainConfig)}
    assert variant_p("learnable-p") is None and variant_p("hmpo") == -1.0


@pytest.mark.parametrize("name, level, p, mean, agg", [
    ("pmpo", "gmpo", 0.0, "pmpo", None),
    ("luspo", "sequence", 0.0, "power", "seq-mean-token-sum"),
    ("luspo-p=0", "sequence", 0.0, "power", "seq-mean-token-sum"),
    ("luspo-p=-1.0", "sequence", -1.0, "power", "seq-mean-token-sum"),
    ("luspo-p=0.5", "sequence", 0.5, "power", "seq-mean-token-sum"),
])
def test_newer_variants_expand_into_settings_the_trainer_accepts(name, level, p, mean, agg):
    from rl.studies.spec import canonical_variant
    from rl.studies.training import to_train_config

    s = variant_settings(name)
    assert (s["level"], s["p"], s["mean"], s.get("agg")) == (level, p, mean, agg)
    cfg = to_train_config({"env": "seq-bandit", "steps": 1, **s})  # validates the loss settings
    assert (cfg.level, cfg.p, cfg.loss_options.get("mean", "power"), cfg.agg) == (level, p, mean,
                                                                                   agg or "seq-mean-token-mean")
    # A length-weighted variant is not a point of the plain p axis the figures sweep.
    assert variant_p(name) is None
    assert canonical_variant(name) == {"luspo-p=0": "luspo", "luspo-p=-1.0": "luspo-p=-1"}.get(name, name)


def test_luspo_names_are_checked_like_p_names():
    with pytest.raises(ValueError, match="luspo-p=<number>"):
        variant_settings("luspo-p=abc")
    with pytest.raises(ValueError, match="must be finite"):
        variant_settings("luspo-p=1e999")

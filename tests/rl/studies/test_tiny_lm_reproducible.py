"""A cross-machine-size perturbation of every run's endpoints does not flip a verdict of the tiny-LM
study's analysis (issue 13: "rerun on another machine gives the same verdicts").

The perturbation's size is the one measured on the pilot seeds (rl.studies.preset_tiny_lm.PERTURBATION:
the largest change of each endpoint of an RL run when its start is perturbed at the size of float32
rounding), times a safety factor. Each run's endpoint is moved by +-that size (random signs, several
draws) and the whole declared analysis is redone on synthetic curves of known effects; nothing trains here.
A negative control checks that the test can fail: a perturbation many times the margins does flip verdicts.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import rl.studies.analysis as analysis
from rl.studies.endpoints import EndpointValue
from rl.studies.preset_tiny_lm import PERTURBATION
from rl.studies.spec import load_spec, variant_p

# variant -> true change of the J gain (the same in both cells), in J units
# (the directional ones clear of their margins by more than the perturbation can move a mean)
EFFECTS = {"p=1": 0.0, "p=0": 0.0, "p=-1": 0.4, "grpo-token": -0.1, "gmpo": 0.0, "holderpo": 0.4}
#: run noise of the J gain: at least the per-run chaos the perturbation pilot measured (the final J of
#: one run moved by up to 0.055), which is part of every run's noise on any machine
RUN_SD = 0.01
J0 = (0.2807, 0.2715, 0.2808)  # the three checkpoints' J


def _records(spec) -> list[dict]:
    """Synthetic runs of the study: J after u updates is J0 + G (1 - exp(-u / 8)), logged every 3
    steps as the trainer does, with G = 0.2 + a seed effect (shared by the variants of a seed: the
    design is paired) + the variant's effect + run noise (RUN_SD); each run dips once by
    |N(0, RUN_SD^2)| and recovers (a small drawdown), and GRPO also falls by 0.3-0.34 at the end of
    every run (a collapse)."""
    rng = np.random.default_rng(2026)
    seed_effect = {s: 0.08 * rng.standard_normal() for s in range(9)}
    out = []
    for r in spec.runs():
        steps, every = r.config["steps"], r.config["exact_every"]
        g = 0.2 + seed_effect[r.seed] + EFFECTS[r.variant] + RUN_SD * rng.standard_normal()
        dip_at, dip = int(rng.integers(2, steps)), abs(RUN_SD * rng.standard_normal())
        rows = {k: [] for k in ("exact_reward", "greedy_accuracy", "samples", "loss/token_weight_ess", "p", "time_s",
                                "loss/clip_frac_low", "loss/clip_frac_high")}
        for t in range(1, steps + 1):
            logged = (t - 1) % every == 0
            j = J0[r.seed % 3] + g * (1 - math.exp(-(t - 1) / 8))
            if t == dip_at or t == dip_at + 1:  # a transient fall and recovery: a drawdown of `dip`
                j -= dip
            if r.variant == "grpo-token" and t > steps - 4:
                j -= 0.3 + 0.02 * (r.seed % 3)
            rows["exact_reward"].append(j if logged else None)
            rows["greedy_accuracy"].append(min(1.0, 0.9 + j / 10) if logged else None)
            rows["samples"].append(64 * t)
            p = variant_p(r.variant)
            rows["loss/token_weight_ess"].append(math.exp(-((p or 0.0) * 0.4) ** 2))
            rows["p"].append(p if p is not None else 0.0)
            rows["time_s"].append(0.3)
            rows["loss/clip_frac_low"].append(0.1 - 0.02 * (p or 0.0) + 0.005 * rng.standard_normal())
            rows["loss/clip_frac_high"].append(0.1 + 0.02 * (p or 0.0) + 0.005 * rng.standard_normal())
        out.append({"run_id": r.run_id, "variant": r.variant, "cell": r.cell, "seed": r.seed, "status": "ok",
                    "metrics": rows})
    return out


def _verdicts(records, spec) -> dict[str, str]:
    return {f.id: f.verdict for f in analysis.analyze(records, spec).findings}


def _perturbed(monkeypatch, records, spec, sizes: dict[str, float], draw: int,
               common: dict[str, float] | None = None) -> dict[str, str]:
    """The verdicts with every run's value of each endpoint moved by +-sizes[endpoint] (a sign per
    run and endpoint, from the draw's own stream) and, with ``common``, every run of a seed moved
    together by +-common[endpoint] (a sign per seed: a different SFT checkpoint)."""
    signs = np.random.default_rng([7, draw])
    table = {(rec["run_id"], e): float(signs.choice([-1.0, 1.0])) for rec in records for e in spec.plan.endpoints}
    by_seed = {(s, e): float(signs.choice([-1.0, 1.0])) for s in range(9) for e in spec.plan.endpoints}
    seed_of = {rec["run_id"]: rec["seed"] for rec in records}
    plain = analysis.endpoint_value

    def moved(ep, record):
        v = plain(ep, record)
        if ep.name not in sizes or not math.isfinite(v.value):
            return v
        shift = sizes[ep.name] * table[(record["run_id"], ep.name)]
        if common:
            shift += common[ep.name] * by_seed[(seed_of[record["run_id"]], ep.name)]
        return EndpointValue(v.value + shift, v.censored)

    monkeypatch.setattr(analysis, "endpoint_value", moved)
    try:
        return _verdicts(records, spec)
    finally:
        monkeypatch.setattr(analysis, "endpoint_value", plain)


@pytest.fixture(scope="module")
def study():
    # the raw analysis, without the plan's own robustness re-analysis (tested in test_analysis.py):
    # what is checked here is how far the raw verdicts can move
    spec = load_spec("tiny-lm")
    spec = dataclasses.replace(spec, plan=dataclasses.replace(spec.plan, robustness=None))
    return spec, _records(spec)


def test_the_synthetic_study_has_verdicts_of_every_kind(study):
    """The check below means something only if the unperturbed analysis reaches directional and
    equivalence verdicts (not merely 'inconclusive' everywhere, which nothing could flip)."""
    spec, records = study
    v = _verdicts(records, spec)
    assert v["hmpo-final-reward-vs-gspo"] == "better" and v["holderpo-vs-gspo"] == "better"
    assert v["gmpo-vs-gspo"] == "equivalent" and v["grpo-token-less-stable-than-gspo"] == "worse"
    assert v["monotone-in-p"] in ("increasing", "decreasing")


@pytest.mark.parametrize("draw", range(12))
def test_a_cross_machine_perturbation_of_every_endpoint_flips_no_verdict(monkeypatch, study, draw):
    spec, records = study
    k = PERTURBATION["safety"]
    sizes = {e: k * s for e, s in PERTURBATION["run_shift"].items()}
    common = {e: k * s for e, s in PERTURBATION["checkpoint_shift"].items()}
    assert _perturbed(monkeypatch, records, spec, sizes, draw, common) == _verdicts(records, spec)


def test_negative_control_a_perturbation_far_above_the_margins_does_flip_verdicts(monkeypatch, study):
    spec, records = study
    sizes = {e: 10 * spec.plan.endpoints[e].margin for e in PERTURBATION["run_shift"]}
    assert _perturbed(monkeypatch, records, spec, sizes, 0) != _verdicts(records, spec)

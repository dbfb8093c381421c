"""The analysis on studies whose truth is known: synthetic paired runs and endpoint draws
(rl.studies.synthetic), the verdict rules, the families and their Holm correction."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
from scipy import stats as sps

from rl.studies.analysis import aggregate_verdict, analyze, difference_test, judge
from rl.studies.endpoints import EndpointValue
from rl.studies.plan import Endpoint
from rl.studies.runner import load_results, run_study
from rl.studies.spec import parse_spec
from rl.studies.stats import holm
from rl.studies.synthetic import paired_endpoints

SYNTH = "rl.studies.synthetic:run"
EP = Endpoint(name="auc", kind="mean", metric="exact_reward", margin=0.01)


def _judge_study(values: np.ndarray, ep: Endpoint = EP, alpha: float = 0.05):
    """values [variants, seeds], variant 0 the baseline -> the judged tests of variants 1.. (one family)."""
    as_ev = lambda row: {s: EndpointValue(float(v)) for s, v in enumerate(row)}  # noqa: E731
    drafts = [difference_test(as_ev(values[k]), as_ev(values[0]), ep, cell="c", variant=f"v{k}", baseline="b")
              for k in range(1, values.shape[0])]
    return judge(drafts, family="f", alpha=alpha)


# ----------------------------------------------------------------------------- known truth

def test_a_true_effect_beyond_the_margin_gives_better_or_worse():
    # 100 studies each way, 10 seeds, true effect +-2 margins, run noise 0.5 margin (the seed effect
    # cancels in the paired differences): the power is ~1, so at least 97 of 100 must say better (worse)
    up = paired_endpoints(100, 10, [0.0, 0.02], seed_sd=0.05, noise_sd=0.005, seed=1)
    down = paired_endpoints(100, 10, [0.0, -0.02], seed_sd=0.05, noise_sd=0.005, seed=2)
    assert sum(_judge_study(v)[0].verdict == "better" for v in up) >= 97
    assert sum(_judge_study(v)[0].verdict == "worse" for v in down) >= 97
    # lower is better: the same difference reads the other way
    lower = Endpoint(name="d", kind="max_drawdown", metric="m", margin=0.01, higher_is_better=False)
    assert _judge_study(up[0], lower)[0].verdict == "worse"


def test_no_effect_with_enough_seeds_gives_equivalent():
    # true effect 0, run noise 0.3 margin, 10 seeds: TOST rejects in nearly every study
    null = paired_endpoints(200, 10, [0.0, 0.0], seed_sd=0.05, noise_sd=0.003, seed=3)
    verdicts = [_judge_study(v)[0].verdict for v in null]
    assert verdicts.count("equivalent") >= 190, verdicts.count("equivalent")
    assert verdicts.count("better") + verdicts.count("worse") <= 10


def test_too_few_seeds_give_inconclusive_with_the_power_stated():
    # 5 seeds: the smallest two-sided sign-flip p is 2/32 = 0.0625 > 0.05, the smallest one-sided 1/32,
    # above Holm's 0.05/2 for a family of two: nothing can be decided, whatever the data, and the
    # power to detect the margin is 0
    big = paired_endpoints(50, 5, [0.0, 0.05, 0.0], seed_sd=0.05, noise_sd=0.001, seed=4)
    for v in big:
        for t in _judge_study(v):
            assert t.verdict == "inconclusive" and t.power == 0.0


def test_under_the_global_null_better_or_worse_happens_at_most_at_rate_alpha():
    # 250 null studies, each a family of 3 variants against the baseline (8 seeds, noise of the size of
    # the margin so that differences beyond it occur). Holm keeps the family-wise rate of a better or
    # worse verdict at most alpha = 0.05; the test fails if more than the 99.9% quantile of
    # Binomial(250, 0.05) studies (26) have one: its false-failure rate is below 0.001 when the true
    # rate is exactly alpha (and smaller, as here: the exact sign-flip test is conservative).
    null = paired_endpoints(250, 8, [0.0, 0.0, 0.0, 0.0], seed_sd=0.05, noise_sd=0.02, seed=5)
    hits = sum(any(t.verdict in ("better", "worse") for t in _judge_study(v)) for v in null)
    limit = sps.binom.ppf(0.999, 250, 0.05)
    assert hits <= limit, (hits, limit)


def test_no_verdict_from_a_difference_smaller_than_the_margin():
    # a consistent difference of 0.4 margins in every seed: significant, but not better; TOST says
    # equivalent
    rng = np.random.default_rng(6)
    base = rng.normal(0.5, 0.05, size=8)
    (t,) = _judge_study(np.vstack([base, base + 0.004 + rng.normal(0, 1e-4, size=8)]))
    assert t.p_adjusted <= 0.05 and t.verdict == "equivalent"
    # a margin of 0.001 makes the same data "better"
    (t2,) = _judge_study(np.vstack([base, base + 0.004 + rng.normal(0, 1e-4, size=8)]),
                         Endpoint(name="auc", kind="mean", metric="m", margin=0.001))
    assert t2.verdict == "better"


def test_relative_margins_scale_with_the_baseline():
    ep = Endpoint(name="s", kind="to_threshold", metric="m", threshold=0.9, margin=0.05, relative=True)
    y = {s: EndpointValue(200.0 + s) for s in range(8)}
    x = {s: EndpointValue(200.0 + s + 5.0) for s in range(8)}          # 2.5% slower: below the 5% margin
    d = difference_test(x, y, ep, cell="c", variant="v", baseline="b")
    assert d.margin == pytest.approx(0.05 * 203.5)
    (t,) = judge([d], family="f", alpha=0.05)
    assert t.verdict == "equivalent" and t.relative == pytest.approx(5.0 / 203.5)
    # both runs of a seed censored: equivalence is not testable
    y[0], x[0] = EndpointValue(1248.0, True), EndpointValue(1248.0, True)
    d = difference_test(x, y, ep, cell="c", variant="v", baseline="b")
    assert math.isnan(d.p_tost) and d.censored == 1 and "never reached" in d.notes[0]


def test_unpaired_when_the_seeds_differ():
    x = {s: EndpointValue(1.0 + 0.01 * s) for s in range(8)}
    y = {s: EndpointValue(0.5 + 0.01 * s) for s in range(5)}
    d = difference_test(x, y, EP, cell="c", variant="v", baseline="b")
    assert not d.paired and d.test == "permutation (exact)"
    assert d.p == pytest.approx(2 / math.comb(13, 5))


def test_aggregate_verdict_rules():
    from types import SimpleNamespace

    mk = lambda *vs: [SimpleNamespace(verdict=v) for v in vs]  # noqa: E731
    assert aggregate_verdict(mk("better", "inconclusive")) == "better"
    assert aggregate_verdict(mk("better", "worse")) == "mixed"
    assert aggregate_verdict(mk("equivalent", "equivalent", "identical")) == "equivalent"
    assert aggregate_verdict(mk("equivalent", "inconclusive")) == "inconclusive"
    assert aggregate_verdict(mk("identical", "identical")) == "identical"
    assert aggregate_verdict(mk("identical", "not identical")) == "not identical"
    assert aggregate_verdict([]) == "inconclusive"


# ----------------------------------------------------------------------------- whole studies

_PLAN = {
    "endpoints": {"auc": {"kind": "mean", "margin": 0.01},
                  "samples_to_0.5": {"kind": "to_threshold", "threshold": 0.5, "margin": 0.05, "relative": True},
                  "drawdown": {"kind": "max_drawdown", "margin": 0.02, "collapse": 0.3},
                  "final": {"kind": "final", "margin": 0.01}},
    "controls": [{"where": [{"off_policy": "1x1"}], "reason": "on-policy"}],
    "claims": [
        {"id": "hmpo-vs-gspo", "kind": "comparison", "variant": "p=-1", "endpoints": ["auc", "samples_to_0.5"],
         "supports": "better", "where": [{"off_policy": "4x4"}]},
        {"id": "gap-with-off-policy", "kind": "interaction", "variant": "p=-1", "factor": "off_policy",
         "endpoints": ["auc"], "supports": "differs"},
        {"id": "sweep", "kind": "sweep", "endpoints": ["auc"], "supports": "monotone"},
        {"id": "finals", "kind": "descriptive", "variant": "p=-1", "endpoints": ["final"]},
    ],
}


def _study(tmp_path, effect: float, *, run_noise: float = 0.004, seeds: int = 8, extra: dict | None = None):
    grid = [{"variant": ["p=1", "p=0.5", "p=0", "p=-0.5", "p=-1"], "off_policy": "4x4", "seeds": seeds},
            {"variant": ["p=1", "p=0", "p=-1"], "off_policy": "1x1", "seeds": seeds}]
    base = {"steps": 40, "synthetic_effect": effect, "synthetic_noise": 0.0, "synthetic_seed_sd": 0.05,
            "synthetic_run_noise": run_noise}
    spec = parse_spec({"study": {"name": "known", "metric": "exact_reward", "run_fn": SYNTH}, "base": base,
                       "grid": grid, **_PLAN, **(extra or {})})
    run_study(spec, tmp_path, executor="inline", progress=False)
    return spec, list(load_results(tmp_path).values())


def test_every_adjusted_p_is_holm_over_its_family(tmp_path):
    spec, recs = _study(tmp_path, 0.5)
    a = analyze(recs, spec)
    families = defaultdict(list)
    for t in [t for f in a.findings for t in f.tests] + a.exploratory:
        if math.isfinite(t.p) and t.verdict not in ("identical", "descriptive"):
            families[t.family].append(t)
    assert len(families) >= 5
    for name, ts in families.items():
        np.testing.assert_allclose([t.p_adjusted for t in ts], holm([t.p for t in ts]), rtol=0, atol=0, err_msg=name)
        tost = [t for t in ts if math.isfinite(t.p_tost)]
        np.testing.assert_allclose([t.p_tost_adjusted for t in tost], holm([t.p_tost for t in tost]), err_msg=name)
    # a claim's family is every test behind its verdict: 1 cell x 2 endpoints here
    (f,) = [f for f in a.findings if f.id == "hmpo-vs-gspo"]
    assert len(f.primary()) == 2 and f.primary()[0].family == f.primary()[1].family


def test_a_built_in_effect_is_found_and_controls_are_identical(tmp_path):
    # rate (1 + 0.5 p): p = -1 learns at half GSPO's speed. The synthetic model applies the effect
    # whatever the off-policy degree, so the declared on-policy control is (correctly) reported as
    # not identical: a control that fails is said so, not pooled away
    spec, recs = _study(tmp_path, 0.5)
    a = analyze(recs, spec)
    by = {f.id: f for f in a.findings}
    assert by["hmpo-vs-gspo"].verdict == "worse" and by["hmpo-vs-gspo"].outcome == "contradicted"
    assert by["sweep"].verdict == "increasing" and by["sweep"].outcome == "supported"
    assert by["control-1"].verdict == "not identical" and by["control-1"].outcome == "control failed"
    assert by["finals"].verdict == "descriptive" and len(by["finals"].tests) == 1   # the control cell is left out
    inter = by["gap-with-off-policy"]
    assert inter.verdict in ("equivalent", "inconclusive", "better", "worse")
    assert all("from off_policy=1x1 to 4x4" in t.note for t in inter.primary())


def test_no_effect_without_run_noise_is_identical_bit_for_bit(tmp_path):
    spec, recs = _study(tmp_path, 0.0, run_noise=0.0)
    a = analyze(recs, spec)
    by = {f.id: f for f in a.findings}
    assert by["control-1"].verdict == "identical"
    assert by["hmpo-vs-gspo"].verdict == "identical"
    assert {t.verdict for t in a.exploratory} == {"identical"}


def test_pooled_claims_and_the_regime_keep_coinciding_conditions_out(tmp_path):
    # the synthetic ESS is exp(-(p spread)^2) > 0.99: with coincide_above = 0.95 every condition is
    # one where the means coincide, so the claim has no primary test at all
    extra = {"regime": {"variant": "p=-1", "coincide_above": 0.95}}
    spec, recs = _study(tmp_path, 0.5, extra=extra)
    a = analyze(recs, spec)
    f = next(f for f in a.findings if f.id == "hmpo-vs-gspo")
    assert not f.primary() and {t.role for t in f.tests} == {"outside regime"}
    assert f.verdict == "inconclusive" and any("coincide" in n for n in f.notes)
    assert all(c.coincide for c in a.data.cells)


def test_short_labels_name_what_sets_a_condition_apart_and_the_factors_claims_tell_apart():
    from rl.studies.analysis import short_labels

    cells = [{"env": "seq-bandit", "reward": "count", "steps": "10"},
             {"env": "seq-bandit", "reward": "all-or-nothing", "steps": "10"},
             {"env": "seq-bandit", "reward": "prefix", "steps": "30"}]
    # by default only what differs from the most common value (a constant env is not named): prefix
    # reads as "steps=30"
    assert short_labels(cells) == ["reward=count", "reward=all-or-nothing", "steps=30"]
    # a factor the claims tell conditions apart by is always named
    assert short_labels(cells, always=("reward",)) == ["reward=count", "reward=all-or-nothing",
                                                       "reward=prefix, steps=30"]


def test_claim_factors_are_those_the_claims_pin_to_several_values():
    from rl.studies.analysis import claim_factors
    from rl.studies.plan import parse_plan

    data = {"endpoints": {"auc": {"kind": "mean", "margin": 0.01}},
            "claims": [{"id": f"c-{r}", "kind": "comparison", "claim": "x", "variant": "p=-1", "endpoints": ["auc"],
                        "supports": "better", "where": [{"reward": r, "env": "seq-bandit"}]}
                       for r in ("count", "prefix")]}
    plan = parse_plan(data, metric="exact_reward", alpha=0.05, canonical=lambda v: v)
    assert claim_factors(plan) == ("reward",)


# ---- robustness: verdicts re-judged under a declared cross-machine perturbation --------------------

def _robust_study(shift: dict, common: dict | None = None, draws: int = 6):
    import dataclasses

    from rl.studies.plan import Robustness
    from rl.studies.spec import load_spec
    from tests.rl.studies.test_tiny_lm_reproducible import _records

    spec = load_spec("tiny-lm")
    plain = dataclasses.replace(spec, plan=dataclasses.replace(spec.plan, robustness=None))
    robust = dataclasses.replace(spec, plan=dataclasses.replace(
        spec.plan, robustness=Robustness(shift=shift, common=common or {}, draws=draws)))
    return plain, robust, _records(spec)


def test_perturbed_values_move_each_run_by_its_shift_and_each_seed_together_and_leave_censored_runs():
    from rl.studies.analysis import collect, perturbed_values
    from rl.studies.plan import Robustness

    plain, _, records = _robust_study({})
    data = collect(records, plain)
    rob = Robustness(shift={"auc": 0.01}, common={"auc": 0.1, "samples_to_0.6": 5.0}, draws=1)
    a, b = perturbed_values(data, rob, 0), perturbed_values(data, rob, 0)
    other = perturbed_values(data, rob, 1)
    moved = {}
    for cell, by_v in data.values.items():
        for v, by_s in by_v.items():
            for s, ev in by_s.items():
                d = a.values[cell][v][s]["auc"].value - ev["auc"].value
                # +-0.01 of its own and +-0.1 shared by the seed: one of four sums
                assert min(abs(d - x) for x in (0.11, 0.09, -0.09, -0.11)) < 1e-12
                moved.setdefault(s, set()).add(math.copysign(1.0, d))  # |common| > |own|: d's sign is the seed's
                t0, t1 = ev["samples_to_0.6"], a.values[cell][v][s]["samples_to_0.6"]
                assert t1 == t0 if t0.censored else abs(abs(t1.value - t0.value) - 5.0) < 1e-9
                assert ev["final"] == a.values[cell][v][s]["final"]  # no size declared: unchanged
                assert a.values[cell][v][s] == b.values[cell][v][s]   # one draw, one stream
    # the common part is one sign per seed: every run of a seed carries the same +-0.1
    assert all(len(ms) == 1 for ms in moved.values())
    assert any(other.values[c][v][s]["auc"] != a.values[c][v][s]["auc"]
               for c in data.values for v in data.values[c] for s in data.values[c][v])


def test_a_negligible_perturbation_leaves_every_verdict_and_a_large_one_makes_them_fragile_not_reversed():
    from rl.studies import analysis

    plain, robust, records = _robust_study({"auc": 1e-9, "final": 1e-9, "drawdown": 1e-9, "samples_to_0.6": 1e-6})
    before = {f.id: f.verdict for f in analysis.analyze(records, plain).findings}
    after = analysis.analyze(records, robust).findings
    assert {f.id: f.verdict for f in after} == before
    assert not any("fragile" in t.note for f in after for t in f.tests)

    margins = {e: 3 * plain.plan.endpoints[e].margin for e in ("auc", "final", "drawdown", "samples_to_0.6")}
    _, loud, _ = _robust_study(margins)
    found = {f.id: f for f in analysis.analyze(records, loud).findings}
    directional = {"better", "worse", "increasing", "decreasing", "optimum"}
    fragile = [f for f in found.values() if any("fragile" in t.note for t in f.tests)]
    assert fragile, "a perturbation of 3 margins must move some verdict"
    for f in fragile:
        for t in f.tests:
            if "fragile" in t.note:
                assert t.verdict == "inconclusive"
        # a verdict may only fall back to inconclusive (or keep its direction), never turn around
        if before[f.id] in directional and f.verdict in directional:
            assert f.verdict == before[f.id]
        assert any("fragile under the declared cross-machine perturbation" in n for n in f.notes)


@pytest.mark.parametrize("table, match", [
    ({"shift": {"nope": 0.1}}, "unknown endpoints"),
    ({"shift": {"auc": -0.1}}, "size >= 0"),
    ({"draws": 0}, "draws"),
    ({"shift": [0.1]}, "map endpoint names"),
    ({"seeds": 3}, "robustness"),
])
def test_a_bad_robustness_table_is_named(table, match):
    from rl.studies.plan import parse_plan

    data = {"endpoints": {"auc": {"kind": "mean", "margin": 0.01}}, "robustness": table}
    with pytest.raises(ValueError, match=match):
        parse_plan(data, metric="exact_reward", alpha=0.05, canonical=lambda v: v)

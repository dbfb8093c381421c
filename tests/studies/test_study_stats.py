"""Statistics of rl.studies.stats on data whose answers are known in closed form."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rl.studies.stats import (analyze, bootstrap_ci, cliffs_delta, compare, compare_counts, compare_spread,
                              curve_band, final_value, grad_spikes, hedges_g, holm, is_collapsed,
                              moving_average, steps_to_threshold)
from rl.studies.runner import columns
from rl.studies.synthetic import run as synthetic_run


def test_bootstrap_ci_covers_the_true_mean_at_about_the_nominal_rate():
    # 400 independent experiments (columns) of n = 30 normal draws with known mean 1.5.
    # The percentile bootstrap under-covers slightly at small n (about 0.93-0.94 at n = 30);
    # with 400 experiments the binomial sd of the coverage is 0.011, so [0.90, 0.98] fails by
    # chance with probability < 1e-3 if the true coverage is anywhere in 0.92-0.96.
    rng = np.random.default_rng(7)
    x = rng.normal(1.5, 2.0, size=(30, 400))
    mean, lo, hi = bootstrap_ci(x, n_resamples=1000)
    coverage = float(np.mean((lo <= 1.5) & (1.5 <= hi)))
    assert 0.90 <= coverage <= 0.98, coverage
    np.testing.assert_allclose(mean, x.mean(axis=0))
    assert np.all(lo <= mean) and np.all(mean <= hi)
    # the half-width is about 1.96 sigma / sqrt(n) = 0.716 on average
    assert 0.6 < float(np.mean(hi - lo)) / 2 < 0.8


def test_bootstrap_ci_with_missing_values_covers_too():
    # the NaN-aware path (runs stopped early): same coverage check on columns with gaps
    rng = np.random.default_rng(8)
    x = rng.normal(-0.5, 1.0, size=(30, 300))
    x[rng.random(x.shape) < 0.2] = np.nan
    mean, lo, hi = bootstrap_ci(x, n_resamples=1000)
    coverage = float(np.mean((lo <= -0.5) & (-0.5 <= hi)))
    assert 0.88 <= coverage <= 0.98, coverage
    np.testing.assert_allclose(mean, np.nanmean(x, axis=0))


def test_bootstrap_ci_edge_cases():
    m, lo, hi = bootstrap_ci([2.0, 2.0, 2.0])
    assert (m, lo, hi) == (2.0, 2.0, 2.0)
    m, lo, hi = bootstrap_ci([3.0])
    assert m == 3.0 and math.isnan(lo) and math.isnan(hi)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=1.5)
    band = curve_band([[0.0, 1.0, 2.0], [0.0, 3.0]])
    assert band["n"].tolist() == [2, 2, 1]
    assert band["mean"].tolist() == [0.0, 2.0, 2.0]


def test_holm_on_known_p_values():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])          # capped at 1
    out = holm([0.01, float("nan"), 0.02])                                # NaN not counted in m
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.02])
    assert math.isnan(out[1])
    assert holm([]).size == 0
    with pytest.raises(ValueError, match="p-values"):
        holm([0.1, 1.2])


def test_steps_to_threshold_on_a_synthetic_curve():
    t = np.arange(60)
    x = 1 - np.exp(-t / 10)
    # window 1: 1 - exp(-t/10) >= 0.5  <=>  t >= 10 ln 2 = 6.93
    assert steps_to_threshold(x, 0.5, window=1) == 7.0
    # window 5 (t >= 4): mean_{s=t-4..t} = 1 - exp(-t/10) c, c = (1/5) sum_k exp(k/10) = 1.2337,
    # >= 0.5  <=>  t >= 10 ln(2c) = 9.03, so the first step is 10
    c = np.mean(np.exp(np.arange(5) / 10))
    assert math.ceil(10 * math.log(2 * c)) == 10
    assert steps_to_threshold(x, 0.5, window=5) == 10.0
    assert steps_to_threshold(x, 2.0) == math.inf                       # never: censored
    assert steps_to_threshold(x, 0.5, window=1, steps=t * 10) == 70.0   # reported in the given units
    np.testing.assert_allclose(moving_average([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(moving_average([1, np.nan, 3], 2), [1, 1, 3])


def test_final_value_spikes_and_collapse():
    assert final_value(np.arange(100.0)) == np.mean(np.arange(90.0, 100.0))
    assert final_value([1.0, 2.0]) == 1.5
    assert math.isnan(final_value([]))
    g = np.ones(50)
    g[[3, 40]] = 50.0
    g[10] = np.nan
    assert grad_spikes(g, factor=10) == 2
    rise = np.minimum(np.arange(40) / 20, 1.0)
    assert not is_collapsed(rise)
    fall = np.concatenate([rise, np.zeros(20)])
    assert is_collapsed(fall)
    assert is_collapsed(np.concatenate([rise, 0.45 * np.ones(20)]))    # lost more than half its gain
    assert not is_collapsed(np.zeros(30))               # never learned: cannot collapse
    assert is_collapsed(np.append(rise, np.nan))         # ended non-finite
    assert is_collapsed(np.linspace(0.3, 0.02, 60))      # a warm start that RL drove down
    plateau = 0.9 + 0.02 * np.sin(np.arange(80))         # noise on a plateau is not a collapse
    assert not is_collapsed(np.concatenate([rise * 0.9, plateau]))
    assert not is_collapsed(np.concatenate([rise, 0.8 * np.ones(20)]))  # lost 0.2 of a gain of 1: < half


def test_effect_sizes_known_values():
    # d = (2 - 5) / 1 = -3; J = 1 - 3 / (4 * 6 - 9) = 0.8
    assert hedges_g([1, 2, 3], [4, 5, 6]) == pytest.approx(-2.4)
    assert cliffs_delta([1, 2, 3], [4, 5, 6]) == -1.0
    assert cliffs_delta([1, 5], [3, 3]) == 0.0
    assert cliffs_delta([math.inf], [1.0]) == 1.0


def test_permutation_test_exact_p_for_complete_separation():
    # 5 vs 5 with every x above every y: the observed split is the most extreme of C(10,5) = 252,
    # and so is its mirror image: two-sided p = 2/252
    c = compare([10, 11, 12, 13, 14], [0, 1, 2, 3, 4])
    assert c.test == "permutation (exact)"
    assert c.p_value == pytest.approx(2 / 252)
    assert c.min_attainable_p == pytest.approx(2 / 252)
    same = compare([1, 2, 3, 4, 5], [5, 4, 3, 2, 1])
    assert same.test == "identical" and same.p_value == 1.0
    cens = compare([math.inf] * 5, [3, 4, 5, 6, 7], higher_is_better=False)
    assert cens.test == "Mann-Whitney U" and cens.p_value < 0.05 and cens.cliffs_delta == 1.0
    assert compare([1.0], [2.0, 3.0]).test == "n<2"


def test_permutation_test_false_positive_rate_under_the_null():
    # 200 null experiments of 5 vs 5 normal draws: the test rejects at 0.05 in at most 5% of
    # them in expectation (exact test, discrete: a little less). P(>= 20 rejections | rate 0.05)
    # is 0.0016, the false-failure rate of this test.
    rng = np.random.default_rng(11)
    rejections = sum(compare(rng.normal(size=5), rng.normal(size=5)).p_value <= 0.05 for _ in range(200))
    assert rejections < 20, rejections
    # and it has power against a large effect (2 sd): most experiments reject
    power = sum(compare(rng.normal(2.5, 1, size=5), rng.normal(size=5)).p_value <= 0.05 for _ in range(50))
    assert power >= 35, power


def test_spread_and_count_comparisons():
    rng = np.random.default_rng(3)
    wide, narrow = rng.normal(0, 5, size=30), rng.normal(0, 0.5, size=30)
    c = compare_spread(narrow, wide)
    assert c.p_value < 1e-3 and c.diff < 0
    assert compare_spread([1, 2, 3], [3, 2, 1]).test == "identical"
    f = compare_counts(0, 10, 10, 10)
    # Fisher exact, all vs none of 10: p = 2 / C(20, 10)
    assert f.p_value == pytest.approx(2 / math.comb(20, 10))


def _records(effect: float, tmp: Path, seeds: int = 5, steps: int = 40) -> list[dict]:
    """Results records of synthetic runs whose learning rate is rate * (1 + effect * p)."""
    recs = []
    for variant, p in (("p=1", 1.0), ("p=0", 0.0), ("p=-1", -1.0)):
        for s in range(seeds):
            cfg = {"steps": steps, "seed": s, "p": p, "level": "sequence", "synthetic_effect": effect,
                   "synthetic_noise": 0.01}
            work = tmp / f"{variant}-{s}-{effect}"
            work.mkdir()
            out = synthetic_run(cfg, work)
            recs.append({"run_id": f"{variant}-{s}", "variant": variant, "seed": s, "cell": {"env": "toy"},
                         "status": "ok", "metrics": columns(out["metrics"]), "wall_s": 0.1})
    return recs


def test_analyze_finds_a_built_in_effect_and_no_effect_where_there_is_none(tmp_path):
    # synthetic learning rate rate * (1 + effect * p): with effect 0.9, p = -1 learns at 10% of
    # the baseline's speed and p = 1 at 190%
    a = analyze(_records(0.9, tmp_path), metric="exact_reward", baseline="p=0")
    verdicts = {(c.variant, c.metric): c.verdict for c in a.comparisons}
    assert verdicts[("p=-1", "final")] == "worse"
    assert verdicts[("p=-1", "auc")] == "worse"
    assert verdicts[("p=1", "auc")] == "better"
    assert verdicts[("p=-1", "steps_to_threshold")] == "worse"
    # effect 0: identical runs seed for seed
    b = analyze(_records(0.0, tmp_path), metric="exact_reward", baseline="p=0")
    assert {c.verdict for c in b.comparisons if c.metric in ("final", "auc", "final_spread")} == {"identical"}
    with pytest.raises(ValueError, match="no metric"):
        analyze(_records(0.5, tmp_path, seeds=1), metric="nonexistent")


def test_interaction_test_known_answers():
    from rl.studies.stats import interaction_test

    # 5 vs 5 per-seed differences, every one at level "4x4" below every one at "1x1": exact p = 2/252
    test, p = interaction_test({"1x1": [0.0, 0.0, 0.0, 0.0, 0.0], "4x4": [-0.3, -0.2, -0.25, -0.4, -0.1]})
    assert test == "permutation (exact)" and p == pytest.approx(2 / 252)
    assert interaction_test({"a": [1.0, 2.0], "b": [2.0, 1.0]}) == ("identical", 1.0)
    test, p = interaction_test({"2": [0.1, 0.2, 0.3], "4": [1.1, 1.2, 1.3], "6": [2.1, 2.2, 2.3]})
    assert test == "Kruskal-Wallis" and p < 0.05
    assert interaction_test({"a": [1.0], "b": [2.0, 3.0]})[0] == "n<2"


def test_ledger_evidence_maps_findings_to_the_ledger_study_names():
    from rl.studies.report import LEDGER_STUDIES, ledger_evidence

    findings = {"bandit": {"claims": [
        {"id": "hmpo-more-stable-than-gspo", "verdict": "not separated", "figure": "figures/final_by_variant.png"},
        {"id": "sequence-length-effect", "verdict": "supported", "figure": None},
        {"id": "learnable-p-vs-gspo", "verdict": "not measured"}]}}
    ev = ledger_evidence(findings)
    assert ev["stability"]["verdict"] == "not separated"
    assert ev["stability"]["figures"] == ["bandit/figures/final_by_variant.png"]
    assert ev["sequence-length"]["verdict"] == "supported"
    assert "learnable-p" not in ev                                  # not measured: stays open in the ledger
    assert set(ev) <= set(LEDGER_STUDIES)

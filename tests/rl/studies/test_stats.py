"""rl.studies.stats against independent references: scipy's permutation tests, Wilcoxon and
Mann-Whitney, brute-force enumeration, the noncentral t, and coverage on data whose mean is known."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from rl.studies.stats import (_bootstrap_missing, bootstrap_ci, cliffs_delta, curve_band, final_value, hedges_g,
                              holm, mann_whitney_test, mean_ci, moving_average, page_trend, permutation_test,
                              power_paired, sign_flip_test, signed_rank_test, tost)


# ----------------------------------------------------------------------------- paired tests

@pytest.mark.parametrize("n", [2, 5, 8, 12])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_sign_flip_test_is_scipys_exact_paired_permutation_test(n, alternative):
    rng = np.random.default_rng(n)
    d = np.round(rng.normal(0.3, 1.0, size=n), 1)  # rounding makes ties and |d| repeats
    ref = sps.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf,
                               alternative=alternative).pvalue
    r = sign_flip_test(d, alternative=alternative)
    assert r.exact and r.mc_error == 0.0
    assert r.p == pytest.approx(ref, rel=1e-12)


def test_sign_flip_test_extremes_and_monte_carlo_beyond_16():
    # all 8 differences negative: only the observed pattern and its mirror are as extreme
    r = sign_flip_test(-np.arange(1.0, 9.0))
    assert r.p == r.min_p == pytest.approx(2 / 256)
    assert sign_flip_test(np.zeros(6)).p == 1.0          # every pattern ties with the observed one
    # n = 20: 2^20 patterns are not enumerated; the estimate keeps its stated error against the
    # exact p, enumerated here in blocks of 2^16 patterns
    d = np.random.default_rng(3).normal(0.45, 1.0, size=20)
    r = sign_flip_test(d)
    low = (np.arange(2**16)[:, None] >> np.arange(16)) & 1
    block = (1 - 2 * low) @ d[:16]
    extreme = 0
    for hi in range(2**4):
        rest = (1 - 2 * ((hi >> np.arange(4)) & 1)) @ d[16:]
        extreme += int(np.sum(np.abs(block + rest) >= abs(d.sum()) - 1e-9))
    ref = extreme / 2**20
    assert not r.exact and 0 < r.mc_error < 0.002
    # 4.5 standard errors: a false failure has probability < 1e-5
    assert abs(r.p - ref) < 4.5 * r.mc_error + 1e-12, (r.p, ref, r.mc_error)
    with pytest.raises(ValueError, match="finite"):
        sign_flip_test([1.0, np.nan])
    with pytest.raises(ValueError, match="alternative"):
        sign_flip_test([1.0], alternative="both")


def _signed_rank_brute(d: np.ndarray) -> float:
    a = d[d != 0]
    r = sps.rankdata(np.abs(a))
    obs = float(np.sum(np.sign(a) * r))
    null = [float(np.dot(s, r)) for s in itertools.product([-1.0, 1.0], repeat=a.size)]
    return float(np.mean(np.abs(null) >= abs(obs) - 1e-9))


def test_signed_rank_test_is_wilcoxons_exact_test_and_handles_ties_and_zeros():
    rng = np.random.default_rng(5)
    d = rng.normal(0.5, 1.0, size=9)                       # no ties: scipy's exact distribution
    assert signed_rank_test(d).p == pytest.approx(sps.wilcoxon(d, method="exact").pvalue, rel=1e-12)
    tied = np.array([0.0, 1.0, -1.0, 2.0, 2.0, 3.0, 0.5, 0.5, -0.5])
    assert signed_rank_test(tied).p == pytest.approx(_signed_rank_brute(tied), rel=1e-12)
    assert signed_rank_test(np.zeros(4)).p == 1.0


def test_tost_rejects_only_inside_the_margin():
    small = np.array([0.01, -0.02, 0.0, 0.015, -0.01, 0.02, -0.005, 0.01])
    r = tost(small, 0.1)
    assert r.p == pytest.approx(1 / 256)                    # every d - 0.1 < 0 and every d + 0.1 > 0
    # the equivalent interval statement: the sign-flip tests of d +- margin, one-sided
    lo = sign_flip_test(small + 0.1, alternative="greater").p
    hi = sign_flip_test(small - 0.1, alternative="less").p
    assert r.p == max(lo, hi)
    assert tost(small + 0.2, 0.1).p == 1.0                 # entirely beyond the margin
    with pytest.raises(ValueError, match="margin"):
        tost(small, 0.0)


def test_power_paired_matches_a_simulated_t_test_and_is_zero_when_the_exact_test_cannot_reject():
    n, sd, margin, alpha = 10, 1.0, 0.8, 0.05
    rng = np.random.default_rng(11)
    x = rng.normal(margin, sd, size=(20000, n))
    sim = np.mean(sps.ttest_1samp(x, 0.0, axis=1).pvalue <= alpha)
    # binomial sd of the simulated power <= 0.0036: 4 sd
    assert power_paired(n, sd, margin, alpha) == pytest.approx(sim, abs=0.015)
    assert power_paired(5, 1.0, 10.0, 0.05) == 0.0          # 2 / 2^5 = 0.0625 > 0.05
    assert power_paired(8, 1.0, 10.0, 0.05, min_p=0.1) == 0.0
    assert power_paired(8, 0.0, 1.0, 0.05) == 1.0
    assert power_paired(8, 1.0, 1e6, 0.01) == 1.0            # no NaN from the far tail


@pytest.mark.parametrize("n", [8, 16])
@pytest.mark.parametrize("dist", ["normal", "gamma4"])
def test_mean_ci_covers_at_its_nominal_rate_on_normal_and_skewed_data(n, dist):
    # 2000 experiments per case. The bootstrap-t interval's coverage, measured over 20000 experiments
    # with 999 resamples, is 0.941-0.950 in these cases (gamma(4) has skewness 1; the t interval gives
    # 0.933 there at n = 8, the percentile bootstrap 0.89 at n = 8 on normal data). The binomial sd of
    # a coverage of 0.941 over 2000 experiments is 0.0053, so [0.92, 0.97] fails by chance with
    # probability < 1e-4 per case.
    rng = np.random.default_rng(100 + n)
    if dist == "normal":
        x, mu = rng.normal(1.0, 2.0, size=(2000, n)), 1.0
    else:
        x, mu = rng.gamma(4.0, 1.0, size=(2000, n)), 4.0
    lo, hi = mean_ci(x, n_resamples=999)
    coverage = float(np.mean((lo <= mu) & (mu <= hi)))
    assert 0.92 <= coverage <= 0.97, coverage
    one = mean_ci(x[0], n_resamples=999)
    assert isinstance(one[0], float) and one[0] < x[0].mean() < one[1]


def test_mean_ci_degenerate_cases():
    assert mean_ci([2.0, 2.0, 2.0, 2.0]) == (2.0, 2.0)
    lo, hi = mean_ci([1.0, 2.0])
    assert math.isnan(lo) and math.isnan(hi)
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0, 3.0], confidence=1.0)


# ----------------------------------------------------------------------------- unpaired and trend

def test_permutation_test_is_scipys_exact_independent_test():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=6), rng.normal(1.0, 1.0, size=7)
    for alt in ("two-sided", "greater", "less"):
        ref = sps.permutation_test((x, y), lambda a, b, axis: a.mean(axis) - b.mean(axis), n_resamples=np.inf,
                                   alternative=alt).pvalue
        assert permutation_test(x, y, alternative=alt).p == pytest.approx(ref, rel=1e-12)
    # 5 vs 5 with every x above every y: two-sided p = 2 / C(10, 5)
    r = permutation_test([10, 11, 12, 13, 14], [0, 1, 2, 3, 4])
    assert r.p == r.min_p == pytest.approx(2 / 252) and r.statistic == 10.0
    big = permutation_test(rng.normal(size=12), rng.normal(size=12))   # C(24, 12) > 2^16: Monte Carlo
    assert not big.exact and big.mc_error > 0


def test_mann_whitney_test_is_exact_with_ties():
    x = np.array([3, 4, 4, 5, 6, 6, 7, 9.0])
    y = np.array([5, 6, 6, 7, 8, 8, 9, 9.0])
    ref = sps.mannwhitneyu(x, y, method=sps.PermutationMethod(n_resamples=np.inf)).pvalue
    r = mann_whitney_test(x, y)
    assert r.exact and r.p == pytest.approx(ref, rel=1e-12)
    assert r.statistic == sps.mannwhitneyu(x, y).statistic
    # the normal approximation scipy's default falls back to here is another number
    assert abs(sps.mannwhitneyu(x, y).pvalue - r.p) > 1e-3
    cens = mann_whitney_test([math.inf] * 5, [3, 4, 5, 6, 7])
    assert cens.p == pytest.approx(2 / 252)


def test_page_trend_is_two_sided_and_names_the_direction():
    rng = np.random.default_rng(9)
    tab = np.arange(4)[None, :] * 0.5 + rng.normal(0, 0.3, size=(8, 4))
    p, direction = page_trend(tab)
    assert direction == "increasing" and p == pytest.approx(2 * sps.page_trend_test(tab).pvalue)
    p2, d2 = page_trend(tab[:, ::-1])
    assert d2 == "decreasing" and p2 == pytest.approx(p)
    with pytest.raises(ValueError, match="levels >= 3"):
        page_trend(tab[:, :2])


# ----------------------------------------------------------------------------- Holm and descriptive

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


def test_bootstrap_missing_value_path_has_the_complete_data_width_on_complete_data():
    # The NaN-aware path run on data without gaps must give the complete-data (scipy) path's
    # intervals: same method, other random resamples. Over 300 columns of n = 20 the mean width
    # ratio has a Monte Carlo sd below 0.5%; a 90% interval (quantiles at (1 - c) instead of
    # (1 - c)/2) would be 16% narrower (1.645 / 1.96), far outside [0.97, 1.03].
    rng = np.random.default_rng(12)
    x = rng.normal(0.0, 1.0, size=(20, 300))
    _, lo, hi = bootstrap_ci(x, n_resamples=2000)
    lo2, hi2 = _bootstrap_missing(x, 0.95, 2000, seed=1)
    ratio = float(np.mean(hi2 - lo2) / np.mean(hi - lo))
    assert 0.97 < ratio < 1.03, ratio


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


def test_moving_average_and_final_value():
    np.testing.assert_allclose(moving_average([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(moving_average([1, np.nan, 3], 2), [1, 1, 3])
    assert final_value(np.arange(100.0)) == np.mean(np.arange(90.0, 100.0))
    assert final_value([1.0, 2.0]) == 1.5
    assert math.isnan(final_value([]))


def test_effect_sizes_known_values():
    # d = (2 - 5) / 1 = -3; J = 1 - 3 / (4 * 6 - 9) = 0.8
    assert hedges_g([1, 2, 3], [4, 5, 6]) == pytest.approx(-2.4)
    assert cliffs_delta([1, 2, 3], [4, 5, 6]) == -1.0
    assert cliffs_delta([1, 5], [3, 3]) == 0.0
    assert cliffs_delta([math.inf], [1.0]) == 1.0

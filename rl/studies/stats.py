"""Statistics of a study: pure functions over arrays, each with its definition and reference.

Paired designs first: the trainer uses common random numbers (a seed gives every variant the
same initialisation and random stream), so variants are compared through per-seed
differences ``d_s = x_s - y_s``, one value per seed.

- :func:`sign_flip_test`: exact permutation test of the mean of ``d`` under sign flips (H0:
  the distribution of ``d`` is symmetric about 0), exact over all 2^n sign patterns up to
  n = 16, Monte Carlo beyond with its standard error stated (Fisher 1935; Good 2005, ch. 3).
- :func:`signed_rank_test`: Wilcoxon's signed-rank test by the same exact enumeration over the
  midranks of |d| (zeros dropped), so ties are handled exactly (a check on the sign-flip test).
- :func:`mean_ci`: interval for the mean of ``d`` by the studentized (bootstrap-t) bootstrap,
  second-order accurate for skewed data (Efron & Tibshirani 1993, ch. 12; Hall 1988).
- :func:`tost`: two one-sided sign-flip tests of ``|mean d| < margin`` (Schuirmann 1987).
- :func:`power_paired`: the power of the two-sided paired test to detect a mean difference of
  ``margin``, from the noncentral t with the observed SD; 0 where the exact sign-flip test
  cannot reach the level at all.
Unpaired, only where runs are not paired: :func:`permutation_test` (difference in means) and
:func:`mann_whitney_test` (U on midranks), both exact by enumeration of the splits when there
are at most 2^16 of them, Monte Carlo beyond. Trends over an ordered factor (the p-sweep):
:func:`page_trend` (Page 1963, scipy.stats.page_trend_test), two-sided. Multiplicity:
:func:`holm` (Holm 1979). Descriptive: :func:`bootstrap_ci` and :func:`curve_band`
(percentile bootstrap over seeds, for bands on curves), Hedges' g, Cliff's delta.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

__all__ = [
    "EXACT_MAX_PATTERNS",
    "TestResult",
    "sign_flip_test",
    "signed_rank_test",
    "mean_ci",
    "tost",
    "power_paired",
    "permutation_test",
    "mann_whitney_test",
    "page_trend",
    "holm",
    "bootstrap_ci",
    "curve_band",
    "moving_average",
    "final_value",
    "hedges_g",
    "cliffs_delta",
]

#: at most this many sign patterns (2^16, n <= 16) or splits are enumerated; beyond, Monte Carlo
EXACT_MAX_PATTERNS = 2**16
#: Monte Carlo draws beyond the exact limit: the p-value's standard error is <= 0.5/sqrt(B) = 0.002
MC_RESAMPLES = 2**16
_RNG_SEED = 20240917  # fixed: the same data give the same intervals and p-values
_ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class TestResult:
    """One test's outcome: the p-value, whether it is exact, the Monte Carlo standard error of
    p (0 when exact) and the smallest p the test could give on these sample sizes."""

    statistic: float
    p: float
    exact: bool
    mc_error: float
    min_p: float


def _check_alternative(alternative: str) -> None:
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative must be one of {_ALTERNATIVES}, got {alternative!r}")


def _finite_1d(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite; entry {int(np.flatnonzero(~np.isfinite(a))[0])} is {a[~np.isfinite(a)][0]}")
    return a


@functools.lru_cache(maxsize=None)
def _sign_patterns(n: int) -> np.ndarray:
    """All 2^n patterns of +-1 as a [2^n, n] array; row 0 is all +1 (the observed labelling).
    Cached (at most 17 arrays, the largest 8 MB) and read-only."""
    bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
    out = 1.0 - 2.0 * bits
    out.setflags(write=False)
    return out


def _tail_p(null: np.ndarray, observed: float, scale: float, alternative: str) -> float:
    # Sums of the same terms in another order differ by rounding (at most ~n eps sum|d|): values
    # within 100 eps of the observed statistic count as ties, as in scipy.stats.permutation_test.
    tol = 100 * np.finfo(float).eps * scale
    if alternative == "greater":
        return float(np.mean(null >= observed - tol))
    if alternative == "less":
        return float(np.mean(null <= observed + tol))
    return float(np.mean(np.abs(null) >= abs(observed) - tol))


def _sign_flip(values: np.ndarray, alternative: str, seed: int) -> TestResult:
    n = values.size
    obs = float(values.sum())
    scale = float(np.abs(values).sum())
    if n == 0:
        return TestResult(0.0, 1.0, True, 0.0, 1.0)
    if 2**n <= EXACT_MAX_PATTERNS:
        null = _sign_patterns(n) @ values
        p = _tail_p(null, obs, scale, alternative)
        return TestResult(obs, p, True, 0.0, (1 if alternative != "two-sided" else 2) / 2**n)
    rng = np.random.default_rng(seed)
    flips = rng.choice([-1.0, 1.0], size=(MC_RESAMPLES, n))
    null = np.concatenate([[obs], flips @ values])  # the observed labelling is one of the draws
    p = _tail_p(null, obs, scale, alternative)
    return TestResult(obs, p, False, math.sqrt(p * (1 - p) / MC_RESAMPLES), 1 / (MC_RESAMPLES + 1))


def sign_flip_test(d: Sequence[float], *, alternative: str = "two-sided", seed: int = _RNG_SEED) -> TestResult:
    """Permutation test of the mean of paired differences by sign flips.

    Statistic S = sum_s d_s. Under H0 (each d_s is symmetric about 0: the two variants are
    exchangeable within a seed) every pattern of signs e_s in {-1, +1} is equally likely, so
    p = #{e : S(e) >= S} / 2^n ("greater"), #{S(e) <= S} ("less") or #{|S(e)| >= |S|}
    (two-sided), the observed pattern included. Exact for n <= 16 (2^16 patterns); beyond, the
    same with 2^16 random patterns and ``mc_error`` = sqrt(p (1 - p) / 2^16). The smallest
    attainable p is 2 / 2^n two-sided (1/128 at n = 8). Domain: finite d.
    """
    _check_alternative(alternative)
    return _sign_flip(_finite_1d(d, "d"), alternative, seed)


def _midranks(a: np.ndarray) -> np.ndarray:
    return sps.rankdata(a, method="average")


def signed_rank_test(d: Sequence[float], *, alternative: str = "two-sided", seed: int = _RNG_SEED) -> TestResult:
    """Wilcoxon's signed-rank test with exact handling of ties and zeros.

    Zeros are dropped (Wilcoxon's convention); the remaining |d| get midranks R_s; the
    statistic sum_s sign(d_s) R_s is referred to its exact distribution over the 2^n sign
    patterns (n <= 16, else Monte Carlo as in :func:`sign_flip_test`). Without ties and zeros
    this is scipy.stats.wilcoxon(method="exact"). Reference: Wilcoxon (1945); Pratt (1959).
    """
    _check_alternative(alternative)
    a = _finite_1d(d, "d")
    a = a[a != 0]
    if a.size == 0:
        return TestResult(0.0, 1.0, True, 0.0, 1.0)
    return _sign_flip(np.sign(a) * _midranks(np.abs(a)), alternative, seed)


def _check_bootstrap(confidence: float, n_resamples: int, least: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < least:
        raise ValueError(f"n_resamples must be >= {least}, got {n_resamples}")


def mean_ci(d: Sequence[float] | np.ndarray, *, confidence: float = 0.95, n_resamples: int = 4999,
            seed: int = _RNG_SEED) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Studentized-bootstrap (bootstrap-t) interval for the mean of ``d`` over its last axis.

    With mean m, SD s and T*_b = (m*_b - m) / (s*_b / sqrt(n)) over bootstrap resamples b, the
    interval is [m - q_{1-a/2} s / sqrt(n), m - q_{a/2} s / sqrt(n)], q the quantiles of T*
    (a = 1 - confidence). Resamples with s*_b = 0 have no T* and are left out. Second-order
    accurate, so it keeps its coverage on skewed data where the t interval does not (measured at
    n = 8 over 20 000 experiments, 999 resamples: 0.941 on gamma(4) data, skewness 1, where the t
    interval gives 0.933; 0.934 against 0.893 on exponential data, skewness 2; 0.947 on normal
    data; at n = 16: 0.947, 0.948, 0.950). A constant
    sample gives the zero-width interval [d, d]; fewer than 3 values give NaN. ``d`` of shape
    [..., n] gives one interval per leading index (vectorised). Reference: Efron & Tibshirani
    (1993) An Introduction to the Bootstrap, ch. 12.5; Hall (1988) Ann. Statist. 16:927-953.
    """
    _check_bootstrap(confidence, n_resamples, 99)
    a = np.asarray(d, dtype=float)
    scalar = a.ndim == 1
    a = np.atleast_2d(a)
    if not np.isfinite(a).all():
        raise ValueError("mean_ci: d must be finite")
    lead, n = a.shape[:-1], a.shape[-1]
    flat = a.reshape(-1, n)
    lo = np.full(flat.shape[0], np.nan)
    hi = np.full(flat.shape[0], np.nan)
    if n >= 3:
        m = flat.mean(-1)
        s = flat.std(-1, ddof=1)
        const = s == 0
        lo[const] = hi[const] = m[const]
        rows = np.flatnonzero(~const)
        rng = np.random.default_rng(seed)
        alpha = 1 - confidence
        chunk = max(1, 4_000_000 // (n_resamples * n))  # bounded memory: ~32 MB of resamples at a time
        for start in range(0, rows.size, chunk):
            r = rows[start:start + chunk]
            idx = rng.integers(0, n, size=(n_resamples, n))
            xb = (flat[r] - m[r, None])[:, idx]        # [rows, B, n], centred: sums of squares stay accurate
            mb = xb.mean(-1)
            sb = np.sqrt(np.maximum((xb * xb).sum(-1) - n * mb * mb, 0.0) / (n - 1))
            mb = mb + m[r, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.where(sb > 0, (mb - m[r, None]) / (sb / math.sqrt(n)), np.nan)
            if r.size == 1:  # one sample (the common case): plain quantiles of the finite T*, much faster
                q_lo, q_hi = np.quantile(t[0][np.isfinite(t[0])], [alpha / 2, 1 - alpha / 2])
            else:
                q_hi = np.nanquantile(t, 1 - alpha / 2, axis=-1)
                q_lo = np.nanquantile(t, alpha / 2, axis=-1)
            se = s[r] / math.sqrt(n)
            lo[r], hi[r] = m[r] - q_hi * se, m[r] - q_lo * se
    lo, hi = lo.reshape(lead), hi.reshape(lead)
    if scalar:
        return float(lo[0]), float(hi[0])
    return lo, hi


def tost(d: Sequence[float], margin: float, *, seed: int = _RNG_SEED) -> TestResult:
    """Two one-sided tests of equivalence: H0 mean(d) <= -margin or mean(d) >= +margin.

    p = max(p_low, p_high), p_low the sign-flip test of d + margin against "greater" and p_high
    that of d - margin against "less"; rejecting at alpha means the mean difference lies within
    (-margin, margin) at level alpha (equivalently, the 1 - 2 alpha interval lies inside).
    Reference: Schuirmann (1987) J. Pharmacokin. Biopharm. 15:657-680. Domain: margin > 0.
    """
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin > 0):
        raise ValueError(f"tost: margin must be a positive number, got {margin!r}")
    a = _finite_1d(d, "d")
    lo = _sign_flip(a + margin, "greater", seed)
    hi = _sign_flip(a - margin, "less", seed)
    worst = lo if lo.p >= hi.p else hi
    return TestResult(float(a.mean()) if a.size else 0.0, worst.p, lo.exact and hi.exact,
                      max(lo.mc_error, hi.mc_error), worst.min_p)


def power_paired(n: int, sd: float, margin: float, alpha: float, *, min_p: float | None = None) -> float:
    """Power of the two-sided paired test at level ``alpha`` to detect a mean difference of
    ``margin`` when the per-seed differences have SD ``sd``.

    Noncentral t: power = P(|T_{n-1}(delta)| > t_{1-alpha/2, n-1}), delta = margin sqrt(n) / sd
    (the sign-flip test's large-sample equivalent); 0 when the exact test cannot reach ``alpha``
    (its smallest attainable p, ``min_p``, default the sign-flip test's 2 / 2^n, is above it);
    1 when sd = 0 and margin > 0. Reference: Cohen (1988) Statistical Power Analysis, ch. 2.
    """
    if n < 2 or not math.isfinite(sd) or not math.isfinite(margin):
        return float("nan")
    if (2.0 / 2**n if min_p is None else min_p) > alpha:
        return 0.0
    if sd == 0:
        return 1.0 if margin > 0 else float("nan")
    delta = abs(margin) * math.sqrt(n) / sd
    crit = sps.t.ppf(1 - alpha / 2, n - 1)
    # the lower tail is below 1e-300 for large delta, where scipy's nct.cdf returns NaN
    lower = sps.nct.cdf(-crit, n - 1, delta)
    return float(min(1.0, sps.nct.sf(crit, n - 1, delta) + (lower if math.isfinite(lower) else 0.0)))


def _splits(n_x: int, n_y: int, seed: int) -> tuple[np.ndarray, bool]:
    """Boolean [k, n_x + n_y] rows marking which units form the first sample: every split when
    there are at most EXACT_MAX_PATTERNS, else random ones (the observed split first)."""
    import itertools

    n = n_x + n_y
    observed = np.zeros(n, dtype=bool)
    observed[:n_x] = True
    if math.comb(n, n_x) <= EXACT_MAX_PATTERNS:
        rows = np.zeros((math.comb(n, n_x), n), dtype=bool)
        for i, c in enumerate(itertools.combinations(range(n), n_x)):
            rows[i, list(c)] = True
        return rows, True
    rng = np.random.default_rng(seed)
    perm = np.argsort(rng.random((MC_RESAMPLES, n)), axis=1) < n_x
    return np.vstack([observed, perm]), False


def _unpaired(stat_values: np.ndarray, n_x: int, alternative: str, seed: int) -> TestResult:
    rows, exact = _splits(n_x, stat_values.size - n_x, seed)
    sums = rows.astype(float) @ stat_values             # sum of the first sample's values
    obs = float(stat_values[:n_x].sum())
    k = rows.shape[0] - (0 if exact else 1)
    scale = float(np.abs(stat_values).sum())
    if alternative == "two-sided":
        # the null distribution of a sum over unequal samples is not symmetric: twice the
        # smaller one-sided p, as scipy.stats.permutation_test does
        p = min(1.0, 2 * min(_tail_p(sums, obs, scale, "greater"), _tail_p(sums, obs, scale, "less")))
    else:
        p = _tail_p(sums, obs, scale, alternative)
    if exact:
        return TestResult(obs, p, True, 0.0, (1 if alternative != "two-sided" else 2) / rows.shape[0])
    return TestResult(obs, p, False, math.sqrt(p * (1 - p) / k), 1 / rows.shape[0])


def permutation_test(x: Sequence[float], y: Sequence[float], *, alternative: str = "two-sided",
                     seed: int = _RNG_SEED) -> TestResult:
    """Unpaired permutation test of mean(x) - mean(y) (H0: x and y exchangeable).

    The statistic is the sum of the first sample (equivalent to the difference in means for
    fixed sizes); p over all C(n_x + n_y, n_x) splits (exact up to 2^16 splits, else 2^16
    random ones), two-sided as twice the smaller one-sided p (the null distribution is not
    symmetric for unequal sizes). ``statistic`` is reported as mean(x) - mean(y). Domain:
    finite values.
    """
    _check_alternative(alternative)
    a, b = _finite_1d(x, "x"), _finite_1d(y, "y")
    if a.size == 0 or b.size == 0:
        raise ValueError("permutation_test needs at least one value in each sample")
    pooled = np.concatenate([a, b])
    r = _unpaired(pooled, a.size, alternative, seed)
    return TestResult(float(a.mean() - b.mean()), r.p, r.exact, r.mc_error, r.min_p)


def mann_whitney_test(x: Sequence[float], y: Sequence[float], *, alternative: str = "two-sided",
                      seed: int = _RNG_SEED) -> TestResult:
    """Mann-Whitney U test, exact with ties: U = (sum of x's midranks) - n_x (n_x + 1) / 2.

    p from the permutation distribution of the midrank sum over all splits (exact up to 2^16
    splits, else 2^16 random ones), so ties (integer step counts, values censored at the budget)
    need no normal approximation. +inf values are allowed (censored: they tie at the top).
    ``statistic`` is U. Reference: Mann & Whitney (1947); Lehmann (1975) Nonparametrics, ch. 1.
    """
    _check_alternative(alternative)
    a, b = np.asarray(x, float), np.asarray(y, float)
    if a.size == 0 or b.size == 0:
        raise ValueError("mann_whitney_test needs at least one value in each sample")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("mann_whitney_test: values must not be NaN")
    ranks = _midranks(np.concatenate([a, b]))
    r = _unpaired(ranks, a.size, alternative, seed)
    return TestResult(r.statistic - a.size * (a.size + 1) / 2, r.p, r.exact, r.mc_error, r.min_p)


def page_trend(table: Sequence[Sequence[float]] | np.ndarray) -> tuple[float, str]:
    """Two-sided Page test of a monotone trend across ordered columns of ``table``.

    ``table`` is [units (seeds), levels in their order]; each row is ranked (midranks) and
    L = sum_j j R_j is referred to Page's distribution for the predicted order 1..k and for its
    reverse (scipy.stats.page_trend_test, exact where scipy offers it); p = min(1, 2 min(p_up,
    p_down)). Returns (p, "increasing" | "decreasing"), the direction being that of the smaller
    one-sided p. Reference: Page (1963) J. Amer. Statist. Assoc. 58:216-230.
    """
    t = np.asarray(table, dtype=float)
    if t.ndim != 2 or t.shape[1] < 3 or t.shape[0] < 2:
        raise ValueError(f"page_trend needs [units >= 2, levels >= 3], got shape {t.shape}")
    if not np.isfinite(t).all():
        raise ValueError("page_trend: values must be finite")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        up = sps.page_trend_test(t).pvalue
        down = sps.page_trend_test(t[:, ::-1]).pvalue
    return float(min(1.0, 2 * min(up, down))), ("increasing" if up <= down else "decreasing")


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control, any dependence).

    With the m finite p-values sorted p_(1) <= ... <= p_(m):
    p~_(i) = min(1, max_{j <= i} (m - j + 1) p_(j)). NaN entries stay NaN and do not count in m.
    Reject H_(i) at level alpha iff p~_(i) <= alpha. Reference: Holm (1979).
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise ValueError(f"p-values must lie in [0, 1], got {p[ok]}")
    m = ok.size
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


# ----------------------------------------------------------------------------- descriptive

def _bootstrap_missing(sub: np.ndarray, confidence: float, n_resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of the NaN-ignoring mean per column: resample rows, take quantiles
    (1 - c)/2 and (1 + c)/2 of the resampled means."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, sub.shape[0], size=(n_resamples, sub.shape[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        boots = np.nanmean(sub[idx], axis=1)  # [n_resamples, k]
    alpha = (1 - confidence) / 2
    return np.nanquantile(boots, alpha, axis=0), np.nanquantile(boots, 1 - alpha, axis=0)


def bootstrap_ci(
    x: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = _RNG_SEED,
) -> tuple[np.ndarray | float, np.ndarray | float, np.ndarray | float]:
    """Mean and percentile-bootstrap interval over axis 0 (seeds); NaNs are ignored.

    For x of shape [n] returns floats (mean, low, high); for [n, k] arrays of length k (one
    interval per column, e.g. per training step). Columns with fewer than 2 finite values get
    a NaN interval; a column with no finite value a NaN mean. Descriptive (bands on curves):
    the tests and the intervals of differences use :func:`mean_ci`.
    Domain: 0 < confidence < 1; n_resamples >= 100.
    """
    _check_bootstrap(confidence, n_resamples, 100)
    a = np.asarray(x, dtype=float)
    scalar = a.ndim == 1
    if scalar:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"x must be [n] or [n, k], got shape {a.shape}")
    finite = np.isfinite(a)
    a = np.where(finite, a, np.nan)
    n_ok = finite.sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(a, axis=0)
    lo = np.full(a.shape[1], np.nan)
    hi = np.full(a.shape[1], np.nan)
    cols = np.flatnonzero(n_ok >= 2)
    if cols.size:
        sub = a[:, cols]
        if np.isnan(sub).any():
            # columns with missing values (runs stopped early): resample rows, ignore NaNs
            lo[cols], hi[cols] = _bootstrap_missing(sub, confidence, n_resamples, seed)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = sps.bootstrap((sub,), np.mean, axis=0, confidence_level=confidence,
                                    n_resamples=n_resamples, method="percentile",
                                    vectorized=True, rng=np.random.default_rng(seed))
            lo[cols] = res.confidence_interval.low
            hi[cols] = res.confidence_interval.high
        # a constant column has a zero-width interval (scipy may return NaN there)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            const = np.nanmax(sub, axis=0) == np.nanmin(sub, axis=0)
        lo[cols[const]] = hi[cols[const]] = mean[cols[const]]
    if scalar:
        return float(mean[0]), float(lo[0]), float(hi[0])
    return mean, lo, hi


def curve_band(curves: Sequence[Sequence[float]], **kw: Any) -> dict[str, np.ndarray]:
    """Mean curve across runs with a bootstrap band per step.

    Curves of different lengths (runs stopped early) are padded with NaN, so each step's band
    uses the runs that reached it. Returns {"step", "mean", "lo", "hi", "n"} (arrays).
    """
    if len(curves) == 0:
        raise ValueError("curve_band needs at least one curve")
    n = max(len(c) for c in curves)
    a = np.full((len(curves), n), np.nan)
    for i, c in enumerate(curves):
        a[i, : len(c)] = np.asarray(c, dtype=float)
    mean, lo, hi = bootstrap_ci(a, **kw)
    return {"step": np.arange(n), "mean": mean, "lo": lo, "hi": hi, "n": np.isfinite(a).sum(axis=0)}


def moving_average(x: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average m_t = mean(x_{t-w+1..t}) over the finite values (shorter at the start)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    a = np.asarray(x, dtype=float)
    ok = np.isfinite(a)
    c = np.concatenate([[0.0], np.cumsum(np.where(ok, a, 0.0))])
    k = np.concatenate([[0], np.cumsum(ok)])
    idx = np.arange(1, a.size + 1)
    start = np.maximum(idx - window, 0)
    cnt = k[idx] - k[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, (c[idx] - c[start]) / np.maximum(cnt, 1), np.nan)


def final_value(x: Sequence[float], frac: float = 0.1, min_steps: int = 3) -> float:
    """Mean of the finite values in the last max(min_steps, ceil(frac * n)) steps; NaN if none."""
    a = np.asarray(x, dtype=float)
    if a.size == 0:
        return float("nan")
    k = min(a.size, max(min_steps, math.ceil(frac * a.size)))
    tail = a[-k:]
    tail = tail[np.isfinite(tail)]
    return float(tail.mean()) if tail.size else float("nan")


def hedges_g(x: Sequence[float], y: Sequence[float]) -> float:
    """Hedges' g = J * (mean x - mean y) / s_pooled, J = 1 - 3 / (4 (n_x + n_y) - 9).

    NaN when either sample has fewer than 2 values, or when both are constant and equal;
    +-inf when both are constant and differ.
    """
    a, b = np.asarray(x, float), np.asarray(y, float)
    if a.size < 2 or b.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    sp2 = ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2)
    d = a.mean() - b.mean()
    if sp2 == 0:
        return float("nan") if d == 0 else math.copysign(math.inf, d)
    j = 1 - 3 / (4 * (a.size + b.size) - 9)
    return float(j * d / math.sqrt(sp2))


def cliffs_delta(x: Sequence[float], y: Sequence[float]) -> float:
    """Cliff's delta = P(X > Y) - P(X < Y) over all pairs; in [-1, 1]; inf values allowed."""
    a, b = np.asarray(x, float), np.asarray(y, float)
    if a.size == 0 or b.size == 0:
        return float("nan")
    gt = (a[:, None] > b[None, :]).sum()
    lt = (a[:, None] < b[None, :]).sum()
    return float((gt - lt) / (a.size * b.size))

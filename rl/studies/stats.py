"""Statistics of a study: curves with bootstrap bands, per-run summaries, tests, corrections.

Pure functions over arrays first (each documented with its definition), then ``analyze``,
which turns a study's results records into per-variant summaries and comparisons against the
baseline (GSPO, p = 0 by default) that the report writer renders.

Conventions
- A *curve* is one run's per-step values of a metric; runs are the replicates (seeds), so every
  interval and test treats seeds as independent samples.
- 95% intervals are percentile bootstrap intervals over seeds (scipy.stats.bootstrap);
  with 5 seeds they are rough and slightly narrow (the percentile bootstrap under-covers at
  small n), which the report states.
- Tests are two-sided. Continuous summaries: exact permutation test of the difference in
  means when the number of splits is at most 50 000, otherwise 20 000 random permutations
  (scipy.stats.permutation_test); this assumes only exchangeability under the null, which
  suits a handful of seeds with unknown distribution. Steps-to-threshold is censored at the
  step budget (runs that never reach it count as +inf): Mann-Whitney U. Spread across seeds:
  Brown-Forsythe (Levene with the median). Counts of collapsed runs: Fisher's exact test.
- Multiple comparisons: Holm's step-down adjustment within a family = one metric, one cell
  (condition), all variants against the baseline.
- Effect sizes: Hedges' g (bias-corrected standardized mean difference) and Cliff's delta
  (P(X > Y) - P(X < Y), defined for censored values too).

References: Efron & Tibshirani (1993) An Introduction to the Bootstrap; Holm (1979) Scand. J.
Statist. 6:65-70; Hedges (1981) J. Educ. Stat. 6:107-128; Cliff (1993) Psychol. Bull. 114:494.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

__all__ = [
    "METRIC_ALIASES",
    "bootstrap_ci",
    "curve_band",
    "moving_average",
    "final_value",
    "steps_to_threshold",
    "grad_spikes",
    "is_collapsed",
    "hedges_g",
    "cliffs_delta",
    "Comparison",
    "compare",
    "compare_spread",
    "compare_counts",
    "holm",
    "interaction_test",
    "verdict",
    "metric_series",
    "run_summary",
    "analyze",
]

# Canonical metric name -> names trainers use for it (first match wins).
METRIC_ALIASES: dict[str, tuple[str, ...]] = {
    "reward": ("reward_mean", "reward", "reward/mean", "rewards_mean", "mean_reward"),
    "exact_reward": ("exact_reward",),
    "grad_norm": ("grad_norm", "grad_norm_total", "gradnorm", "grad_norm_before_clip"),
    "kl": ("kl_old_new", "approx_kl_old", "kl_old", "approx_kl", "kl", "loss/approx_kl_old", "loss/kl_old"),
    "kl_ref": ("kl_ref", "loss/kl_ref", "kl_to_ref"),
    "clip_low": ("clip_frac_low", "loss/clip_frac_low", "loss/clipfrac_low", "loss/clip_fraction_low",
                 "clipfrac_low", "clip_fraction_low", "clip_low"),
    "clip_high": ("clip_frac_high", "loss/clip_frac_high", "loss/clipfrac_high", "loss/clip_fraction_high",
                  "clipfrac_high", "clip_fraction_high", "clip_high"),
    "ratio_mean": ("seq_ratio_mean", "loss/seq_ratio_mean", "loss/ratio_mean", "ratio_mean", "sequence_ratio_mean"),
    "ratio_min": ("seq_ratio_min", "loss/seq_ratio_min", "loss/ratio_min", "ratio_min", "sequence_ratio_min"),
    "ratio_max": ("seq_ratio_max", "loss/seq_ratio_max", "loss/ratio_max", "ratio_max", "sequence_ratio_max"),
    "nonfinite": ("skipped", "nonfinite", "nonfinite_step", "nan_step", "skipped_step"),
    "loss": ("loss",),
    "p": ("loss/p", "p", "p_in_force", "p_mean", "loss/p_mean"),
    "entropy": ("entropy", "entropy_mean"),
    "step_time": ("time_s", "step_time", "time_step", "dt"),
}

_RNG_SEED = 20240917  # fixed: the same data give the same intervals and p-values


# ----------------------------------------------------------------------------- intervals

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
    a NaN interval; a column with no finite value a NaN mean.
    Domain: 0 < confidence < 1; n_resamples >= 100.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 100:
        raise ValueError(f"n_resamples must be >= 100, got {n_resamples}")
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
            rng = np.random.default_rng(seed)
            idx = rng.integers(0, sub.shape[0], size=(n_resamples, sub.shape[0]))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                boots = np.nanmean(sub[idx], axis=1)  # [n_resamples, k]
            alpha = (1 - confidence) / 2
            lo[cols] = np.nanquantile(boots, alpha, axis=0)
            hi[cols] = np.nanquantile(boots, 1 - alpha, axis=0)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = sps.bootstrap((sub,), np.mean, axis=0, confidence_level=confidence,
                                    n_resamples=n_resamples, method="percentile",
                                    vectorized=True, rng=np.random.default_rng(seed))
            lo[cols] = res.confidence_interval.low
            hi[cols] = res.confidence_interval.high
            # a constant column has a zero-width interval (scipy may return NaN there)
            const = np.all(sub == sub[:1], axis=0)
            lo[cols[const]] = hi[cols[const]] = sub[0, const]
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


# ----------------------------------------------------------------------------- per-run summaries

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


def steps_to_threshold(x: Sequence[float], threshold: float, *, window: int = 5,
                       steps: Sequence[float] | None = None) -> float:
    """First step at which the trailing moving average (``window``) reaches ``threshold``.

    Returns ``steps[t]`` (default t, counting from 0) of the first such t, or +inf when the
    run never gets there (censored: it needed more than its budget).
    """
    m = moving_average(x, window)
    hit = np.flatnonzero(np.nan_to_num(m, nan=-np.inf) >= threshold)
    if hit.size == 0:
        return float("inf")
    t = int(hit[0])
    return float(steps[t]) if steps is not None else float(t)


def grad_spikes(g: Sequence[float], factor: float = 10.0) -> int:
    """Number of steps whose gradient norm exceeds ``factor`` x the run's median norm.

    Non-finite norms are not counted here (they are NaN steps, counted separately).
    """
    a = np.asarray(g, dtype=float)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return 0
    med = float(np.median(a))
    if med <= 0:
        return int((a > 0).sum()) if factor > 0 else 0
    return int((a > factor * med).sum())


def is_collapsed(x: Sequence[float], *, window: int = 5, drop: float = 0.5, min_gain: float = 0.1) -> bool:
    """A run collapsed when it fell far below its own best, or ended non-finite.

    With m the trailing moving average (``window``), peak = max(m): collapsed iff the last value
    is non-finite, or peak - m_last >= max(min_gain, drop * (peak - m_0)). So a run that learned
    must lose at least ``drop`` of its gain (and at least ``min_gain``, in reward units, so that
    noise on a plateau is not a collapse); a run that starts high (a warm start) and sinks by
    ``min_gain`` or more below its best has collapsed too; a run that never moves has not.
    """
    a = np.asarray(x, dtype=float)
    if a.size == 0:
        return False
    if not np.isfinite(a[-1]):
        return True
    m = moving_average(a, window)
    if not np.isfinite(m).any():
        return False
    peak = float(np.nanmax(m))
    first = float(m[np.flatnonzero(np.isfinite(m))[0]])
    return bool(peak - m[-1] >= max(min_gain, drop * (peak - first)))


# ----------------------------------------------------------------------------- effects and tests

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


@dataclass
class Comparison:
    """One variant against the baseline on one per-run summary (x = variant, y = baseline)."""

    metric: str
    variant: str
    baseline: str
    cell: str
    n_x: int
    n_y: int
    mean_x: float
    mean_y: float
    median_x: float
    median_y: float
    diff: float
    hedges_g: float
    cliffs_delta: float
    test: str
    p_value: float
    min_attainable_p: float = float("nan")
    p_adjusted: float = float("nan")
    higher_is_better: bool = True
    verdict: str = ""
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _perm_min_p(n_x: int, n_y: int) -> float:
    # the smallest two-sided p an exact permutation test can give: 2 / C(n_x + n_y, n_x)
    return min(1.0, 2.0 / math.comb(n_x + n_y, n_x))


def compare(x: Sequence[float], y: Sequence[float], *, metric: str = "", variant: str = "",
            baseline: str = "", cell: str = "", higher_is_better: bool = True,
            test: str = "auto") -> Comparison:
    """Compare samples x (variant) and y (baseline), one value per seed.

    test: "auto" (Mann-Whitney U if any value is infinite, i.e. censored; else permutation),
    "permutation" (difference in means, exact when C(n_x+n_y, n_x) <= 50 000, else 20 000
    random permutations), "mannwhitney", "welch". Identical samples (the same multiset, e.g.
    an on-policy control where every p must give the same run) get p = 1 and test "identical".
    NaN values are dropped first. Fewer than 2 values on either side: p = NaN, test "n<2".
    """
    a = np.asarray(x, float)
    b = np.asarray(y, float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mx, my = (float(np.mean(a)) if a.size else float("nan")), (float(np.mean(b)) if b.size else float("nan"))
        medx, medy = (float(np.median(a)) if a.size else float("nan")), (float(np.median(b)) if b.size else float("nan"))
        diff = mx - my if np.isfinite(mx) and np.isfinite(my) else medx - medy
    c = Comparison(metric, variant, baseline, cell, int(a.size), int(b.size), mx, my, medx, medy,
                   float(diff), hedges_g(a, b), cliffs_delta(a, b), "", float("nan"),
                   higher_is_better=higher_is_better)
    if a.size < 2 or b.size < 2:
        c.test = "n<2"
        return c
    if a.size == b.size and np.array_equal(np.sort(a), np.sort(b)):
        c.test, c.p_value, c.min_attainable_p = "identical", 1.0, 0.0
        return c
    censored = not (np.isfinite(a).all() and np.isfinite(b).all())
    kind = test if test != "auto" else ("mannwhitney" if censored else "permutation")
    if kind == "permutation" and censored:
        raise ValueError(f"{metric}: a permutation test of means needs finite values; use mannwhitney")
    if kind == "permutation":
        exact = math.comb(a.size + b.size, a.size) <= 50_000
        res = sps.permutation_test(
            (a, b), lambda u, v, axis: np.mean(u, axis=axis) - np.mean(v, axis=axis),
            permutation_type="independent", alternative="two-sided", vectorized=True,
            n_resamples=np.inf if exact else 20_000, rng=np.random.default_rng(_RNG_SEED))
        c.test = "permutation (exact)" if exact else "permutation (20000)"
        c.p_value = float(min(1.0, res.pvalue))
        c.min_attainable_p = _perm_min_p(a.size, b.size) if exact else 1 / 20_001
    elif kind == "mannwhitney":
        res = sps.mannwhitneyu(a, b, alternative="two-sided", method="auto")
        c.test = "Mann-Whitney U"
        c.p_value = float(res.pvalue)
        c.min_attainable_p = _perm_min_p(a.size, b.size)
    elif kind == "welch":
        res = sps.ttest_ind(a, b, equal_var=False)
        c.test = "Welch t"
        c.p_value = float(res.pvalue)
        c.min_attainable_p = 0.0
    else:
        raise ValueError(f"test must be auto, permutation, mannwhitney or welch, got {test!r}")
    return c


def compare_spread(x: Sequence[float], y: Sequence[float], **kw: Any) -> Comparison:
    """Spread across seeds: Brown-Forsythe test (scipy.stats.levene, center='median').

    ``diff`` is std(x) - std(y) (ddof 1); lower spread is better (higher_is_better=False).
    """
    a, b = np.asarray(x, float), np.asarray(y, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    sx = float(a.std(ddof=1)) if a.size > 1 else float("nan")
    sy = float(b.std(ddof=1)) if b.size > 1 else float("nan")
    c = Comparison(kw.get("metric", "spread"), kw.get("variant", ""), kw.get("baseline", ""),
                   kw.get("cell", ""), int(a.size), int(b.size), sx, sy, sx, sy, sx - sy,
                   float("nan"), float("nan"), "Brown-Forsythe", float("nan"), higher_is_better=False)
    if a.size < 2 or b.size < 2:
        c.test = "n<2"
        return c
    if a.size == b.size and np.array_equal(np.sort(a), np.sort(b)):
        c.test, c.p_value = "identical", 1.0
        return c
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        c.p_value = 1.0  # both constant: no spread to compare
        return c
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c.p_value = float(sps.levene(a, b, center="median").pvalue)
    if not math.isfinite(c.p_value):
        c.p_value = 1.0
    return c


def compare_counts(k_x: int, n_x: int, k_y: int, n_y: int, **kw: Any) -> Comparison:
    """Counts of events (e.g. collapsed runs) k of n: Fisher's exact test, two-sided.

    ``mean_*`` are the rates k/n; lower is better (higher_is_better=False).
    """
    rx, ry = (k_x / n_x if n_x else float("nan")), (k_y / n_y if n_y else float("nan"))
    c = Comparison(kw.get("metric", "count"), kw.get("variant", ""), kw.get("baseline", ""),
                   kw.get("cell", ""), n_x, n_y, rx, ry, rx, ry, rx - ry, float("nan"),
                   float("nan"), "Fisher exact", float("nan"), higher_is_better=False)
    if n_x == 0 or n_y == 0:
        c.test = "n<2"
        return c
    c.p_value = float(sps.fisher_exact([[k_x, n_x - k_x], [k_y, n_y - k_y]]).pvalue)
    return c


def interaction_test(diffs: dict[str, Sequence[float]]) -> tuple[str, float]:
    """Does an effect change with a factor? Test whether per-seed differences (variant minus
    baseline, same seed) have the same distribution at every level of the factor.

    2 levels: two-sided permutation test of the difference of the mean differences (exact when
    C(n1 + n2, n1) <= 50 000); 3 or more: Kruskal-Wallis H. Returns (test name, p-value);
    ("identical", 1.0) when every level has the same multiset of differences, ("n<2", NaN) when a
    level has fewer than 2 differences.
    """
    groups = [np.asarray(v, float) for v in diffs.values()]
    groups = [g[np.isfinite(g)] for g in groups]
    if len(groups) < 2 or any(g.size < 2 for g in groups):
        return "n<2", float("nan")
    if all(g.size == groups[0].size and np.array_equal(np.sort(g), np.sort(groups[0])) for g in groups):
        return "identical", 1.0
    if len(groups) == 2:
        c = compare(groups[0], groups[1], test="permutation")
        return c.test, c.p_value
    return "Kruskal-Wallis", float(sps.kruskal(*groups).pvalue)


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


def verdict(c: Comparison, alpha: float = 0.05) -> str:
    """"better" / "worse" than the baseline when Holm-adjusted p <= alpha, else "not separated"
    ("identical" when the samples coincide; "too few runs" when untestable)."""
    if c.test == "identical":
        return "identical"
    if not math.isfinite(c.p_adjusted):
        return "too few runs"
    if c.p_adjusted > alpha:
        return "not separated"
    up = c.diff > 0 if math.isfinite(c.diff) else c.cliffs_delta > 0
    return "better" if up == c.higher_is_better else "worse"


# ----------------------------------------------------------------------------- study analysis

def metric_series(record: dict[str, Any], name: str) -> np.ndarray | None:
    """A run's per-step values of a canonical metric (see METRIC_ALIASES), or None if absent."""
    cols = record.get("metrics", {})
    for key in METRIC_ALIASES.get(name, (name,)):
        if key in cols:
            v = cols[key]
            if v and isinstance(v[0], list):
                return None
            return np.array([np.nan if e is None else float(e) for e in v], dtype=float)
    return None


def run_summary(record: dict[str, Any], *, metric: str = "reward", threshold: float | None = None,
                spike_factor: float = 10.0) -> dict[str, float]:
    """Per-run scalars: final, auc (mean over all steps), steps_to_threshold, collapsed,
    grad_spikes, nan_steps, clip_low/high (means), kl (median over steps), ratio_* (means of the per-step
    sequence-ratio statistics), log_ratio_spread (mean of log max - log min), final_p,
    sec_per_step, steps."""
    r = metric_series(record, metric)
    if r is None:
        raise ValueError(f"run {record.get('run_id')}: no metric {metric!r} among "
                         f"{sorted(record.get('metrics', {}))}")
    out: dict[str, float] = {"steps": float(r.size), "final": final_value(r)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out["auc"] = float(np.nanmean(r)) if r.size else float("nan")
        out["start"] = float(np.nanmean(r[: max(1, min(3, r.size))])) if r.size else float("nan")
    out["steps_to_threshold"] = steps_to_threshold(r, threshold) if threshold is not None else float("nan")
    out["collapsed"] = float(is_collapsed(r))
    g = metric_series(record, "grad_norm")
    out["grad_spikes"] = float(grad_spikes(g, spike_factor)) if g is not None else float("nan")
    nf = metric_series(record, "nonfinite")
    loss = metric_series(record, "loss")
    if nf is not None:
        out["nan_steps"] = float(np.nansum(nf))  # skipped updates (bools count 1)
    elif loss is not None:
        out["nan_steps"] = float((~np.isfinite(loss)).sum())
    else:
        out["nan_steps"] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for key in ("clip_low", "clip_high", "kl_ref", "ratio_mean", "ratio_min", "ratio_max", "entropy"):
            s = metric_series(record, key)
            out[key] = float(np.nanmean(s)) if s is not None and s.size else float("nan")
        # KL estimates are heavy-tailed (one far off-policy step dominates a mean): the median
        s = metric_series(record, "kl")
        out["kl"] = float(np.nanmedian(s)) if s is not None and np.isfinite(s).any() else float("nan")
        lo, hi = metric_series(record, "ratio_min"), metric_series(record, "ratio_max")
        if lo is not None and hi is not None:
            out["log_ratio_spread"] = float(np.nanmean(np.log(np.maximum(hi, 1e-300)) - np.log(np.maximum(lo, 1e-300))))
        else:
            out["log_ratio_spread"] = float("nan")
        p = metric_series(record, "p")
        out["final_p"] = float(p[np.isfinite(p)][-1]) if p is not None and np.isfinite(p).any() else float("nan")
        st = metric_series(record, "step_time")
        if st is not None and np.isfinite(st).any():
            out["sec_per_step"] = float(np.nanmedian(st))
        else:
            out["sec_per_step"] = float(record.get("wall_s", float("nan"))) / max(1.0, r.size)
    return out


@dataclass
class VariantSummary:
    """Aggregates over seeds for one variant in one cell (condition)."""

    cell: str
    variant: str
    n: int
    seeds: list[int]
    final_mean: float
    final_lo: float
    final_hi: float
    final_std: float
    auc_mean: float
    auc_lo: float
    auc_hi: float
    steps_to_threshold_median: float
    reached: int
    collapsed: int
    grad_spikes: float
    nan_steps: float
    clip_low: float
    clip_high: float
    kl: float
    ratio_mean: float
    log_ratio_spread: float
    final_p_mean: float
    sec_per_step: float
    threshold: float
    stopped: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Analysis:
    """Everything the report needs: per-run scalars, per-variant summaries, comparisons, curves."""

    study: str
    metric: str
    baseline: str | None
    cells: list[str]
    cell_factors: dict[str, dict[str, str]]
    variants: dict[str, list[str]]                       # cell -> variants (spec order)
    runs: list[dict[str, Any]]                           # per-run scalars + labels
    summaries: list[VariantSummary]
    comparisons: list[Comparison]
    curves: dict[tuple[str, str], dict[str, np.ndarray]]  # (cell, variant) -> band of the metric
    kl_curves: dict[tuple[str, str], dict[str, np.ndarray]]
    p_curves: dict[tuple[str, str], dict[str, np.ndarray]]
    ratio_samples: dict[tuple[str, str], dict[str, np.ndarray]]  # per-step ratio min/max pooled
    failed: list[str] = field(default_factory=list)
    alpha: float = 0.05


def analyze(records: Sequence[dict[str, Any]], *, study: str = "", metric: str = "reward",
            baseline: str | None = "p=0", threshold: float | None = None, alpha: float = 0.05,
            min_seeds: int = 5, variant_order: Sequence[str] | None = None) -> Analysis:
    """Group finished runs by (cell, variant), summarize, and compare each variant with the
    baseline in its cell. Failed runs are listed, not analysed.

    ``threshold``: the reward counted as "reached" for sample efficiency; default per cell:
    start + 0.8 x (best variant's mean final reward - start), start = the mean reward of the
    first 3 steps over the cell's runs (reachable by some variant); none when no variant ends
    above the start.
    Comparisons are made only where both sides have at least ``min_seeds`` runs.
    """
    ok = [r for r in records if r.get("status") != "failed"]
    for rec in ok:
        if metric_series(rec, metric) is None:
            raise ValueError(f"run {rec.get('run_id')}: no metric {metric!r} (looked for "
                             f"{list(METRIC_ALIASES.get(metric, (metric,)))}); it has {sorted(rec.get('metrics', {}))}")
    failed = sorted(r["run_id"] for r in records if r.get("status") == "failed")
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    cell_factors: dict[str, dict[str, str]] = {}
    for rec in ok:
        cell = _cell_label(rec.get("cell", {}))
        cell_factors[cell] = dict(rec.get("cell", {}))
        groups.setdefault(cell, {}).setdefault(rec["variant"], []).append(rec)
    order = {v: i for i, v in enumerate(variant_order or [])}
    cells = sorted(groups, key=lambda c: _cell_sort_key(cell_factors[c]))
    variants = {c: sorted(groups[c], key=lambda v: (order.get(v, len(order)), _variant_sort_key(v)))
                for c in cells}

    runs: list[dict[str, Any]] = []
    summaries: list[VariantSummary] = []
    comparisons: list[Comparison] = []
    curves, kl_curves, p_curves, ratio_samples = {}, {}, {}, {}
    for cell in cells:
        # threshold of this cell, from the variants' final rewards
        finals = {v: [final_value(metric_series(rec, metric)) for rec in groups[cell][v]] for v in variants[cell]}
        if threshold is not None:
            thr = float(threshold)
        else:
            # 80% of the way from where runs start to the best variant's final level; undefined
            # (no sample-efficiency measure) when no variant ends above its start
            best = max((np.nanmean(f) for f in finals.values() if np.isfinite(f).any()), default=float("nan"))
            starts = [np.nanmean(metric_series(rec, metric)[:3]) for v in variants[cell] for rec in groups[cell][v]]
            start = float(np.nanmean(starts)) if starts else float("nan")
            thr = float(start + 0.8 * (best - start)) if np.isfinite(best) and best > start else float("nan")
        per_variant: dict[str, list[dict[str, float]]] = {}
        for v in variants[cell]:
            recs = sorted(groups[cell][v], key=lambda r: r.get("seed", 0))
            rows = []
            for rec in recs:
                s = run_summary(rec, metric=metric, threshold=thr if np.isfinite(thr) else None)
                rows.append(s)
                runs.append({"cell": cell, "variant": v, "seed": rec.get("seed"), "run_id": rec["run_id"],
                             "status": rec.get("status", "ok"), **cell_factors[cell], **s})
            per_variant[v] = rows
            curves[(cell, v)] = curve_band([metric_series(r, metric) for r in recs])
            kls = [metric_series(r, "kl") for r in recs]
            if all(k is not None for k in kls):
                kl_curves[(cell, v)] = curve_band(kls)
            ps = [metric_series(r, "p") for r in recs]
            if all(p is not None for p in ps):
                p_curves[(cell, v)] = curve_band(ps)
            lo = [metric_series(r, "ratio_min") for r in recs]
            hi = [metric_series(r, "ratio_max") for r in recs]
            mid = [metric_series(r, "ratio_mean") for r in recs]
            if all(x is not None for x in lo + hi):
                ratio_samples[(cell, v)] = {
                    "min": np.concatenate(lo), "max": np.concatenate(hi),
                    "mean": np.concatenate(mid) if all(x is not None for x in mid) else np.array([])}
            col = {k: np.array([row[k] for row in rows]) for k in rows[0]}
            fm, flo, fhi = bootstrap_ci(col["final"])
            am, alo, ahi = bootstrap_ci(col["auc"])
            stt = col["steps_to_threshold"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                summaries.append(VariantSummary(
                    cell=cell, variant=v, n=len(rows), seeds=[r.get("seed") for r in recs],
                    final_mean=fm, final_lo=flo, final_hi=fhi,
                    final_std=float(np.nanstd(col["final"], ddof=1)) if len(rows) > 1 else float("nan"),
                    auc_mean=am, auc_lo=alo, auc_hi=ahi,
                    steps_to_threshold_median=float(np.median(stt)) if np.isfinite(thr) else float("nan"),
                    reached=int(np.isfinite(stt).sum()), collapsed=int(np.nansum(col["collapsed"])),
                    grad_spikes=float(np.nansum(col["grad_spikes"])), nan_steps=float(np.nansum(col["nan_steps"])),
                    clip_low=float(np.nanmean(col["clip_low"])), clip_high=float(np.nanmean(col["clip_high"])),
                    kl=float(np.nanmean(col["kl"])), ratio_mean=float(np.nanmean(col["ratio_mean"])),
                    log_ratio_spread=float(np.nanmean(col["log_ratio_spread"])),
                    final_p_mean=float(np.nanmean(col["final_p"])),
                    sec_per_step=float(np.nanmedian(col["sec_per_step"])), threshold=thr,
                    stopped=sum(1 for r in recs if r.get("status") not in ("ok", None)),
                ))
        # comparisons against the baseline in this cell; Holm within (cell, metric)
        if baseline is None or baseline not in per_variant:
            continue
        base = per_variant[baseline]
        fam: dict[str, list[Comparison]] = {}
        for v in variants[cell]:
            if v == baseline:
                continue
            rows = per_variant[v]
            if len(rows) < min_seeds or len(base) < min_seeds:
                continue
            kw = dict(variant=v, baseline=baseline, cell=cell)
            x = {k: np.array([r[k] for r in rows]) for k in rows[0]}
            y = {k: np.array([r[k] for r in base]) for k in base[0]}
            cs = [compare(x["final"], y["final"], metric="final", **kw),
                  compare(x["auc"], y["auc"], metric="auc", **kw),
                  compare_spread(x["final"], y["final"], metric="final_spread", **kw),
                  compare_counts(int(np.nansum(x["collapsed"])), len(rows), int(np.nansum(y["collapsed"])),
                                 len(base), metric="collapsed", **kw)]
            if np.isfinite(thr):
                cs.append(compare(x["steps_to_threshold"], y["steps_to_threshold"], metric="steps_to_threshold",
                                  higher_is_better=False, test="mannwhitney", **kw))
            for c in cs:
                fam.setdefault(c.metric, []).append(c)
        for m, cs in fam.items():
            adj = holm([c.p_value for c in cs])
            for c, pa in zip(cs, adj):
                c.p_adjusted = float(pa) if c.test != "identical" else 1.0
                c.verdict = verdict(c, alpha)
                if c.verdict == "not separated" and c.min_attainable_p * len(cs) > alpha:
                    c.note = (f"with {c.n_x} vs {c.n_y} runs the smallest attainable Holm-adjusted p is "
                              f"{min(1.0, c.min_attainable_p * len(cs)):.3g} > {alpha}: more seeds are needed "
                              "to separate anything here")
            comparisons.extend(cs)
    return Analysis(study=study, metric=metric, baseline=baseline, cells=cells, cell_factors=cell_factors,
                    variants=variants, runs=runs, summaries=summaries, comparisons=comparisons,
                    curves=curves, kl_curves=kl_curves, p_curves=p_curves, ratio_samples=ratio_samples,
                    failed=failed, alpha=alpha)


def _cell_label(cell: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in cell.items()) or "all"


def _num(s: str) -> tuple[int, float | str]:
    try:
        return (0, float(s))
    except (TypeError, ValueError):
        return (1, str(s))


def _cell_sort_key(cell: dict[str, str]) -> tuple:
    return tuple((k, _num(v)) for k, v in cell.items())


def _variant_sort_key(v: str) -> tuple:
    # power means by decreasing p (arithmetic ... harmonic ...), then the named variants in the
    # order of rl.studies.spec.VARIANTS
    from rl.studies.spec import VARIANTS

    if v.startswith("p="):
        try:
            return (0, -float(v[2:]), v)
        except ValueError:
            pass
    names = list(VARIANTS)
    return (1, float(names.index(v)) if v in names else float(len(names)), v)

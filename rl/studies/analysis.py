"""Analyse a study: results records + its declared plan -> endpoint tables, bands and findings.

Read top to bottom:

1. :func:`collect` groups finished runs by condition (cell), variant and seed, evaluates every
   declared endpoint per run (one value per seed: runs sharing a seed are averaged first) and
   labels each condition (control, regime: ESS and saturation).
2. The test builders turn per-seed values into draft tests: :func:`difference_test` (paired on
   seeds when both sides have the same seeds, unpaired otherwise), trend and optimum tests of a
   p-sweep, bit-for-bit checks of controls.
3. :func:`judge` corrects a family (Holm over the difference tests, and separately over the
   equivalence tests) and gives each test its verdict: better / worse only from a significant
   difference at least as large as the margin, equivalent from the two one-sided tests,
   inconclusive otherwise (with the power to detect the margin), identical only bit for bit.
4. One evaluator per claim kind (comparison, interaction, sweep, descriptive) plus the
   controls builds the :class:`~rl.studies.findings.Finding` records; :func:`analyze` runs
   them all and the exploratory table (every variant against the baseline, per condition and
   endpoint, Holm within that condition and endpoint).
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

from rl.studies.endpoints import EndpointValue, consumed, endpoint_value, series
from rl.studies.findings import Finding, StatTest, outcome
from rl.studies.plan import Claim, Endpoint, Plan, Robustness, matches
from rl.studies.spec import MIN_SEEDS_FOR_COMPARISON, StudySpec, variant_p
from rl.studies.stats import (curve_band, holm, mann_whitney_test, mean_ci, page_trend, permutation_test,
                              power_paired, sign_flip_test, signed_rank_test, tost)

__all__ = ["Cell", "Summary", "StudyData", "Analysis", "collect", "difference_test", "judge", "analyze",
           "aggregate_verdict"]

#: columns summarised per run beside the declared endpoints, by the names the trainer logs (an
#: absent column gives NaN): the regime (token-weight ESS, and the within-sequence log-ratio
#: spread that rl.trainer.log_ratio_spread logs per step), clipping, KL, the p in force, the time,
#: skipped updates
RUN_COLUMNS = {"ess_mean": "loss/token_weight_ess", "log_ratio_spread": "log_ratio_spread",
               "clip_low": "loss/clip_frac_low", "clip_high": "loss/clip_frac_high", "kl": "kl_old_new",
               "p": "p", "sec_per_step": "time_s", "skipped_updates": "skipped_total"}


# ----------------------------------------------------------------------------- 1. the data

@dataclass(frozen=True)
class Cell:
    """A condition: its label, factor values, variants (in report order) and its labels."""

    label: str
    factors: dict[str, str]
    variants: tuple[str, ...]
    short: str = ""                     # what sets it apart from the other conditions (see short_labels)
    control: str | None = None          # the reason every variant must coincide here, if a control
    ess: float = math.nan               # median run-mean ESS of the regime variant
    coincide: bool = False              # ESS above the declared bound: the means coincide here
    saturated: bool = False             # the best variant ends above the declared saturation level


@dataclass(frozen=True)
class Summary:
    """One variant in one condition, over its seeds: every endpoint's mean with a 95% interval."""

    cell: str
    variant: str
    n: int
    seeds: tuple[int, ...]
    endpoints: dict[str, tuple[float, float, float, int]]  # name -> (mean, low, high, censored runs)
    collapsed: int
    columns: dict[str, float]            # RUN_COLUMNS: run means (KL, time: medians), averaged over seeds
    stopped: int


@dataclass
class StudyData:
    """Everything measured, grouped: cell label -> variant -> seed -> records / endpoint values."""

    spec: StudySpec
    cells: list[Cell]
    records: dict[str, dict[str, dict[int, list[dict[str, Any]]]]]
    values: dict[str, dict[str, dict[int, dict[str, EndpointValue]]]]
    runs: list[dict[str, Any]]
    failed: list[str]

    def cell(self, label: str) -> Cell:
        return next(c for c in self.cells if c.label == label)

    def per_seed(self, cell: str, variant: str, endpoint: str) -> dict[int, EndpointValue]:
        return {s: v[endpoint] for s, v in self.values.get(cell, {}).get(variant, {}).items()}


def cell_label(cell: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in cell.items()) or "all"


def _level_key(v: str) -> tuple:
    m = re.fullmatch(r"(\d+)x(\d+)", v)
    if m:
        return (0, int(m.group(1)) * int(m.group(2)), v)
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


def _variant_key(v: str) -> tuple:
    from rl.studies.spec import VARIANTS

    p = variant_p(v)
    if p is not None and v.startswith("p="):
        return (0, -p, v)
    names = list(VARIANTS)
    return (1, float(names.index(v)) if v in names else float(len(names)), v)


def _mean_column(rec: dict[str, Any], column: str, how: str = "mean") -> float:
    y = series(rec, column)
    if y is None or not np.isfinite(y).any():
        return math.nan
    y = y[np.isfinite(y)]
    return float(np.median(y) if how == "median" else (y[-1] if how == "last" else y.mean()))


def _run_columns(rec: dict[str, Any]) -> dict[str, float]:
    # KL estimates are heavy-tailed (one far off-policy step dominates a mean): the median
    how = {"kl": "median", "sec_per_step": "median", "p": "last", "skipped_updates": "last"}
    return {k: _mean_column(rec, col, how.get(k, "mean")) for k, col in RUN_COLUMNS.items()}


def collect(records: Sequence[dict[str, Any]], spec: StudySpec) -> StudyData:
    """Group finished runs, evaluate the declared endpoints, label the conditions."""
    plan = spec.plan
    ok = [r for r in records if r.get("status") != "failed"]
    failed = sorted(r["run_id"] for r in records if r.get("status") == "failed")
    recs: dict[str, dict[str, dict[int, list[dict[str, Any]]]]] = {}
    factors: dict[str, dict[str, str]] = {}
    # a run's condition is the one the spec gives its config now: a result written before the spec
    # gained a factor (a resumed, extended study) carries a cell without it
    planned = {r.config_hash: r.cell for r in spec.runs()}
    for rec in ok:
        cell = planned.get(rec.get("config_hash"), rec.get("cell", {}))
        label = cell_label(cell)
        factors[label] = dict(cell)
        recs.setdefault(label, {}).setdefault(rec["variant"], {}).setdefault(int(rec.get("seed", 0)), []).append(rec)
    values: dict[str, dict[str, dict[int, dict[str, EndpointValue]]]] = {}
    runs: list[dict[str, Any]] = []
    for label, by_v in recs.items():
        for v, by_s in by_v.items():
            for s, rs in by_s.items():
                per = [{name: endpoint_value(ep, r) for name, ep in plan.endpoints.items()} for r in rs]
                # one value per seed: runs of the same seed (replicates) are averaged first
                values.setdefault(label, {}).setdefault(v, {})[s] = {
                    name: EndpointValue(float(np.mean([p[name].value for p in per])), all(p[name].censored for p in per))
                    for name in plan.endpoints}
                for r, p in zip(rs, per):
                    row = {"cell": label, "variant": v, "seed": s, "run_id": r["run_id"], "status": r.get("status", "ok"),
                           **factors[label]}
                    for name, ev in p.items():
                        row[name] = ev.value
                        if plan.endpoints[name].kind == "to_threshold":
                            row[f"{name}_censored"] = ev.censored
                    runs.append({**row, **_run_columns(r), "code_version": r.get("code_version")})
    order = sorted(recs, key=lambda c: tuple((k, _level_key(v)) for k, v in factors[c].items()))
    shorts = short_labels([factors[c] for c in order], always=claim_factors(plan))
    cells = [_label_cell(label, factors[label], recs[label], spec, short) for label, short in zip(order, shorts)]
    return StudyData(spec, cells, recs, values, runs, failed)


def claim_factors(plan: Plan) -> tuple[str, ...]:
    """The factors by which the plan's claims tell their conditions apart: those that the claims'
    ``where`` filters pin to more than one value (e.g. the reward kind of per-reward claims)."""
    seen: dict[str, set[str]] = {}
    for c in plan.claims:
        for f in c.where:
            for k, v in f.items():
                seen.setdefault(k, set()).add(str(v))
    return tuple(k for k, vs in seen.items() if len(vs) > 1)


def short_labels(cells: Sequence[dict[str, str]], always: Sequence[str] = ()) -> list[str]:
    """Each condition by what sets it apart: the factors whose value differs from that factor's most
    common value across the conditions, and the factors in ``always`` (those the claims tell their
    conditions apart by, :func:`claim_factors`) whatever their value (the environment always named;
    "-" = not applicable, left out); a condition at every most common value is "<env>, reference
    settings"."""
    out = []
    for factors in cells:
        if len(cells) == 1:
            out.append(", ".join(f"{k}={v}" for k, v in factors.items() if v != "-") or "all runs")
            continue
        parts, env = [], None
        for k, v in factors.items():
            values = [c.get(k) for c in cells]
            if len(set(values)) < 2 or v == "-":
                continue
            mode = max(set(values), key=lambda x: (values.count(x), str(x)))
            if k == "env":
                env = f"env={v}"
            elif v != mode or k in always:
                parts.append(f"{k}={v}")
        out.append(", ".join(([env] if env else []) + parts) if parts else
                   ((env + ", " if env else "") + "reference settings"))
    return out


def _label_cell(label: str, factors: dict[str, str], by_v: dict, spec: StudySpec, short: str) -> Cell:
    plan = spec.plan
    control = next((c.reason for c in plan.controls if matches(factors, c.where)), None)
    reg = plan.regime
    runs = [r for rs in by_v.get(reg.variant, {}).values() for r in rs]
    ess_vals = [x for x in (_mean_column(r, reg.ess_metric) for r in runs) if math.isfinite(x)]
    ess = float(np.median(ess_vals)) if ess_vals else math.nan
    coincide = reg.coincide_above is not None and math.isfinite(ess) and ess > reg.coincide_above
    saturated = False
    if reg.objective_max is not None and reg.saturation is not None:
        finals = [np.mean([_mean_column(r, spec.metric, "last") for rs in by_s.values() for r in rs])
                  for by_s in by_v.values()]
        saturated = bool(finals) and max(finals) > reg.saturation * reg.objective_max
    return Cell(label, factors, tuple(sorted(by_v, key=_variant_key)), short, control, ess, coincide, saturated)


def summaries(data: StudyData) -> list[Summary]:
    """Per (cell, variant): every endpoint's mean over seeds with a 95% bootstrap-t interval."""
    out = []
    plan = data.spec.plan
    for c in data.cells:
        for v in c.variants:
            by_s = data.values[c.label][v]
            seeds = tuple(sorted(by_s))
            eps = {}
            collapsed = 0
            for name, ep in plan.endpoints.items():
                vals = np.array([by_s[s][name].value for s in seeds])
                fin = vals[np.isfinite(vals)]
                lo, hi = mean_ci(fin) if fin.size >= 3 else (math.nan, math.nan)
                eps[name] = (float(fin.mean()) if fin.size else math.nan, lo, hi,
                             sum(by_s[s][name].censored for s in seeds))
                if ep.kind == "max_drawdown" and ep.collapse is not None:
                    collapsed = max(collapsed, int(np.sum(vals >= ep.collapse)))
            rows = [r for r in data.runs if r["cell"] == c.label and r["variant"] == v]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                cols = {k: float(np.nanmean([r[k] for r in rows])) for k in RUN_COLUMNS}
            out.append(Summary(c.label, v, len(seeds), seeds, eps, collapsed, cols,
                               sum(1 for r in rows if r["status"] not in ("ok", None))))
    return out


def bands(data: StudyData, column: str, x: str = "samples") -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """(cell, variant) -> mean curve of ``column`` over seeds with a 95% band and, under "x", what
    had been consumed at each step ("samples" or "steps"); pairs whose runs lack the column are
    left out."""
    out = {}
    for c in data.cells:
        for v in c.variants:
            rs = [r for s in sorted(data.records[c.label][v]) for r in data.records[c.label][v][s]]
            ys = [series(r, column) for r in rs]
            if not ys or any(y is None for y in ys):
                continue
            band = curve_band(ys)
            longest = max(rs, key=lambda r: len(r.get("metrics", {}).get(column, [])))
            band["x"] = consumed(longest, x, len(band["mean"])) if x == "steps" or "samples" in longest.get(
                "metrics", {}) else band["step"].astype(float)
            out[(c.label, v)] = band
    return out


# ----------------------------------------------------------------------------- 2. tests

@dataclass
class Draft:
    """A test before its family is corrected: what judge() needs to give it a verdict."""

    cell: str
    endpoint: str
    test: str
    n: int
    estimate: float
    ci: tuple[float, float]
    margin: float
    p: float
    higher_is_better: bool
    kind: str = "difference"         # difference | trend | optimum | identity | descriptive
    p_tost: float = math.nan
    sd: float = math.nan
    variant: str = ""
    baseline: str = ""
    variant_mean: float = math.nan
    baseline_mean: float = math.nan
    mc_error: float = 0.0
    check: str = ""
    check_p: float = math.nan
    censored: int = 0
    paired: bool = True
    min_p: float | None = None       # the test's smallest attainable p (None: sign-flip's 2 / 2^n)
    identical: bool = False
    direction: str = ""              # trend tests: "increasing" | "decreasing" (in p)
    notes: list[str] = field(default_factory=list)


def _welch_ci(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if x.size < 2 or y.size < 2 or (np.ptp(x) == 0 and np.ptp(y) == 0):
        d = float(x.mean() - y.mean())
        return (d, d) if x.size and y.size and np.ptp(x) == 0 and np.ptp(y) == 0 else (math.nan, math.nan)
    ci = sps.ttest_ind(x, y, equal_var=False).confidence_interval(0.95)
    return float(ci.low), float(ci.high)


def _unpaired_sd(a: np.ndarray, b: np.ndarray) -> float:
    """The SD that makes margin sqrt(n) / sd the two-sample noncentrality margin / SE (n = min size),
    so that power_paired gives the (conservative, df n - 1) power of the unpaired comparison."""
    if a.size < 2 or b.size < 2:
        return math.nan
    return float(math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size) * math.sqrt(min(a.size, b.size)))


def differences_test(d: np.ndarray, margin: float, **kw: Any) -> Draft:
    """A paired draft from per-seed differences ``d`` (variant minus baseline, or any contrast):
    sign-flip test, Wilcoxon signed-rank check, bootstrap-t interval, TOST with ``margin``."""
    d = np.asarray(d, dtype=float)
    sf = sign_flip_test(d)
    ci = mean_ci(d) if d.size >= 3 else (math.nan, math.nan)
    draft = Draft(estimate=float(d.mean()) if d.size else math.nan, ci=ci, margin=margin, p=sf.p, n=int(d.size),
                  test="sign-flip (exact)" if sf.exact else "sign-flip (Monte Carlo)", mc_error=sf.mc_error,
                  sd=float(d.std(ddof=1)) if d.size > 1 else math.nan, **kw)
    if d.size:
        draft.p_tost = tost(d, margin).p if margin > 0 else math.nan
        draft.check_p = signed_rank_test(d).p
        draft.check = "Wilcoxon signed-rank"
    return draft


def difference_test(x: dict[int, EndpointValue], y: dict[int, EndpointValue], ep: Endpoint, *,
                    cell: str, variant: str, baseline: str, identical: bool = False, relative: bool = False) -> Draft:
    """Variant ``x`` against baseline ``y`` on one endpoint (seed -> value).

    Paired on seeds when both have the same seeds; unpaired otherwise (exact permutation test of
    the means, or Mann-Whitney U when a threshold was never reached, with a Welch interval).
    ``relative``: the differences are divided by the baseline's mean (pooling conditions).
    Censored pairs (neither run reached the threshold) carry no information on equivalence,
    so the equivalence test is not made where there is one.
    """
    kw = dict(cell=cell, endpoint=ep.name, variant=variant, baseline=baseline, higher_is_better=ep.higher_is_better)
    seeds_x = {s for s, v in x.items() if math.isfinite(v.value)}
    seeds_y = {s for s, v in y.items() if math.isfinite(v.value)}
    ym = float(np.mean([y[s].value for s in seeds_y])) if seeds_y else math.nan
    margin = ep.margin if relative else ep.margin_for(ym)
    scale = abs(ym) if relative and ym else 1.0
    if seeds_x == seeds_y:
        seeds = sorted(seeds_x)
        d = np.array([(x[s].value - y[s].value) / scale for s in seeds])
        draft = differences_test(d, margin, **kw)
        both = sum(x[s].censored and y[s].censored for s in seeds)
        draft.censored = sum(x[s].censored or y[s].censored for s in seeds)
        if both:
            draft.p_tost = math.nan
            draft.notes.append(f"{both} seed(s) never reached the threshold with either variant: no equivalence test")
    else:
        a = np.array([x[s].value for s in sorted(seeds_x)]) / scale
        b = np.array([y[s].value for s in sorted(seeds_y)]) / scale
        censored = any(x[s].censored for s in seeds_x) or any(y[s].censored for s in seeds_y)
        test = mann_whitney_test(a, b) if censored else permutation_test(a, b)
        draft = Draft(estimate=float(a.mean() - b.mean()), ci=_welch_ci(a, b), margin=margin, p=test.p,
                      n=min(a.size, b.size), test=("Mann-Whitney U" if censored else "permutation") + (
                          " (exact)" if test.exact else " (Monte Carlo)"), mc_error=test.mc_error, paired=False,
                      min_p=test.min_p, sd=_unpaired_sd(a, b), **kw)
        if not censored and margin > 0:
            draft.p_tost = max(permutation_test(a + margin, b, alternative="greater").p,
                               permutation_test(a - margin, b, alternative="less").p)
        draft.notes.append(f"unpaired: the sides have different seeds ({len(seeds_x)} vs {len(seeds_y)})")
    draft.variant_mean = float(np.mean([x[s].value for s in seeds_x])) if seeds_x else math.nan
    draft.baseline_mean = ym
    draft.identical = identical
    return draft


# ----------------------------------------------------------------------------- 3. verdicts

def _verdict(d: Draft, p_adj: float, p_tost_adj: float, alpha: float) -> tuple[str, str]:
    """(verdict, note) of one corrected test."""
    if d.identical:
        return "identical", ""
    if d.kind == "descriptive":
        return "descriptive", ""
    big = math.isfinite(d.estimate) and abs(d.estimate) >= d.margin
    if math.isfinite(p_adj) and p_adj <= alpha:
        if d.kind == "optimum":
            return ("optimum", "") if d.estimate >= d.margin else (
                "inconclusive", f"an optimum, but its lead {d.estimate:.3g} is below the margin {d.margin:.3g}")
        if big:
            if d.kind == "trend":
                return d.direction, ""
            up = d.estimate > 0
            return ("better" if up == d.higher_is_better else "worse"), ""
        if not (math.isfinite(p_tost_adj) and p_tost_adj <= alpha):
            return "inconclusive", (f"significant, but the effect {d.estimate:.3g} is smaller than the margin "
                                    f"{d.margin:.3g}")
    if math.isfinite(p_tost_adj) and p_tost_adj <= alpha:
        return ("flat" if d.kind == "trend" else "equivalent"), ""
    return "inconclusive", ""


def judge(drafts: Sequence[Draft], *, family: str, alpha: float, role: str = "primary") -> list[StatTest]:
    """Correct one family and give each test its verdict.

    Holm's step-down adjustment over the family's difference (and trend, optimum) p-values, and
    separately over its equivalence p-values; identical tests and descriptive numbers are
    outside the correction. Power: of the difference test at Holm's first-step level alpha / m
    (m = the family's size), against a true effect equal to the margin.
    """
    tested = [i for i, d in enumerate(drafts) if not d.identical and d.kind != "descriptive"]
    p_adj = np.full(len(drafts), math.nan)
    t_adj = np.full(len(drafts), math.nan)
    if tested:
        p_adj[tested] = holm([drafts[i].p for i in tested])
        t_adj[tested] = holm([drafts[i].p_tost for i in tested])
    m = max(1, len(tested))
    out = []
    for i, d in enumerate(drafts):
        verdict, note = _verdict(d, float(p_adj[i]), float(t_adj[i]), alpha)
        power = (power_paired(d.n, d.sd, d.margin, alpha / m, min_p=d.min_p)
                 if d.kind == "difference" and not d.identical else math.nan)
        notes = [*d.notes, note] if note else list(d.notes)
        rel = d.estimate / d.baseline_mean if d.kind == "difference" and d.baseline_mean else math.nan
        out.append(StatTest(cell=d.cell, endpoint=d.endpoint, test="bit-for-bit" if d.identical else d.test, n=d.n,
                        estimate=d.estimate, ci_low=d.ci[0], ci_high=d.ci[1], margin=d.margin,
                        p=1.0 if d.identical else d.p, p_adjusted=1.0 if d.identical else float(p_adj[i]),
                        verdict=verdict, family=family, role=role, variant=d.variant, baseline=d.baseline,
                        variant_mean=d.variant_mean, baseline_mean=d.baseline_mean, relative=rel,
                        p_tost=d.p_tost, p_tost_adjusted=float(t_adj[i]), mc_error=d.mc_error, check=d.check,
                        check_p=d.check_p, power=power, censored=d.censored, paired=d.paired,
                        note="; ".join(notes)))
    return out


def aggregate_verdict(tests: Sequence[StatTest]) -> str:
    """A finding's verdict from its primary tests: one directional verdict (better, worse,
    increasing, decreasing, optimum) wins over inconclusive ones; two different ones are
    "mixed"; all equivalent (or flat) is that; all identical is identical; else inconclusive."""
    vs = [t.verdict for t in tests]
    if not vs:
        return "inconclusive"
    if all(v == "descriptive" for v in vs):
        return "descriptive"
    if "not identical" in vs:
        return "not identical"
    if all(v == "identical" for v in vs):
        return "identical"
    directional = {v for v in vs if v in ("better", "worse", "increasing", "decreasing", "optimum")}
    if len(directional) > 1:
        return "mixed"
    if directional:
        return directional.pop()
    rest = [v for v in vs if v != "identical"]
    if rest and all(v == "equivalent" for v in rest):
        return "equivalent"
    if rest and all(v == "flat" for v in rest):
        return "flat"
    return "inconclusive"


# ----------------------------------------------------------------------------- 4. claims

def _identical(data: StudyData, cell: str, variant: str, baseline: str, columns: Sequence[str]) -> bool:
    """Every seed's runs of ``variant`` and ``baseline`` have the same values bit for bit in ``columns``."""
    a, b = data.records[cell].get(variant, {}), data.records[cell].get(baseline, {})
    if set(a) != set(b) or not a:
        return False
    return all(r.get("metrics", {}).get(col) == q.get("metrics", {}).get(col) and r.get("metrics", {}).get(col) is not None
               for s in a for r, q in zip(a[s], b[s]) for col in columns)


def _ep_columns(ep: Endpoint) -> list[str]:
    return [ep.metric] + ([ep.minus] if ep.minus else [])


def _claim_cells(data: StudyData, claim: Claim, need: Sequence[str]) -> list[Cell]:
    return [c for c in data.cells if c.control is None and matches(c.factors, claim.where)
            and all(v in c.variants for v in need)]


def _family_name(claim: Claim, n: int) -> str:
    return f"{claim.id}: Holm over {n} test{'s' if n != 1 else ''}"


def _comparison(data: StudyData, claim: Claim, baseline: str) -> tuple[list[StatTest], list[str]]:
    plan, alpha = data.spec.plan, data.spec.plan.alpha
    cells = _claim_cells(data, claim, (claim.variant, baseline))
    inside = [c for c in cells if not c.coincide]
    notes = []
    drafts = [difference_test(data.per_seed(c.label, claim.variant, e), data.per_seed(c.label, baseline, e),
                              plan.endpoints[e], cell=c.label, variant=claim.variant, baseline=baseline,
                              identical=_identical(data, c.label, claim.variant, baseline, _ep_columns(plan.endpoints[e])))
              for c in inside for e in claim.endpoints]
    outside = [difference_test(data.per_seed(c.label, claim.variant, e), data.per_seed(c.label, baseline, e),
                               plan.endpoints[e], cell=c.label, variant=claim.variant, baseline=baseline)
               for c in cells if c.coincide for e in claim.endpoints]
    if outside:
        notes.append(f"{len({d.cell for d in outside})} condition(s) where the means coincide (ESS above "
                     f"{plan.regime.coincide_above:g}) are reported but kept out of the verdict")
    tests: list[StatTest] = []
    if claim.pool and len(inside) > 1:
        pooled = [_pooled(data, claim, baseline, inside, e) for e in claim.endpoints]
        tests += judge(pooled, family=_family_name(claim, len(pooled)), alpha=alpha)
        tests += judge(drafts, family=f"{claim.id} per condition: Holm over {len(drafts)} tests", alpha=alpha,
                       role="secondary")
    else:
        tests += judge(drafts, family=_family_name(claim, len(drafts)), alpha=alpha)
    tests += judge(outside, family=f"{claim.id} outside the regime", alpha=alpha, role="outside regime")
    return tests, notes


def _pooled(data: StudyData, claim: Claim, baseline: str, cells: Sequence[Cell], e: str) -> Draft:
    """One test of the per-seed mean over conditions of the (relative, for a relative margin) difference."""
    ep = data.spec.plan.endpoints[e]
    per = []
    for c in cells:
        x, y = data.per_seed(c.label, claim.variant, e), data.per_seed(c.label, baseline, e)
        ym = np.mean([v.value for v in y.values()])
        per.append({s: (x[s].value - y[s].value) / (abs(ym) if ep.relative and ym else 1.0) for s in x if s in y})
    seeds = sorted(set.intersection(*(set(p) for p in per)))
    d = np.array([np.mean([p[s] for p in per]) for s in seeds])
    draft = differences_test(d, ep.margin, cell=f"pooled over {len(cells)} conditions", endpoint=e,
                             variant=claim.variant, baseline=baseline, higher_is_better=ep.higher_is_better)
    draft.notes.append("per-seed mean over the conditions of the " + ("relative " if ep.relative else "") + "difference")
    return draft


def _levels(data: StudyData, claim: Claim, baseline: str) -> list[list[Cell]]:
    """Groups of conditions that differ only in the claim's factor, each ordered by its level."""
    groups: dict[tuple, list[Cell]] = {}
    for c in data.cells:
        if claim.factor not in c.factors or claim.variant not in c.variants or baseline not in c.variants:
            continue
        if claim.levels and c.factors[claim.factor] not in claim.levels:
            continue
        rest = {k: v for k, v in c.factors.items() if k != claim.factor}
        if claim.where and not matches(rest, claim.where):
            continue
        # factors carried by the claim's factor (they change with it by design) do not split the groups
        key = tuple(sorted((k, v) for k, v in rest.items() if k not in claim.carried))
        groups.setdefault(key, []).append(c)

    def order(c: Cell):
        v = c.factors[claim.factor]
        return claim.levels.index(v) if claim.levels else _level_key(v)

    return [sorted(g, key=order) for g in groups.values() if len(g) >= 2]


def _gaps(data: StudyData, c: Cell, claim: Claim, baseline: str, ep: Endpoint) -> dict[int, float]:
    x, y = data.per_seed(c.label, claim.variant, ep.name), data.per_seed(c.label, baseline, ep.name)
    ym = np.mean([v.value for v in y.values()])
    scale = abs(ym) if ep.relative and ym else 1.0
    return {s: (x[s].value - y[s].value) / scale for s in x if s in y}


def _interaction(data: StudyData, claim: Claim, baseline: str) -> tuple[list[StatTest], list[str]]:
    plan, alpha = data.spec.plan, data.spec.plan.alpha
    drafts: list[Draft] = []
    notes = []
    for group in _levels(data, claim, baseline):
        first, last = group[0], group[-1]
        rest = [x for x in first.short.split(", ") if not x.startswith(f"{claim.factor}=")]
        label = (f"{claim.factor} {first.factors[claim.factor]} -> {last.factors[claim.factor]} at "
                 + (", ".join(rest) if any("=" in x for x in rest) else "the reference settings"))
        for e in claim.endpoints:
            ep = plan.endpoints[e]
            g0, g1 = _gaps(data, first, claim, baseline, ep), _gaps(data, last, claim, baseline, ep)
            ident = all(_identical(data, c.label, claim.variant, baseline, _ep_columns(ep)) for c in (first, last))
            kw = dict(cell=label, endpoint=e, variant=claim.variant, baseline=baseline, higher_is_better=ep.higher_is_better)
            common = sorted(set(g0) & set(g1))
            if len(common) >= MIN_SEEDS_FOR_COMPARISON:
                # paired on the seeds both levels ran (a secondary level may run a subset of the reference's)
                draft = differences_test(np.array([g1[s] - g0[s] for s in common]), ep.margin if ep.relative else
                                         ep.margin_for(_baseline_mean(data, first, baseline, e)), **kw)
                if set(g0) != set(g1):
                    draft.notes.append(f"paired on the {len(common)} seeds both levels ran")
            else:
                a, b = np.array(list(g1.values())), np.array(list(g0.values()))
                t = permutation_test(a, b)
                margin = ep.margin if ep.relative else ep.margin_for(_baseline_mean(data, first, baseline, e))
                draft = Draft(estimate=float(a.mean() - b.mean()), ci=_welch_ci(a, b), margin=margin, p=t.p,
                              n=min(a.size, b.size), paired=False, mc_error=t.mc_error, min_p=t.min_p,
                              sd=_unpaired_sd(a, b),
                              test="permutation (exact)" if t.exact else "permutation (Monte Carlo)", **kw)
                draft.p_tost = max(permutation_test(a + margin, b, alternative="greater").p,
                                   permutation_test(a - margin, b, alternative="less").p)
                draft.notes.append(f"unpaired: the levels have different seeds ({len(g1)} vs {len(g0)})")
            draft.identical = ident
            draft.notes.append(f"the change of the gap {claim.variant} minus {baseline} from {claim.factor}="
                               f"{first.factors[claim.factor]} to {last.factors[claim.factor]}")
            drafts.append(draft)
            if len(group) >= 3:
                gaps = [_gaps(data, c, claim, baseline, ep) for c in group]
                seeds = sorted(set.intersection(*(set(g) for g in gaps)))
                if len(seeds) >= 2 and not ident:
                    tab = np.array([[g[s] for g in gaps] for s in seeds])
                    p, direction = page_trend(tab)
                    trend = Draft(cell=label.replace("->", "-> ... ->"), endpoint=e, test="Page's L (two-sided)",
                                  n=len(seeds), estimate=draft.estimate, ci=draft.ci, margin=draft.margin, p=p,
                                  higher_is_better=True, kind="trend", direction=f"gap {direction} with {claim.factor}",
                                  variant=claim.variant, baseline=baseline)
                    trend.notes.append(f"monotone trend of the gap across {claim.factor} = "
                                       + ", ".join(c.factors[claim.factor] for c in group))
                    drafts.append(trend)
    if claim.factor in plan.confounds:
        notes.append(f"confounded: {plan.confounds[claim.factor]}")
    if claim.carried:
        notes.append(f"{', '.join(claim.carried)} change{'s' if len(claim.carried) == 1 else ''} with {claim.factor} "
                     "by design (see the confounds)")
    return judge(drafts, family=_family_name(claim, len(drafts)), alpha=alpha), notes


def _baseline_mean(data: StudyData, c: Cell, baseline: str, e: str) -> float:
    return float(np.mean([v.value for v in data.per_seed(c.label, baseline, e).values()]))


def _sweep(data: StudyData, claim: Claim) -> tuple[list[StatTest], list[str]]:
    plan, alpha = data.spec.plan, data.spec.plan.alpha
    drafts = []
    for c in data.cells:
        if c.control is not None or not matches(c.factors, claim.where):
            continue
        sweep = sorted((variant_p(v), v) for v in c.variants if variant_p(v) is not None)
        if len(sweep) < 3:
            continue
        ps = np.array([p for p, _ in sweep])
        for e in claim.endpoints:
            ep = plan.endpoints[e]
            cols = [data.per_seed(c.label, v, e) for _, v in sweep]
            seeds = sorted(set.intersection(*(set(k) for k in cols)))
            if len(seeds) < 2:
                continue
            tab = np.array([[col[s].value for col in cols] for s in seeds])
            ref = sweep[int(np.argmin(np.abs(ps - claim.optimum_at)))][1]
            margin = ep.margin_for(float(np.mean([v.value for v in data.per_seed(c.label, ref, e).values()])))
            drafts.append(_trend_draft(tab, ps, margin, ep, c.label, e, claim))
            # an interior optimum answers "balance point" and "progression" claims, not a declared direction
            opt = _optimum_draft(tab, ps, margin, ep, c.label, e, claim) if claim.supports in ("optimum", "monotone") else None
            if opt is not None:
                drafts.append(opt)
    return judge(drafts, family=_family_name(claim, len(drafts)), alpha=alpha), []


def _trend_draft(tab: np.ndarray, ps: np.ndarray, margin: float, ep: Endpoint, cell: str, e: str, claim: Claim) -> Draft:
    """Page's test of a monotone trend in p; effect = the mean per-seed least-squares slope times the
    p range (the change across the sweep, endpoint units), with its interval and TOST."""
    flat = bool(np.all(tab == tab[:, :1]))
    p, direction = (1.0, "increasing") if flat else page_trend(tab)
    pc = ps - ps.mean()
    change = (tab - tab.mean(1, keepdims=True)) @ pc / (pc @ pc) * (ps.max() - ps.min())
    d = differences_test(change, margin, cell=cell, endpoint=e, higher_is_better=True)
    d.kind, d.test, d.p = "trend", "Page's L (two-sided)", p
    d.direction = "increasing" if d.estimate > 0 else "decreasing"
    if direction != d.direction and p <= 0.5:
        d.notes.append(f"Page's ranks point {direction} while the mean slope is {d.direction}")
    d.notes.append(f"change across p = {ps.min():g} .. {ps.max():g} (per-seed least-squares slope x range)")
    return d


def _optimum_draft(tab: np.ndarray, ps: np.ndarray, margin: float, ep: Endpoint, cell: str, e: str,
                   claim: Claim) -> Draft | None:
    """Interior optimum at p0: the p0 variant better than both neighbours (intersection-union test:
    p = max of the two one-sided sign-flip p-values); effect = the smaller mean lead."""
    j = int(np.argmin(np.abs(ps - claim.optimum_at)))
    if ps[j] != claim.optimum_at or j == 0 or j == len(ps) - 1:
        return None
    sign = 1.0 if ep.higher_is_better else -1.0
    leads = [sign * (tab[:, j] - tab[:, k]) for k in (j - 1, j + 1)]
    p = max(sign_flip_test(lead, alternative="greater").p for lead in leads)
    worse = min(leads, key=lambda lead: lead.mean())
    d = differences_test(worse, margin, cell=cell, endpoint=e, higher_is_better=True)
    d.kind, d.test, d.p, d.p_tost = "optimum", "intersection-union of 2 one-sided sign-flip tests", p, math.nan
    d.notes.append(f"p={ps[j]:g} against its neighbours p={ps[j - 1]:g} and p={ps[j + 1]:g}; estimate = the smaller lead")
    return d


def _descriptive(data: StudyData, claim: Claim, baseline: str | None) -> tuple[list[StatTest], list[str]]:
    """Numbers without a test: each variant's mean (or its per-seed difference from, or ratio to,
    the baseline) with a 95% interval; without a declared variant, every variant but the baseline."""
    drafts = []
    for c in data.cells:
        if c.control is not None or not matches(c.factors, claim.where) or (baseline and baseline not in c.variants):
            continue
        for v in ([claim.variant] if claim.variant else [v for v in c.variants if v != baseline]):
            if v not in c.variants:
                continue
            drafts += [_describe(data, c, v, e, baseline, claim.ratio) for e in claim.endpoints]
    return judge(drafts, family=f"{claim.id}: no test", alpha=data.spec.plan.alpha), []


def _describe(data: StudyData, c: Cell, v: str, e: str, baseline: str | None, ratio: bool) -> Draft:
    x = data.per_seed(c.label, v, e)
    vals = np.array([val.value for val in x.values()])
    note = ""
    if baseline:
        y = data.per_seed(c.label, baseline, e)
        seeds = sorted(set(x) & set(y))
        d = np.array([math.log(x[s].value / y[s].value) if ratio else x[s].value - y[s].value for s in seeds])
        lo, hi = mean_ci(d) if d.size >= 3 else (math.nan, math.nan)
        est, ci = float(d.mean()), (lo, hi)
        if ratio:
            est, ci = math.exp(est), (math.exp(lo), math.exp(hi))
        note = (f"ratio to {baseline} (geometric mean of the per-seed ratios)" if ratio
                else f"difference from {baseline}, per seed")
    else:
        est, ci = float(vals.mean()), (mean_ci(vals) if vals.size >= 3 else (math.nan, math.nan))
    draft = Draft(cell=c.label, endpoint=e, test="none", n=int(vals.size), estimate=est, ci=ci,
                  margin=data.spec.plan.endpoints[e].margin, p=math.nan, higher_is_better=True, kind="descriptive",
                  variant=v, baseline=baseline or "", variant_mean=float(vals.mean()))
    if note:
        draft.notes.append(note)
    return draft


def _controls(data: StudyData, baseline: str | None) -> list[Finding]:
    out = []
    for k, control in enumerate(data.spec.plan.controls):
        drafts = []
        for c in data.cells:
            if not matches(c.factors, control.where) or baseline not in c.variants:
                continue
            for v in c.variants:
                if v == baseline:
                    continue
                ident = _identical(data, c.label, v, baseline, [data.spec.metric])
                dev = _max_deviation(data, c.label, v, baseline)
                drafts.append(Draft(cell=c.label, endpoint=data.spec.metric, test="bit-for-bit", n=len(data.records[c.label][v]),
                                    estimate=dev, ci=(math.nan, math.nan), margin=0.0, p=math.nan, higher_is_better=True,
                                    kind="descriptive", variant=v, baseline=baseline, identical=ident))
        if not drafts:
            continue
        tests = [t if t.verdict == "identical" else StatTest(**{**t.__dict__, "verdict": "not identical"})
                 for t in judge(drafts, family="control: no test", alpha=data.spec.plan.alpha, role="control")]
        verdict = aggregate_verdict(tests)
        n_same = sum(t.verdict == "identical" for t in tests)
        out.append(Finding(
            id=f"control-{k + 1}", kind="control", claim=f"Every variant gives the same run: {control.reason}",
            study=data.spec.name, endpoint=f"`{data.spec.metric}` at every step, bit for bit", margin="none (bit for bit)",
            family="a control: reported as a control, never pooled into a claim", tests=tuple(tests), verdict=verdict,
            supports=None, outcome=outcome(verdict, None),
            summary=(f"{n_same} of {len(tests)} variant-condition pairs identical to {baseline} bit for bit"
                     + ("" if n_same == len(tests) else "; largest deviation "
                        + f"{max(t.estimate for t in tests if t.verdict != 'identical'):.3g}"))))
    return out


def _max_deviation(data: StudyData, cell: str, v: str, baseline: str) -> float:
    a, b = data.records[cell][v], data.records[cell][baseline]
    dev = 0.0
    for s in set(a) & set(b):
        ya, yb = series(a[s][0], data.spec.metric), series(b[s][0], data.spec.metric)
        if ya is not None and yb is not None and ya.shape == yb.shape:
            dev = max(dev, float(np.nanmax(np.abs(ya - yb))) if ya.size else 0.0)
    return dev


# ----------------------------------------------------------------------------- the analysis

@dataclass
class Analysis:
    """The study's data, per-variant summaries, findings and the exploratory comparisons."""

    data: StudyData
    summaries: list[Summary]
    findings: list[Finding]
    exploratory: list[StatTest]


def exploratory(data: StudyData, baseline: str | None) -> list[StatTest]:
    """Every variant against the baseline in every non-control condition on every outcome endpoint
    (those a comparison or interaction claim uses; all of them without claims); Holm within
    (condition, endpoint) across variants. Reported as exploratory: no claim rests on them."""
    if baseline is None:
        return []
    plan = data.spec.plan
    outcomes = [e for e in plan.endpoints if any(e in c.endpoints for c in plan.claims
                                                  if c.kind in ("comparison", "interaction"))]
    if not plan.claims:
        outcomes = list(plan.endpoints)
    out = []
    for c in data.cells:
        if c.control is not None or baseline not in c.variants:
            continue
        for e in outcomes:
            ep = plan.endpoints[e]
            drafts = [difference_test(data.per_seed(c.label, v, e), data.per_seed(c.label, baseline, e), ep, cell=c.label,
                                      variant=v, baseline=baseline,
                                      identical=_identical(data, c.label, v, baseline, _ep_columns(ep)))
                      for v in c.variants if v != baseline and len(data.values[c.label][v]) >= 2]
            out += judge(drafts, family=f"exploratory: {c.label} / {e}: Holm over {len(drafts)} variants",
                         alpha=plan.alpha, role="exploratory")
    return out


def _summary_line(data: StudyData, tests: Sequence[StatTest], verdict: str) -> str:
    """One line: how many primary tests gave which verdict, and the key one's effect."""
    short = {c.label: c.short for c in data.cells}
    prim = [t for t in tests if t.role == "primary"]
    if not prim:
        return "no condition of this study measures it"
    if verdict == "descriptive":
        return "; ".join(f"{t.variant} {t.endpoint} {t.estimate:.3g} [{t.ci_low:.3g}, {t.ci_high:.3g}]"
                         + f" at {short.get(t.cell, t.cell)}" for t in prim[:6]) + (
                             f" ({prim[0].note})" if prim[0].note else "") + ("; ..." if len(prim) > 6 else "")
    # the key test: one that gave the finding its verdict, the most significant of those
    key = min(prim, key=lambda t: (t.verdict != verdict, t.verdict in ("inconclusive", "identical"),
                                   t.p_adjusted if math.isfinite(t.p_adjusted) else 2))
    counts = {v: sum(t.verdict == v for t in prim) for v in dict.fromkeys(t.verdict for t in prim)}
    head = ", ".join(f"{n} {v}" for v, n in counts.items())
    eff = (f"{key.endpoint} at {short.get(key.cell, key.cell)}: {key.estimate:+.3g} [95% CI {key.ci_low:.3g}, {key.ci_high:.3g}]"
           f" (margin {key.margin:.3g}; Holm p = {key.p_adjusted:.2g}" + (
               f", TOST Holm p = {key.p_tost_adjusted:.2g}" if math.isfinite(key.p_tost_adjusted) else "")
           + (f", power {key.power:.2f}" if key.verdict == "inconclusive" and math.isfinite(key.power) else "")
           + f", n = {key.n})")
    return f"{len(prim)} primary test(s): {head}; key: {eff}"


def _finding(data: StudyData, claim: Claim, tests: list[StatTest], notes: list[str]) -> Finding:
    plan = data.spec.plan
    prim = [t for t in tests if t.role == "primary"]
    verdict = aggregate_verdict(prim) if prim else "inconclusive"
    if not prim:
        notes = [*notes, "no condition of this study measures it"]
    eps = [plan.endpoints[e] for e in claim.endpoints]
    return Finding(
        id=claim.id, kind=claim.kind, claim=claim.claim, study=data.spec.name,
        endpoint="; ".join(f"{e.name}: {e.describe()}" for e in eps),
        margin="; ".join(f"{e.name} {e.margin:.0%} of the baseline" if e.relative else f"{e.name} {e.margin:g}" for e in eps),
        family=(prim[0].family if prim else "empty") + f" (alpha {plan.alpha:g})", tests=tuple(tests), verdict=verdict,
        supports=claim.supports, outcome=outcome(verdict, claim.supports), summary=_summary_line(data, tests, verdict),
        figure=claim.figure, notes=tuple(notes))


def _claim_tests(data: StudyData, claim: Claim, baseline: str | None) -> tuple[list[StatTest], list[str]]:
    """One declared claim's tests on ``data`` and the notes they raise (by the claim's kind)."""
    base = claim.baseline or baseline
    if claim.kind == "comparison":
        return _comparison(data, claim, base)
    if claim.kind == "interaction":
        return _interaction(data, claim, base)
    if claim.kind == "sweep":
        return _sweep(data, claim)
    return _descriptive(data, claim, claim.baseline)


def _claim_findings(data: StudyData, spec: StudySpec, baseline: str | None) -> list[Finding]:
    """Every declared claim judged on ``data``, in plan order."""
    return [_finding(data, claim, *_claim_tests(data, claim, baseline)) for claim in spec.plan.claims]


def perturbed_values(data: StudyData, robustness: Robustness, draw: int) -> StudyData:
    """``data`` with every endpoint value moved as another machine's rounding could move it: run
    (cell, variant, seed) by +-shift[e] and every run of a seed by +-common[e] (signs from the
    stream [robustness.seed, draw], in a fixed order). A threshold never reached stays the censored
    budget (a shift cannot make a run reach it)."""
    rng = np.random.default_rng([robustness.seed, draw])
    names = list(data.spec.plan.endpoints)
    seeds = sorted({s for c in data.values.values() for v in c.values() for s in v})
    common = {(s, e): float(rng.choice([-1.0, 1.0])) * robustness.common.get(e, 0.0) for s in seeds for e in names}
    values: dict[str, dict[str, dict[int, dict[str, EndpointValue]]]] = {}
    for cell in sorted(data.values):
        for v in sorted(data.values[cell]):
            for s in sorted(data.values[cell][v]):
                moved = {}
                for e in names:
                    ev = data.values[cell][v][s][e]
                    step = float(rng.choice([-1.0, 1.0])) * robustness.shift.get(e, 0.0) + common[(s, e)]
                    moved[e] = ev if ev.censored or not math.isfinite(ev.value) else EndpointValue(ev.value + step)
                values.setdefault(cell, {}).setdefault(v, {})[s] = moved
    return dataclasses.replace(data, values=values)


def robust_findings(data: StudyData, spec: StudySpec, baseline: str | None) -> list[Finding]:
    """Every declared claim judged on ``data`` (in plan order), with every test whose verdict changes
    under a perturbation of the declared cross-machine size (:func:`perturbed_values`,
    ``spec.plan.robustness.draws`` re-analyses) made "inconclusive", noted as fragile; the
    finding's verdict is drawn from those tests. So a verdict stands only where rounding of that
    size cannot move it (a directional verdict never turns into another here: it becomes
    inconclusive)."""
    rob = spec.plan.robustness
    judged = [_claim_tests(data, claim, baseline) for claim in spec.plan.claims]
    changed = [[0] * len(tests) for tests, _ in judged]
    for draw in range(rob.draws):
        moved = perturbed_values(data, rob, draw)
        for i, claim in enumerate(spec.plan.claims):
            for j, (t, u) in enumerate(zip(judged[i][0], _claim_tests(moved, claim, baseline)[0])):
                # an inconclusive test stays inconclusive whatever a perturbation makes of it
                changed[i][j] += t.verdict != u.verdict and t.verdict != "inconclusive"
    out = []
    for claim, (tests, notes), ch in zip(spec.plan.claims, judged, changed):
        before = _finding(data, claim, tests, notes)
        if not any(ch):
            out.append(before)
            continue
        marked = [dataclasses.replace(t, verdict="inconclusive", note="; ".join(
            [*([t.note] if t.note else []), f"fragile: was {t.verdict}, changed in {k} of {rob.draws} re-analyses "
             "with the endpoints moved by the declared cross-machine size"])) if k else t for t, k in zip(tests, ch)]
        after = _finding(data, claim, marked, notes)
        n = sum(1 for t, k in zip(tests, ch) if k and t.role == "primary")
        out.append(dataclasses.replace(after, notes=(*after.notes, (
            f"{n} primary test(s) fragile under the declared cross-machine perturbation: reported inconclusive"
            + (f" (the verdict before that check: {before.verdict})" if after.verdict != before.verdict else "")))))
    return out


def analyze(records: Sequence[dict[str, Any]], spec: StudySpec) -> Analysis:
    """The whole analysis of a study's finished runs under its declared plan (with the plan's
    ``[robustness]``: every verdict checked against a cross-machine-size perturbation,
    :func:`robust_findings`)."""
    data = collect(records, spec)
    baseline = spec.baseline if spec.compare else None
    findings = (_claim_findings(data, spec, baseline) if spec.plan.robustness is None else
                robust_findings(data, spec, baseline))
    controls = _controls(data, baseline) if baseline else []
    return Analysis(data, summaries(data), controls + findings, exploratory(data, baseline))

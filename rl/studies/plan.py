"""A study's analysis plan: endpoints, margins, claims, controls and regime checks, declared in
the spec before anything runs, so that the statistics only execute what was declared.

In TOML, beside ``[study]``, ``[base]`` and ``[[grid]]``::

    [endpoints."samples_to_0.9"]      # a name (quoted: it holds a dot), then its definition
    kind = "to_threshold"             # first crossing, interpolated, right-censored at the budget
    metric = "exact_reward"           # the per-step column of the results (default: [study] metric)
    threshold = 0.9                   # a number, never a fraction of the best variant
    x = "samples"                     # counted in samples consumed ("samples") or steps taken ("steps")
    margin = 0.05                     # smallest effect of interest ...
    relative = true                   # ... as a fraction of the baseline's mean in that condition

    [endpoints.auc]
    kind = "mean"                     # mean over all steps (area under the curve / steps)
    margin = 0.01                     # in the metric's units

    [endpoints.drawdown]
    kind = "max_drawdown"             # largest fall below the running best of the trailing mean
    window = 1                        # trailing window (steps) smoothing a sampled metric
    collapse = 0.2                    # a run whose drawdown reaches this has collapsed
    margin = 0.02

    [[controls]]                      # conditions where the theory says every variant is identical
    where = [{ off_policy = "1x1" }]
    reason = "on-policy: every p gives the same gradient (T10)"

    [[claims]]
    id = "hmpo-sample-efficiency-vs-gspo"
    kind = "comparison"               # comparison | interaction | sweep | descriptive
    claim = "HMPO (p=-1) is more sample-efficient than GSPO (p=0)"
    variant = "p=-1"                  # against [study] baseline unless `baseline` is given
    endpoints = ["samples_to_0.9", "auc"]
    supports = "better"               # the verdict that would support the claim
    where = [{ off_policy = "4x4", policy_lag = "0", vocab = "8" }]   # the conditions it is judged in

    [regime]                          # optional: where the means can differ at all
    ess_metric = "loss/token_weight_ess"
    variant = "p=-1"                  # whose ESS labels a condition
    coincide_above = 0.95             # ESS above this: "the means coincide here", kept out of pooled verdicts

    [robustness]                      # optional: the size of cross-machine arithmetic differences
    draws = 20                        # perturbed re-analyses
    shift = { auc = 0.008 }           # each run's endpoint moved by +-this (a sign per run and draw)
    common = { auc = 0.12 }           # every run of a seed moved together by +-this (a sign per seed)

    [confounds]                       # factors that change two things at once
    off_policy = "4x4 also makes 16 optimizer updates per batch of samples instead of 1"

Claim kinds: *comparison* (variant against baseline per condition; ``pool = true`` adds one
test of the per-seed mean difference over the conditions, outside those where the means
coincide); *interaction* (does the variant-minus-baseline gap change with ``factor``, other
factors fixed: the contrast last level minus first level, plus Page's trend test with 3 or more
levels; ``levels`` = [a, b, ...] restricts and orders the levels contrasted, a first; ``carried``
names factors that change with the factor by design, e.g. the learning rate with the optimizer or
the step count with the reuse when updates are held equal: they may differ between the levels,
and the report names them as confounds); *sweep* (the endpoint across the plain power variants ordered by p: Page's trend test
and an interior optimum at ``optimum_at``, default p = 0); *descriptive* (numbers without a
test; without a ``variant``, every variant other than the baseline). A condition filter is a table of factor = value (the values as the cell labels write
them); a condition matches when every named factor has that value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ENDPOINT_KINDS", "CLAIM_KINDS", "SUPPORTS", "Endpoint", "Claim", "Control", "Regime", "Robustness", "Plan",
           "parse_plan", "matches"]

#: how a run's per-step metric becomes one number (see Endpoint)
ENDPOINT_KINDS = ("mean", "final", "median", "to_threshold", "max_drawdown")
CLAIM_KINDS = ("comparison", "interaction", "sweep", "descriptive")
#: the verdict a claim declares as the one that supports it
SUPPORTS = ("better", "worse", "differs", "equivalent", "increasing", "decreasing", "monotone", "optimum")
_LOWER_IS_BETTER = ("to_threshold", "max_drawdown")
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass(frozen=True)
class Endpoint:
    """How one run becomes one number, and the smallest difference in it that matters.

    kinds, with y_t the metric logged at step t (t = 1..T) and x_t what had been consumed when
    it was taken (samples, or steps: the trainer logs a step's metrics before its update):
    - ``mean``: (1/T) sum_t y_t (the area under the curve per step), finite values only;
    - ``final``: mean of the last ``last`` values;
    - ``median``: median over steps (timings);
    - ``to_threshold``: the x at which y first reaches ``threshold``, linearly interpolated
      between the two steps around the crossing (x_1 if the first step is already there),
      right-censored at x_T when it never does (value x_T, flagged censored);
    - ``max_drawdown``: max_t (max_{u<=t} m_u - m_t), m the trailing mean over ``window``
      steps (full windows only): the largest fall below the run's own best; collapsed iff it
      is >= ``collapse`` (declare a window and a collapse that sampling noise alone cannot reach).
    ``minus`` (a second metric) makes the endpoint the difference of the two metrics' values.
    ``margin`` is in the endpoint's units, or a fraction of the baseline's mean if ``relative``.
    """

    name: str
    kind: str
    metric: str
    margin: float
    relative: bool = False
    threshold: float | None = None
    x: str = "samples"
    last: int = 1
    window: int = 1
    collapse: float | None = None
    minus: str | None = None
    higher_is_better: bool = True
    description: str = ""

    def margin_for(self, baseline_mean: float) -> float:
        """The absolute margin in a condition whose baseline mean is ``baseline_mean``."""
        return self.margin * abs(baseline_mean) if self.relative else self.margin

    def describe(self) -> str:
        """The definition in words (rendered in the report's method)."""
        if self.kind == "mean":
            what = f"mean of `{self.metric}` over all steps"
        elif self.kind == "final":
            what = (f"`{self.metric}` at the last step" if self.last == 1 else
                    f"mean of `{self.metric}` over the last {self.last} steps")
        elif self.kind == "median":
            what = f"median of `{self.metric}` over steps"
        elif self.kind == "to_threshold":
            what = (f"{self.x} consumed until `{self.metric}` first reaches {self.threshold:g}, linearly "
                    "interpolated, right-censored at the budget")
        else:
            what = (f"largest fall of `{self.metric}`" + (f" (trailing {self.window}-step mean)" if self.window > 1 else "")
                    + " below its running best"
                    + (f"; a run collapsed when it reaches {self.collapse:g}" if self.collapse else ""))
        if self.minus:
            what += f", minus the same of `{self.minus}`"
        margin = f"{self.margin:.0%} of the baseline's mean" if self.relative else f"{self.margin:g}"
        lead = f"{self.description} " if self.description else ""
        return f"{lead}{what}; {'higher' if self.higher_is_better else 'lower'} is better; margin {margin}"


@dataclass(frozen=True)
class Control:
    """Conditions in which the theory says every variant gives the same run: reported as controls
    (identical or not), never pooled into a claim."""

    where: tuple[dict[str, str], ...]
    reason: str


@dataclass(frozen=True)
class Claim:
    """One claim and the tests that decide it (see the module docstring)."""

    id: str
    kind: str
    claim: str
    endpoints: tuple[str, ...]
    supports: str | None = None
    variant: str | None = None
    baseline: str | None = None
    where: tuple[dict[str, str], ...] = ()
    factor: str | None = None
    pool: bool = False
    optimum_at: float = 0.0
    ratio: bool = False
    figure: str | None = None
    levels: tuple[str, ...] = ()
    carried: tuple[str, ...] = ()


@dataclass(frozen=True)
class Regime:
    """Where the means can differ: a condition's ESS is the median over ``variant``'s runs of the
    run's mean of ``ess_metric``; above ``coincide_above`` the means coincide there (labelled,
    kept out of pooled verdicts). ``objective_max`` with ``saturation``: a condition whose best
    variant ends above saturation x objective_max is labelled saturated."""

    ess_metric: str = "loss/token_weight_ess"
    variant: str = "p=-1"
    coincide_above: float | None = None
    objective_max: float | None = None
    saturation: float | None = None


@dataclass(frozen=True)
class Robustness:
    """How far another machine's rounding can move the endpoints (measured on pilot seeds): each
    run's value of endpoint e by up to ``shift[e]`` on its own, and every run of one seed together by
    up to ``common[e]`` (e.g. a warm-start checkpoint that rounds differently). The analysis redoes
    every test ``draws`` times with the values moved by +-those sizes (random signs, a fixed stream
    from ``seed``); a test whose verdict changes in any draw is reported "inconclusive" as fragile,
    so that no verdict hinges on the last bits (rl.studies.analysis.analyze)."""

    shift: dict[str, float] = field(default_factory=dict)
    common: dict[str, float] = field(default_factory=dict)
    draws: int = 20
    seed: int = 0


@dataclass(frozen=True)
class Plan:
    """The declared analysis of a study."""

    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    claims: tuple[Claim, ...] = ()
    controls: tuple[Control, ...] = ()
    regime: Regime = Regime()
    confounds: dict[str, str] = field(default_factory=dict)
    alpha: float = 0.05
    robustness: Robustness | None = None

    def to_dict(self) -> dict[str, Any]:
        """The TOML-shaped tables this plan was parsed from (round-trips through parse_plan)."""
        from dataclasses import asdict

        eps = {}
        for name, e in self.endpoints.items():
            d = {k: v for k, v in asdict(e).items() if k not in ("name", "higher_is_better") and v is not None}
            if e.kind not in _LOWER_IS_BETTER:
                d["higher_is_better"] = e.higher_is_better
            eps[name] = d
        claims = []
        for c in self.claims:
            d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(c).items() if v not in (None, (), False)}
            if c.kind != "sweep":
                d.pop("optimum_at", None)
            claims.append(d)
        out: dict[str, Any] = {}
        if eps:
            out["endpoints"] = eps
        if claims:
            out["claims"] = claims
        if self.controls:
            out["controls"] = [{"where": list(c.where), "reason": c.reason} for c in self.controls]
        reg = {k: v for k, v in asdict(self.regime).items() if v is not None}
        if reg != {k: v for k, v in asdict(Regime()).items() if v is not None}:
            out["regime"] = reg
        if self.confounds:
            out["confounds"] = dict(self.confounds)
        if self.robustness is not None:
            out["robustness"] = asdict(self.robustness)
        return out


def matches(cell: dict[str, str], where: tuple[dict[str, str], ...]) -> bool:
    """True when ``cell`` satisfies one of the filters (every factor a filter names has its value);
    an empty filter list matches every cell."""
    if not where:
        return True
    return any(all(cell.get(k) == v for k, v in f.items()) for f in where)


def _number(v: Any, what: str, *, positive: bool = False, allow_none: bool = False) -> float | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, got {v!r}")
    if positive and v <= 0:
        raise ValueError(f"{what} must be positive, got {v!r}")
    return float(v)


def _keys(table: dict[str, Any], allowed: set[str], what: str) -> None:
    bad = set(table) - allowed
    if bad:
        raise ValueError(f"{what}: unknown keys {sorted(bad)}; allowed {sorted(allowed)}")


def _filters(v: Any, what: str) -> tuple[dict[str, str], ...]:
    if v is None:
        return ()
    if isinstance(v, dict):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(f, dict) and f for f in v):
        raise ValueError(f"{what}: 'where' must be a list of non-empty tables of factor = value")
    return tuple({str(k): (f"{x:g}" if isinstance(x, float) else str(x)) for k, x in f.items()} for f in v)


def _strings(v: Any, what: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in v):
        raise ValueError(f"{what} must be a list of values as the cell labels write them, got {v!r}")
    return tuple(f"{x:g}" if isinstance(x, float) else str(x) for x in v)


def _endpoint(name: str, t: dict[str, Any], metric: str) -> Endpoint:
    what = f"endpoint {name!r}"
    if not _NAME.match(name):
        raise ValueError(f"{what}: a name is letters, digits, '_', '.', '+' or '-'")
    _keys(t, {"kind", "metric", "margin", "relative", "threshold", "x", "last", "window", "collapse", "minus",
              "higher_is_better", "description"}, what)
    kind = t.get("kind")
    if kind not in ENDPOINT_KINDS:
        raise ValueError(f"{what}: kind must be one of {ENDPOINT_KINDS}, got {kind!r}")
    if "margin" not in t:
        raise ValueError(f"{what}: declare its margin (the smallest effect of interest)")
    threshold = _number(t.get("threshold"), f"{what}: threshold", allow_none=True)
    if kind == "to_threshold" and threshold is None:
        raise ValueError(f"{what}: a to_threshold endpoint needs a threshold (a number)")
    if t.get("x", "samples") not in ("samples", "steps"):
        raise ValueError(f"{what}: x must be 'samples' or 'steps', got {t.get('x')!r}")
    last, window = t.get("last", 1), t.get("window", 1)
    for k, v in (("last", last), ("window", window)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{what}: {k} must be an integer >= 1, got {v!r}")
    if kind in _LOWER_IS_BETTER and t.get("higher_is_better"):
        raise ValueError(f"{what}: a {kind} endpoint is lower-is-better by definition")
    return Endpoint(
        name=name, kind=kind, metric=str(t.get("metric", metric)),
        margin=_number(t["margin"], f"{what}: margin", positive=True), relative=bool(t.get("relative", False)),
        threshold=threshold, x=str(t.get("x", "samples")), last=last, window=window,
        collapse=_number(t.get("collapse"), f"{what}: collapse", positive=True, allow_none=True),
        minus=t.get("minus"),
        higher_is_better=False if kind in _LOWER_IS_BETTER else bool(t.get("higher_is_better", True)),
        description=str(t.get("description", "")))


def _claim(t: dict[str, Any], endpoints: dict[str, Endpoint], canonical) -> Claim:
    what = f"claim {t.get('id')!r}"
    _keys(t, {"id", "kind", "claim", "endpoints", "supports", "variant", "baseline", "where", "factor", "pool",
              "optimum_at", "ratio", "figure", "levels", "carried"}, what)
    if not isinstance(t.get("id"), str) or not _NAME.match(t["id"]):
        raise ValueError(f"{what}: 'id' must be given: letters, digits, '_', '.', '+' or '-'")
    kind = t.get("kind")
    if kind not in CLAIM_KINDS:
        raise ValueError(f"{what}: kind must be one of {CLAIM_KINDS}, got {kind!r}")
    eps = t.get("endpoints")
    if isinstance(eps, str):
        eps = [eps]
    if not isinstance(eps, list) or not eps:
        raise ValueError(f"{what}: 'endpoints' must name at least one declared endpoint")
    unknown = [e for e in eps if e not in endpoints]
    if unknown:
        raise ValueError(f"{what}: endpoints {unknown} are not declared; declared: {sorted(endpoints)}")
    supports = t.get("supports")
    if kind == "descriptive":
        if supports is not None:
            raise ValueError(f"{what}: a descriptive claim has no test, so nothing 'supports' it")
    elif supports not in SUPPORTS:
        raise ValueError(f"{what}: supports must be one of {SUPPORTS}, got {supports!r}")
    variant = canonical(t["variant"]) if t.get("variant") else None
    if kind in ("comparison", "interaction") and variant is None:
        raise ValueError(f"{what}: a {kind} claim names its 'variant'")
    if kind == "sweep" and len({endpoints[e].higher_is_better for e in eps}) > 1:
        raise ValueError(f"{what}: a sweep's endpoints must all be higher-is-better or all lower-is-better, so that "
                         "one trend verdict reads the same way for each")
    if kind == "interaction" and not isinstance(t.get("factor"), str):
        raise ValueError(f"{what}: an interaction claim names the 'factor' whose levels it contrasts")
    levels, carried = _strings(t.get("levels"), f"{what}: levels"), _strings(t.get("carried"), f"{what}: carried")
    if (levels or carried) and kind != "interaction":
        raise ValueError(f"{what}: 'levels' and 'carried' belong to interaction claims")
    if levels and len(levels) < 2:
        raise ValueError(f"{what}: 'levels' names at least 2 levels of the factor, got {list(levels)}")
    if t.get("factor") in carried:
        raise ValueError(f"{what}: the factor {t['factor']!r} cannot also be 'carried'")
    return Claim(id=t["id"], kind=kind, claim=str(t.get("claim", t["id"])), endpoints=tuple(eps), supports=supports,
                 variant=variant, baseline=canonical(t["baseline"]) if t.get("baseline") else None,
                 where=_filters(t.get("where"), what), factor=t.get("factor"), pool=bool(t.get("pool", False)),
                 optimum_at=_number(t.get("optimum_at", 0.0), f"{what}: optimum_at"), ratio=bool(t.get("ratio", False)),
                 figure=t.get("figure"), levels=levels, carried=carried)


def parse_plan(data: dict[str, Any], *, metric: str, alpha: float, canonical) -> Plan:
    """The plan from a spec's ``endpoints``, ``claims``, ``controls``, ``regime`` and ``confounds``
    tables. ``canonical`` maps variant names to canonical ones (rl.studies.spec.canonical_variant)."""
    raw = data.get("endpoints", {})
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise ValueError("[endpoints.NAME] must be tables")
    endpoints = {name: _endpoint(name, t, metric) for name, t in raw.items()}
    claims_raw = data.get("claims", [])
    if not isinstance(claims_raw, list) or not all(isinstance(c, dict) for c in claims_raw):
        raise ValueError("[[claims]] must be tables")
    claims = tuple(_claim(c, endpoints, canonical) for c in claims_raw)
    ids = [c.id for c in claims]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"claims: ids must be unique, repeated {dup}")
    controls = []
    for c in data.get("controls", []):
        if not isinstance(c, dict):
            raise ValueError("[[controls]] must be tables")
        _keys(c, {"where", "reason"}, "control")
        if not c.get("where") or not c.get("reason"):
            raise ValueError("a control names its conditions ('where') and the 'reason' they must coincide")
        controls.append(Control(_filters(c["where"], "control"), str(c["reason"])))
    reg = data.get("regime", {})
    if not isinstance(reg, dict):
        raise ValueError("[regime] must be a table")
    _keys(reg, {"ess_metric", "variant", "coincide_above", "objective_max", "saturation"}, "[regime]")
    regime = Regime(ess_metric=str(reg.get("ess_metric", Regime.ess_metric)),
                    variant=canonical(reg.get("variant", Regime.variant)),
                    coincide_above=_number(reg.get("coincide_above"), "[regime] coincide_above", allow_none=True),
                    objective_max=_number(reg.get("objective_max"), "[regime] objective_max", allow_none=True),
                    saturation=_number(reg.get("saturation"), "[regime] saturation", allow_none=True))
    confounds = data.get("confounds", {})
    if not isinstance(confounds, dict) or not all(isinstance(v, str) for v in confounds.values()):
        raise ValueError("[confounds] must map factor names to sentences")
    return Plan(endpoints=endpoints, claims=claims, controls=tuple(controls), regime=regime,
                confounds=dict(confounds), alpha=alpha, robustness=_robustness(data.get("robustness"), endpoints))


def _robustness(t: Any, endpoints: dict[str, Endpoint]) -> Robustness | None:
    """The ``[robustness]`` table: ``shift`` and ``common`` map declared endpoints to sizes >= 0
    (in the endpoint's units), ``draws`` >= 1 re-analyses, ``seed`` of their signs."""
    if t is None:
        return None
    if not isinstance(t, dict):
        raise ValueError("[robustness] must be a table")
    _keys(t, {"shift", "common", "draws", "seed"}, "[robustness]")
    sizes = {}
    for part in ("shift", "common"):
        d = t.get(part, {})
        if not isinstance(d, dict):
            raise ValueError(f"[robustness] {part} must map endpoint names to sizes")
        bad = sorted(set(d) - set(endpoints))
        if bad:
            raise ValueError(f"[robustness] {part}: unknown endpoints {bad}; declared: {sorted(endpoints)}")
        for k, v in d.items():
            v = _number(v, f"[robustness] {part}.{k}")
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"[robustness] {part}.{k} must be a finite size >= 0, got {v!r}")
            sizes.setdefault(part, {})[k] = v
    draws = t.get("draws", 20)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"[robustness] draws must be an integer >= 1, got {draws!r}")
    seed = t.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"[robustness] seed must be an integer, got {seed!r}")
    return Robustness(shift=sizes.get("shift", {}), common=sizes.get("common", {}), draws=draws, seed=seed)

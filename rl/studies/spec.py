"""Study specifications: a declarative grid (TOML file or named preset) -> a list of runs.

A study answers a question by running the trainer over a grid of *factors* x *seeds*:

    [study]
    name = "offpolicy"
    description = "Does p matter once training is off-policy?"
    baseline = "p=0"            # the variant every other one is compared against (GSPO)
    metric = "reward_mean"      # the per-step column the curves show and endpoints use by default
    alpha = 0.05                # family-wise error rate of each claim
    plan_note = "declared before the runs"   # when and how the analysis plan was fixed
    [base]                      # trainer settings shared by every run
    env = "seq-bandit"
    steps = 80
    group_size = 8

    [[grid]]                    # every combination of the listed values (a product) ...
    variant = ["p=1", "p=0", "p=-1", "grpo-token"]
    clip = ["0.2", "gspo"]      # named window, a number eps, or [eps_low, eps_high]
    off_policy = ["1x1", "4x4"] # epochs x minibatches
    seeds = 5                   # 0..4, or an explicit list

    [[grid]]                    # ... and several [[grid]] tables give their union
    variant = ["p=0", "p=-1"]
    seq_len = [4, 16]
    seeds = 5

Factors with a special meaning:
- ``variant``: a loss variant by name (see :data:`VARIANTS`; ``p=<number>`` for any power
  mean at the sequence level, ``luspo-p=<number>`` for the same with LUSPO's length weighting;
  aliases ``gspo``, ``hmpo``, ``arithmetic``, ``grpo``), expanded into the loss settings (level,
  p, mean, agg, learnable p) it stands for.
- ``clip``: the clip window, expanded into ``eps_low``/``eps_high``: ``"0.2"`` (PPO/GRPO),
  ``"gspo"`` (GSPO's 3e-4 / 4e-4 for sequence ratios), a number, ``[low, high]``, or
  ``"calibrated"`` (a window per variant, :data:`CALIBRATED_CLIP`).
- ``off_policy``: ``"ExM"`` (E epochs x M minibatches per batch of samples), or ``[E, M]``,
  expanded into ``epochs`` and ``minibatches``. ``policy_lag`` is an ordinary factor.
- ``seeds``/``seed``: a count n (seeds 0..n-1) or a list.
Every other key (``env``, ``seq_len``, ``reward_noise``, ``policy_lag``, ``steps``, ...) is a
trainer setting passed through unchanged; the runner maps names onto the trainer's config and
rejects a name the trainer does not know.

The analysis is declared in the same file, before anything runs: ``[endpoints.NAME]``,
``[[claims]]``, ``[[controls]]``, ``[regime]`` and ``[confounds]`` (see rl.studies.plan); a
spec without claims still gets its exploratory comparisons of every variant with the baseline
on every declared endpoint.

Each run is a plain dict (the *run config*) with a stable hash of its canonical JSON; the
runner keys result files by it, so that a resumed study skips exactly the runs already done.
Comparisons need replicates: a spec with a baseline must give every variant at least
:data:`MIN_SEEDS_FOR_COMPARISON` seeds, or say ``compare = false``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rl.studies.plan import Plan, parse_plan

__all__ = [
    "VARIANTS",
    "VARIANT_ALIASES",
    "LUSPO_AGG",
    "CLIP_WINDOWS",
    "CALIBRATED_CLIP",
    "MIN_SEEDS_FOR_COMPARISON",
    "EXECUTORS",
    "StudySpec",
    "RunSpec",
    "canonical_variant",
    "variant_settings",
    "variant_p",
    "clip_settings",
    "off_policy_settings",
    "config_hash",
    "load_spec",
    "parse_spec",
]

MIN_SEEDS_FOR_COMPARISON = 5
#: where a study's runs execute (rl.studies.runner); the CLI offers the same choices
EXECUTORS = ("local", "ray", "inline")

#: LUSPO's length weighting: a sequence-level loss counted once per token, averaged over sequences
LUSPO_AGG = "seq-mean-token-sum"
# Loss settings each named variant stands for (keys follow rl.losses.policy_loss and
# rl.trainer.TrainConfig: "learnable_p" asks the trainer to hold p as a parameter and train it).
VARIANTS: dict[str, dict[str, Any]] = {
    "p=1": {"level": "sequence", "p": 1.0, "mean": "power"},
    "p=0.5": {"level": "sequence", "p": 0.5, "mean": "power"},
    "p=0": {"level": "sequence", "p": 0.0, "mean": "power"},
    "p=-0.5": {"level": "sequence", "p": -0.5, "mean": "power"},
    "p=-1": {"level": "sequence", "p": -1.0, "mean": "power"},
    "p=-2": {"level": "sequence", "p": -2.0, "mean": "power"},
    "grpo-token": {"level": "token", "p": 0.0, "mean": "power"},  # p unused at token level
    "gmpo": {"level": "gmpo", "p": 0.0, "mean": "power"},
    "adaptive": {"level": "sequence", "p": 0.0, "mean": "adaptive"},
    "rmi": {"level": "sequence", "p": 0.0, "mean": "rmi"},
    "learnable-p": {"level": "sequence", "p": 0.0, "mean": "power", "learnable_p": True},
    # the seeds' hierarchy, two scales: harmonic within phrases of 2 tokens, geometric across them
    "multiscale": {"level": "sequence", "p": 0.0, "mean": "multiscale", "chunk_size": 2, "chunk_p": -1.0},
    # PMPO (arXiv:2601.22521): GMPO's token clip, then p per trajectory in [0, 1] (rl.losses.pmpo)
    "pmpo": {"level": "gmpo", "p": 0.0, "mean": "pmpo"},
    # LUSPO (arXiv:2602.05261): GSPO with each sequence's loss times its length; "luspo-p=<x>" is the
    # same length weighting with the power mean of exponent x (rl.losses.aggregation)
    "luspo": {"level": "sequence", "p": 0.0, "mean": "power", "agg": LUSPO_AGG},
    # HolderPO (arXiv:2605.12058): the sequence power mean with p annealed linearly from 2 to -1 over
    # the run's steps (rl.trainer.scheduled_p); "p" is the schedule's start
    "holderpo": {"level": "sequence", "p": 2.0, "mean": "power", "p_schedule": ["linear", 2.0, -1.0]},
}
VARIANT_ALIASES = {"gspo": "p=0", "hmpo": "p=-1", "arithmetic": "p=1", "grpo": "grpo-token",
                   "geometric": "p=0", "harmonic": "p=-1"}
# Human names used in reports.
VARIANT_NAMES = {"p=1": "arithmetic", "p=0": "GSPO (geometric)", "p=-1": "HMPO (harmonic)",
                 "grpo-token": "GRPO (token level)", "gmpo": "GMPO", "adaptive": "adaptive mean",
                 "rmi": "recursive mean iteration", "learnable-p": "learnable p",
                 "multiscale": "multi-scale mean", "pmpo": "PMPO (clip-aware p per sequence)",
                 "luspo": "LUSPO (GSPO, length-weighted)",
                 "holderpo": "HolderPO (p annealed 2 -> -1)"}

# (eps_low, eps_high): GSPO clips sequence ratios in a far narrower window than PPO's tokens.
CLIP_WINDOWS: dict[str, tuple[float, float]] = {
    "0.2": (0.2, 0.2),
    "ppo": (0.2, 0.2),
    "gspo": (3e-4, 4e-4),
}

#: ``clip = "calibrated"``: a symmetric window per variant, calibrated so that every p clips about the
#: same fraction of sequences (users cannot carry a clip range across aggregation levels: TRL #3834,
#: verl #7356). Calibrated on the pilot seeds 1000-1001 of the bandit study's reference prefix cell
#: (rl.studies.presets.BANDIT_PILOT["calibration"] holds the measured clip fractions): the eps where
#: the run-mean clip fraction crosses 0.15, interpolated in log eps between the grid 0.05 ... 0.8,
#: rounded to 2 digits. The one place "calibrated" is resolved (:func:`clip_settings`).
CALIBRATED_CLIP: dict[str, float] = {"p=1": 0.22, "p=0": 0.30, "p=-1": 0.44}
CALIBRATED = "calibrated"

_SPECIAL = {"variant", "clip", "off_policy", "seed", "seeds"}
_PLAN_TABLES = ("endpoints", "claims", "controls", "regime", "confounds", "robustness")
# the trainer's value of a factor that a grid does not set (used in condition labels)
FACTOR_DEFAULTS = {"clip": "0.2", "off_policy": "1x1", "policy_lag": "0", "reward_noise": "0", "old_logp_noise": "0",
                   "clip_center": "plain", "optimizer": "adamw", "policy.kind": "tabular"}
_P_RE = re.compile(r"^p=([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)$")
_LUSPO_RE = re.compile(r"^luspo-(p=.*)$")


def canonical_variant(name: str) -> str:
    """A variant name or alias -> its canonical name ("hmpo" -> "p=-1", "p=-1.0" -> "p=-1")."""
    if not isinstance(name, str):
        raise ValueError(f"variant must be a string such as 'p=-1' or 'gmpo', got {name!r}")
    name = VARIANT_ALIASES.get(name.strip().lower(), name.strip())
    if name in VARIANTS:
        return name
    luspo = _LUSPO_RE.match(name)
    m = _P_RE.match(luspo.group(1) if luspo else name)
    if m:
        p = float(m.group(1))
        if not math.isfinite(p):
            raise ValueError(f"variant {name!r}: p must be finite")
        if luspo:
            return "luspo" if p == 0 else f"luspo-p={p:g}"
        return f"p={p:g}"
    raise ValueError(
        f"unknown variant {name!r}; known: {', '.join(VARIANTS)}, 'p=<number>', 'luspo-p=<number>', "
        f"aliases {', '.join(VARIANT_ALIASES)}"
    )


def variant_settings(name: str) -> dict[str, Any]:
    """Loss settings of a variant: {"level", "p", "mean"[, "agg", "learnable_p", ...]}. ValueError if unknown."""
    name = canonical_variant(name)
    if name in VARIANTS:
        return dict(VARIANTS[name])
    if name.startswith("luspo-"):
        return {**VARIANTS["luspo"], "p": float(name[len("luspo-p="):])}
    return {"level": "sequence", "p": float(name[2:]), "mean": "power"}


def variant_p(name: str) -> float | None:
    """The fixed exponent p of a plain sequence-level power-mean variant, else None (a variant with
    its own length weighting, such as LUSPO's, or a scheduled p, such as HolderPO's, is not on the plain
    p axis)."""
    s = variant_settings(name)
    if (s["level"] == "sequence" and s["mean"] == "power" and not s.get("learnable_p") and "agg" not in s
            and "p_schedule" not in s):
        return float(s["p"])
    return None


def clip_settings(value: Any, variant: str | None = None) -> dict[str, float]:
    """Clip window -> {"eps_low", "eps_high"}: a name in CLIP_WINDOWS, a number, [low, high], or
    ``"calibrated"``: the symmetric window :data:`CALIBRATED_CLIP` records for ``variant``
    (ValueError for a variant without a calibrated window, or without a variant)."""
    if isinstance(value, str) and value.strip().lower() == CALIBRATED:
        name = canonical_variant(variant) if variant is not None else None
        if name not in CALIBRATED_CLIP:
            raise ValueError(f"clip {value!r}: no calibrated window for variant {variant!r}; calibrated: "
                             f"{sorted(CALIBRATED_CLIP)}")
        return {"eps_low": CALIBRATED_CLIP[name], "eps_high": CALIBRATED_CLIP[name]}
    if isinstance(value, str):
        key = value.strip().lower()
        if key in CLIP_WINDOWS:
            lo, hi = CLIP_WINDOWS[key]
        else:
            try:
                lo = hi = float(key)
            except ValueError:
                raise ValueError(f"clip {value!r}: expected one of {list(CLIP_WINDOWS)}, a number or "
                                 "[low, high]") from None
    elif isinstance(value, bool):
        raise ValueError(f"clip {value!r}: expected a name, a number or [low, high]")
    elif isinstance(value, (int, float)):
        lo = hi = float(value)
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        lo, hi = float(value[0]), float(value[1])
    else:
        raise ValueError(f"clip {value!r}: expected a name, a number or [low, high]")
    if not (lo > 0 and hi > 0 and math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"clip {value!r}: eps_low and eps_high must be positive and finite")
    return {"eps_low": lo, "eps_high": hi}


def off_policy_settings(value: Any) -> dict[str, int]:
    """Off-policy degree -> {"epochs", "minibatches"}: "ExM" (e.g. "4x2") or [E, M]."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", value)
        if not m:
            raise ValueError(f"off_policy {value!r}: expected 'EPOCHSxMINIBATCHES' such as '4x2'")
        e, mb = int(m.group(1)), int(m.group(2))
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        e, mb = value
    else:
        raise ValueError(f"off_policy {value!r}: expected 'EPOCHSxMINIBATCHES' or [E, M]")
    if e < 1 or mb < 1:
        raise ValueError(f"off_policy {value!r}: epochs and minibatches must be >= 1")
    return {"epochs": e, "minibatches": mb}


def _label(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "/".join(_label(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 (hex, first 16 digits) of a config's canonical JSON (sorted keys)."""
    return hashlib.sha256(_canonical_json(config).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunSpec:
    """One run of a study.

    Attributes:
        config: trainer settings (base + expanded factors + seed); what the run function gets.
        variant: the loss variant's canonical name ("p=-1", "gmpo", ...).
        cell: the other factor values as written in the spec (clip, off_policy, seq_len, ...),
            i.e. the condition under which variants are compared; excludes variant and seed.
        seed: the seed.
    """

    config: dict[str, Any]
    variant: str
    cell: dict[str, str]
    seed: int

    @property
    def config_hash(self) -> str:
        h = self.__dict__.get("_hash")
        if h is None:
            h = config_hash({"config": self.config, "variant": self.variant})
            object.__setattr__(self, "_hash", h)  # frozen: computed once
        return h

    @property
    def cell_label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.cell.items()) or "all"

    @property
    def run_id(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9.=+-]+", "_", self.variant).replace("=", "")
        return f"{slug}-s{self.seed}-{self.config_hash[:10]}"


@dataclass(frozen=True)
class StudySpec:
    """A study: name, shared trainer settings, grids of factors, and how to compare.

    ``runs()`` expands the grids (the union of the products of each grid) into RunSpecs,
    dropping exact duplicates; the order is deterministic.
    """

    name: str
    base: dict[str, Any]
    grids: tuple[dict[str, Any], ...]
    description: str = ""
    baseline: str | None = "p=0"
    metric: str = "reward_mean"
    compare: bool = True
    run_fn: str | None = None
    plan: Plan = field(default_factory=Plan)
    plan_note: str = ""
    source: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def runs(self) -> list[RunSpec]:
        cached = self.__dict__.get("_runs")
        if cached is None:
            cached = self._expand()
            object.__setattr__(self, "_runs", cached)  # frozen dataclass: cache the expansion once
        return list(cached)

    def _expand(self) -> list[RunSpec]:
        out: list[RunSpec] = []
        seen: set[str] = set()
        cell_keys = self._cell_keys()
        for grid in self.grids:
            seeds = _seeds(grid)
            factors = {k: (v if isinstance(v, list) else [v]) for k, v in grid.items()
                       if k not in ("seed", "seeds")}
            factors.setdefault("variant", [self.baseline or "p=0"])
            keys = list(factors)
            for combo in itertools.product(*(factors[k] for k in keys)):
                chosen = dict(zip(keys, combo))
                variant = canonical_variant(chosen.pop("variant"))
                config = dict(self.base)
                cell = {}
                for k in cell_keys:
                    if k in chosen:
                        cell[k] = _label(chosen[k])
                    elif k in self.base:
                        cell[k] = _label(self.base[k])
                    else:  # every cell names every factor, so cells differing in one factor line up
                        cell[k] = FACTOR_DEFAULTS.get(k, "-")
                for k, v in chosen.items():
                    if k == "clip":
                        config.update(clip_settings(v, variant))
                    elif k == "off_policy":
                        config.update(off_policy_settings(v))
                    else:
                        config[k] = v
                config.update(variant_settings(variant))
                for s in seeds:
                    rs = RunSpec(config={**config, "seed": s}, variant=variant, cell=cell, seed=s)
                    if rs.config_hash not in seen:
                        seen.add(rs.config_hash)
                        out.append(rs)
        return out

    def _cell_keys(self) -> list[str]:
        """Factors that vary somewhere in the study (besides variant and seed), in spec order."""
        keys: list[str] = []
        for g in self.grids:
            for k in g:
                if k not in ("variant", "seed", "seeds") and k not in keys:
                    keys.append(k)
        # a factor listed in grids but constant everywhere still labels the cell: it tells the
        # reader the condition (e.g. env=seq-bandit); keep them all, the report drops constant ones
        return keys

    def check(self) -> None:
        """Raise ValueError when the spec cannot yield a valid comparison or run list."""
        runs = self.runs()
        if not runs:
            raise ValueError(f"study {self.name!r}: the grids produce no runs")
        if self.compare and self.baseline is not None:
            base = canonical_variant(self.baseline)
            by_cell: dict[str, dict[str, set[int]]] = {}
            for r in runs:
                by_cell.setdefault(r.cell_label, {}).setdefault(r.variant, set()).add(r.seed)
            for cell, variants in by_cell.items():
                if len(variants) < 2:
                    continue
                if base not in variants:
                    raise ValueError(f"study {self.name!r}: cell [{cell}] compares variants "
                                     f"{sorted(variants)} but lacks the baseline {base!r}")
                few = {v: len(s) for v, s in variants.items() if len(s) < MIN_SEEDS_FOR_COMPARISON}
                if few:
                    raise ValueError(
                        f"study {self.name!r}: cell [{cell}] compares variants with fewer than "
                        f"{MIN_SEEDS_FOR_COMPARISON} seeds ({few}); add seeds or set compare = false"
                    )
        self._check_plan(runs)

    def _check_plan(self, runs: list[RunSpec]) -> None:
        """Every claim names variants that run and conditions that exist."""
        from rl.studies.plan import matches

        cells: dict[str, tuple[dict[str, str], set[str]]] = {}
        for r in runs:
            cells.setdefault(r.cell_label, (r.cell, set()))[1].add(r.variant)
        for c in self.plan.claims:
            hit = [(cell, vs) for cell, vs in cells.values() if matches(cell, c.where)]
            if not hit:
                raise ValueError(f"study {self.name!r}: claim {c.id!r}: no condition matches its 'where' {list(c.where)}")
            for v in (c.variant, c.baseline):
                if v is not None and not any(v in vs for _, vs in hit):
                    raise ValueError(f"study {self.name!r}: claim {c.id!r}: variant {v!r} does not run in its conditions")
            if c.kind == "interaction" and not any(c.factor in cell for cell, _ in hit):
                raise ValueError(f"study {self.name!r}: claim {c.id!r}: no condition varies the factor {c.factor!r}")

    def to_dict(self) -> dict[str, Any]:
        """The spec as the TOML-shaped dict it parses from (parse_spec(to_dict()) == self)."""
        return {
            "study": {"name": self.name, "description": self.description, "baseline": self.baseline,
                      "metric": self.metric, "compare": self.compare, "alpha": self.plan.alpha,
                      **({"run_fn": self.run_fn} if self.run_fn else {}),
                      **({"plan_note": self.plan_note} if self.plan_note else {})},
            "base": dict(self.base),
            "grid": [dict(g) for g in self.grids],
            **self.plan.to_dict(),
        }


def _seeds(grid: dict[str, Any]) -> list[int]:
    if "seed" in grid and "seeds" in grid:
        raise ValueError("give either 'seed' or 'seeds' in a grid, not both")
    v = grid.get("seeds", grid.get("seed", 1))
    if isinstance(v, bool):
        raise ValueError(f"seeds: expected a count or a list of integers, got {v!r}")
    if isinstance(v, int):
        if v < 1:
            raise ValueError(f"seeds: a count must be >= 1, got {v}")
        return list(range(v)) if "seeds" in grid else [v]
    if isinstance(v, list) and v and all(isinstance(s, int) and not isinstance(s, bool) for s in v):
        if len(set(v)) != len(v):
            raise ValueError(f"seeds: duplicates in {v}")
        return list(v)
    raise ValueError(f"seeds: expected a count or a non-empty list of integers, got {v!r}")


def parse_spec(data: dict[str, Any]) -> StudySpec:
    """Build a StudySpec from a parsed TOML document (or an equivalent dict); validate it."""
    unknown = set(data) - {"study", "base", "grid", *_PLAN_TABLES}
    if unknown:
        raise ValueError(f"study spec: unknown top-level tables {sorted(unknown)}; expected [study], [base], "
                         f"[[grid]] and the analysis plan's {', '.join(_PLAN_TABLES)}")
    st = data.get("study", {})
    if "name" not in st or not isinstance(st["name"], str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", st["name"]):
        raise ValueError("study spec: [study] name must be given: letters, digits, '-', '_' or '.'")
    if "threshold" in st:
        raise ValueError("study spec: [study] threshold is gone: declare thresholds in an endpoint, e.g. "
                         "[endpoints.\"samples_to_0.9\"] kind = \"to_threshold\", threshold = 0.9, margin = 0.05")
    allowed = {"name", "description", "baseline", "metric", "compare", "run_fn", "alpha", "plan_note"}
    bad = set(st) - allowed
    if bad:
        raise ValueError(f"study spec: unknown keys in [study]: {sorted(bad)}; allowed {sorted(allowed)}")
    grids = data.get("grid", [{}])
    if isinstance(grids, dict):
        grids = [grids]
    if not isinstance(grids, list) or not all(isinstance(g, dict) for g in grids):
        raise ValueError("study spec: [[grid]] must be one or more tables")
    base = dict(data.get("base", {}))
    for k in _SPECIAL & set(base):
        raise ValueError(f"study spec: {k!r} is a factor; put it in [[grid]], not [base]")
    for g in grids:
        for k, v in g.items():
            if isinstance(v, list) and not v:
                raise ValueError(f"study spec: factor {k!r} has an empty list of values")
    alpha = st.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"study spec: alpha must be a number in (0, 1), got {alpha!r}")
    metric = str(st.get("metric", "reward_mean"))
    baseline = st.get("baseline", "p=0")
    spec = StudySpec(
        name=st["name"],
        description=str(st.get("description", "")),
        base=base,
        grids=tuple(dict(g) for g in grids),
        baseline=canonical_variant(baseline) if baseline else None,
        metric=metric,
        compare=bool(st.get("compare", True)),
        run_fn=st.get("run_fn"),
        plan=parse_plan(data, metric=metric, alpha=float(alpha), canonical=canonical_variant),
        plan_note=str(st.get("plan_note", "")),
        source=data,
    )
    spec.check()
    return spec


def load_spec(spec_or_preset: str | Path) -> StudySpec:
    """A TOML file path or a preset name (see rl.studies.presets) -> validated StudySpec."""
    from rl.studies.presets import PRESETS

    s = str(spec_or_preset)
    if s in PRESETS:
        return parse_spec(PRESETS[s])
    path = Path(s)
    if not path.exists():
        raise ValueError(f"{s!r} is neither a preset ({', '.join(PRESETS)}) nor an existing TOML file")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    return parse_spec(data)

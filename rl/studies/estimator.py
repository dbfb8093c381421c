r"""The exact estimator study (issue 12): bias, variance and direction of every mean's policy gradient.

No optimiser and no sampling noise: for each cell of the design and each of ``draws`` random
(policy, behaviour, target) triples, :func:`rl.envs.estimator.moments` gives every loss
variant's expected single-answer gradient against grad J exactly (enumeration of [0, V)^T) or,
for the factorized policy at T in {16, 32, 64}, by Monte Carlo over answers with the analytic
grad J and a stated Monte Carlo error.

Design (declared here, before anything runs; :class:`EstimatorSpec`):

* answers of T tokens from V = 3; rewards ``count`` (additive), ``all-or-nothing``, ``prefix``;
  policies ``tabular`` (factorized softmax) and ``autoregressive`` (an Elman RNN, hidden 4);
* a draw d: the hidden target y* (``target_seed``), the current policy pi (tabular: logits
  i.i.d. N(0, 1); RNN: every weight matrix N(0, 1/fan_in), embeddings and biases N(0, 1)) and a
  direction u drawn the same way; the behaviour policy is ``mu = pi + delta u`` (in logits, resp.
  parameters) with the scale delta solved so that ``KL(mu || pi) / T`` equals the cell's KL per
  token (exactly by enumeration, or in closed form for the factorized policy). The same pi, u
  and y* serve every KL, reward, noise level, clip window and variant of that draw: every
  comparison is paired;
* variants: p in {-2, -1, -0.5, 0, 0.5, 1, 2} (sequence level), token-level GRPO, GMPO and the
  ``is-product`` control (the full likelihood ratio, unbiased);
* the axes are crossed from a centre cell (tabular, T = 8, no noise, no clip) rather than in full
  (the full product, with the RNN at T <= 8 only, is 1620 cells x 20 draws x 10 variants): KL x reward x policy x T in {2, 4, 8}; noise tau in
  {0.1, 0.3, 1} x KL in {0, 0.2} x reward; clip {0.2, GSPO 3e-4/4e-4} x KL in {0.01 .. 0.5} x
  reward, and clip x tau = 1 at KL 0; Monte Carlo T in {16, 32, 64} x KL in {0.05, 0.2} x reward,
  plus the Monte Carlo twin of the centre cell (checked against its enumeration); and KL 0.25 at
  T = 8 for the issue's figures;
* endpoints: cosine(E g, grad J) (higher is better), the single-answer variance relative to
  |grad J|^2 (lower is better), token-weight ESS, all as means over the draws with 95% t-intervals;
  comparisons against GSPO (p = 0) are paired over the draws (paired t-test), Holm-corrected over
  the family behind one claim; the smallest effect of interest is ``margin`` = 0.02 in cosine and
  ``var_margin`` = 10% in variance. Verdicts: better / worse (adjusted p < alpha and the effect at
  least the margin), equivalent (the 95% CI inside +-margin), else inconclusive, with the effect
  the design could detect at 80% power. Exact identities (theorems) get ``confirmed`` or
  ``contradicted``.

Outputs: :func:`run` writes ``draws.csv`` (one row per cell, draw and variant) under the study
directory and hands the rows to :mod:`rl.studies.estimator_report`, which writes
``reports/estimator/`` (README.md, figures, summary.csv, findings.json).
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import csv
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rl._io import atomic_write_text
from rl.envs.bandits import REWARD_KINDS, SequenceBandit
from rl.envs.estimator import AnswerSet, kl_per_token, moments, prepare_answers
from rl.policies.base import Policy
from rl.policies.tabular import AutoregressivePolicy, TabularPolicy
from rl.studies.findings import Finding as StudyFinding
from rl.studies.findings import StatTest, findings_document, outcome
from rl.studies.spec import CLIP_WINDOWS, variant_settings

__all__ = ["finding_ids", "as_study_finding", "SCHEMA_VERSION", "VARIANTS", "CONTROL", "BASELINE", "CLIPS", "POLICIES", "Cell", "EstimatorSpec",
           "SPEC", "Finding", "Comparison", "draw_policy", "behaviour_at_kl", "solve_scale", "UnreachableKL", "run_cells",
           "run", "load_rows", "measurable", "RowIndex", "log_rel_var", "VAR_CEILING", "compare_paired", "compare_unpaired", "verdict", "findings", "variant_kwargs"]

#: version of the study design record (the "design" block of findings.json); the document itself
#: is rl.studies.findings' hmpo-findings schema, read by the claims ledger like every study's
SCHEMA_VERSION = 2
VARIANTS = ("p=-2", "p=-1", "p=-0.5", "p=0", "p=0.5", "p=1", "p=2", "grpo-token", "gmpo", "is-product")
CONTROL = "is-product"
BASELINE = "p=0"
POLICIES = ("tabular", "autoregressive")
#: clip name -> (eps_low, eps_high); "none" is no clip at all
CLIPS: dict[str, tuple[float, float]] = {"none": (math.inf, math.inf), "0.2": CLIP_WINDOWS["0.2"],
                                        "gspo": CLIP_WINDOWS["gspo"]}
#: the metrics of rl.envs.estimator.moments kept per row
ROW_METRICS = ("cosine", "rel_bias", "scaled_bias", "rel_var", "trace_var", "ess", "kl_per_token", "spread",
               "mc_error", "objective", "grad_norm", "mean_norm", "rewarded")
CELL_FIELDS = ("reward", "policy", "length", "kl", "tau", "clip", "method")


def finding_ids(rewards: Sequence[str] = REWARD_KINDS) -> dict[str, tuple[str, ...]]:
    """The ids :func:`findings` can write, by the ledger claim they answer (declared with the design)."""
    per = lambda stem: tuple(f"{stem}-{r}" for r in rewards)  # noqa: E731
    return {
        "bias-variance": (*per("est-variance-hmpo-vs-gspo"), *per("est-variance-arithmetic-vs-gspo"),
                          *per("est-variance-is-product-vs-gspo"), *per("est-bias-variance-tradeoff"),
                          "est-control-unbiased"),
        "gradient-flow": (*per("est-direction-hmpo-vs-gspo"), *per("est-direction-arithmetic-vs-gspo"),
                          "est-additive-arithmetic-unbiased", "est-on-policy-length-normalisation",
                          "est-noise-only-direction", *per("est-gspo-window"), "est-ess-gaussian-limit"),
        "sequence-length": (*per("est-length-gap"), "est-monte-carlo-agrees"),
        "descriptive": (*(f"est-issue-figures-{r}" for r in ("all-or-nothing", "prefix")), "est-issue-figures-noise"),
    }


def variant_kwargs(name: str) -> dict[str, Any]:
    """Keyword arguments of :func:`rl.envs.estimator.moments` for a variant name ("p=-1", "gmpo", ...)."""
    if name == CONTROL:
        return {"level": "is-product"}
    s = variant_settings(name)
    # a variant with its own aggregation (LUSPO) would silently be measured under the study's
    if s.get("mean", "power") != "power" or s.get("learnable_p") or "agg" in s:
        raise ValueError(f"variant {name!r}: the estimator study covers fixed power means, token-level GRPO, "
                         "GMPO and is-product")
    return {"level": s["level"], "p": float(s["p"])}


@dataclass(frozen=True, order=True)
class Cell:
    """One condition of the design; ``method`` is "enumeration" or "monte-carlo"."""

    reward: str
    policy: str
    length: int
    kl: float
    tau: float = 0.0
    clip: str = "none"
    method: str = "enumeration"

    def label(self) -> str:
        return (f"{self.reward}, {self.policy}, T={self.length}, KL={self.kl:g}, tau={self.tau:g}, clip={self.clip}"
                + (", MC" if self.method == "monte-carlo" else ""))


@dataclass(frozen=True)
class EstimatorSpec:
    """The declared design (see the module docstring). ``quick()`` is a small copy for tests."""

    vocab: int = 3
    draws: int = 20
    hidden: int = 4
    variants: tuple[str, ...] = VARIANTS
    rewards: tuple[str, ...] = REWARD_KINDS
    policies: tuple[str, ...] = POLICIES
    enum_lengths: tuple[int, ...] = (2, 4, 8)
    mc_lengths: tuple[int, ...] = (16, 32, 64)
    kls: tuple[float, ...] = (0.0, 0.01, 0.05, 0.2, 0.5)
    taus: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0)
    clips: tuple[str, ...] = ("none", "0.2", "gspo")
    centre_length: int = 8
    centre_kl: float = 0.2
    noise_kls: tuple[float, ...] = (0.0, 0.2)
    clip_kls: tuple[float, ...] = (0.01, 0.05, 0.2, 0.5)
    mc_kls: tuple[float, ...] = (0.05, 0.2)
    issue_kl: float = 0.25
    mc_samples: int = 4096
    mc_min_rewarded: int = 20
    noise_draws: int = 4
    #: the loss's safety cap on log-ratios (rl.losses OPTIONS "max_log_ratio", 20 in the trainer) is off: behaviour
    #: policies at 0.5 KL per token put e^-20 of their mass on answers pi favours, and capping those ratios biases
    #: even the variants the theorems call unbiased (seen in a first run: p = 1 on the count reward, 1 - cosine 0.41)
    max_log_ratio: float | None = None
    margin: float = 0.02
    var_margin: float = 0.10
    alpha: float = 0.05
    seed: int = 0

    def cells(self) -> list[Cell]:
        """Every cell of the crossed design, without repeats, in a fixed order."""
        T0 = self.centre_length
        out: list[Cell] = []
        for pol in self.policies:
            for T in self.enum_lengths:
                out += [Cell(r, pol, T, kl) for kl in self.kls for r in self.rewards]
        out += [Cell(r, "tabular", T0, kl, tau) for tau in self.taus[1:] for kl in self.noise_kls for r in self.rewards]
        out += [Cell(r, "tabular", T0, kl, 0.0, c) for c in self.clips[1:] for kl in self.clip_kls for r in self.rewards]
        out += [Cell(r, "tabular", T0, 0.0, self.taus[-1], c) for c in self.clips[1:] for r in self.rewards]
        out += [Cell(r, "tabular", T, kl, method="monte-carlo") for T in self.mc_lengths for kl in self.mc_kls
                for r in self.rewards]
        out += [Cell(r, "tabular", T0, self.centre_kl, method="monte-carlo") for r in self.rewards]
        out += [Cell(r, "tabular", T0, self.issue_kl) for r in self.rewards]
        seen: set[Cell] = set()
        return [c for c in out if not (c in seen or seen.add(c))]

    def fingerprint(self) -> str:
        """A hash of the design, so that stored draws are reused only for the same design."""
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def quick(self) -> EstimatorSpec:
        """A small design with the same structure (for tests): 3 draws, T <= 4, fewer cells."""
        return dataclasses.replace(self, draws=3, enum_lengths=(2, 3), mc_lengths=(6,), centre_length=3,
                                   kls=(0.0, 0.2), noise_kls=(0.0,), clip_kls=(0.2,), mc_kls=(0.2,),
                                   mc_samples=512, taus=(0.0, 1.0))


SPEC = EstimatorSpec()


# ---------------------------------------------------------------------------------------------- draws


def _seed(spec: EstimatorSpec, *key: int) -> int:
    return int(np.random.SeedSequence([spec.seed, *key]).generate_state(1)[0])


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _param_scales(policy: Policy) -> dict[str, float]:
    """Standard deviation of each parameter in a draw: 1/sqrt(fan_in) for weight matrices, 1 for
    logit tables, embeddings and biases."""
    out = {}
    for name, p in policy.named_parameters():
        out[name] = 1.0 / math.sqrt(p.shape[1]) if p.dim() == 2 and not name.endswith("emb.weight") else 1.0
    return out


def draw_policy(kind: str, vocab: int, length: int, generator: torch.Generator, hidden: int = 4) -> Policy:
    """A random current policy pi (see the module docstring for the distribution)."""
    if kind == "tabular":
        pol: Policy = TabularPolicy(vocab, length)
    elif kind == "autoregressive":
        pol = AutoregressivePolicy(vocab, length, hidden=hidden)
    else:
        raise ValueError(f"policy kind must be one of {POLICIES}, got {kind!r}")
    scales = _param_scales(pol)
    with torch.no_grad():
        for name, p in pol.named_parameters():
            p.copy_(scales[name] * torch.randn(p.shape, generator=generator))
    return pol


class UnreachableKL(ValueError):
    """The KL along a direction stays below the target however far one goes (e.g. a saturating tanh)."""


def solve_scale(kl_of: Callable[[float], float], target: float, *, rtol: float = 1e-4, max_iter: int = 80,
                max_scale: float = 1e4) -> float:
    """delta >= 0 with kl_of(delta) = target, for kl_of continuous with kl_of(0) = 0 and growing
    like delta^k near 0: power-law secant steps (k re-estimated from the last two points) kept
    inside a bracket, which bisection shrinks where the secant step leaves it. Raises
    :class:`UnreachableKL` when no delta <= ``max_scale`` reaches the target."""
    if not target > 0:
        return 0.0
    lo, hi = 0.0, math.inf
    d, k, prev = 1.0, 2.0, None
    for it in range(max_iter):
        if d > max_scale:
            raise UnreachableKL(f"KL {target} not reached along this direction up to delta = {max_scale}")
        v = kl_of(d)
        if abs(v / target - 1.0) <= rtol:
            return d
        if v < target:
            lo = d
        else:
            hi = d
        flat = False
        if prev is not None and v > 0 and prev[1] > 0 and prev[0] != d:
            k_new = math.log(v / prev[1]) / math.log(d / prev[0])
            flat = not (math.isfinite(k_new) and k_new > 0.25)  # saturating: secant steps would crawl
            k = 2.0 if flat else k_new
        prev = (d, v)
        step = d * (target / v) ** (1.0 / k) if v > 0 else 2.0 * d
        if math.isinf(hi):
            d = max(step, 4.0 * d) if flat else (step if step > d else 2.0 * d)
        elif it % 2 or not lo < step < hi:
            d = 0.5 * (lo + hi)  # every other step a bisection: the bracket at least halves every two steps
        else:
            d = step
    raise RuntimeError(f"solve_scale: no delta with KL = {target} within {max_iter} steps (bracket [{lo}, {hi}])")


def _kl_function(pi: Policy, u: dict[str, torch.Tensor], ans: AnswerSet | None) -> tuple[Callable[[float], float], Policy]:
    """(delta -> KL(mu_delta || pi) / T, mu): mu a float64 copy of pi whose parameters each call sets
    to pi + delta u."""
    mu = copy.deepcopy(pi).double()
    base = {n: p.detach().double().clone() for n, p in pi.named_parameters()}
    params = dict(mu.named_parameters())

    def set_delta(delta: float) -> None:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(base[n] + delta * u[n])

    if isinstance(pi, TabularPolicy):
        def kl_of(delta: float) -> float:
            set_delta(delta)
            return kl_per_token(mu, pi)
    else:
        if ans is None:
            raise ValueError("behaviour_at_kl: a non-factorized policy needs an enumerated AnswerSet of pi for its KL")
        mask = torch.ones_like(ans.tokens, dtype=torch.bool)
        log_pi = ans.logp.sum(-1)

        def kl_of(delta: float) -> float:
            set_delta(delta)
            with torch.no_grad():
                lm = mu.log_probs(ans.prompts, ans.tokens, mask).sum(-1)
            return float(torch.dot(ans.prompt_weight * lm.exp(), lm - log_pi)) / ans.length
    return kl_of, mu


def behaviour_at_kl(pi: Policy, kl: float, seed: int, ans: AnswerSet | None = None, *,
                    attempts: int = 16) -> tuple[Policy, int]:
    """(mu, seed used): mu = pi + delta u (u drawn like pi's parameters, see :func:`draw_policy`, from
    a generator seeded ``seed``) with KL(mu || pi) / T = ``kl`` (relative 1e-4), as a float64 policy.
    A direction along which the KL cannot reach ``kl`` (a saturating network) is replaced by the next
    one (seed + 1, ...), up to ``attempts``. A direction that reaches a KL reaches every smaller one
    (the KL is continuous in delta and 0 at 0), so solving the largest KL first and reusing the seed
    it returns keeps one direction per draw.

    The factorized policy's KL is the closed form; any other needs ``ans``, an enumerated AnswerSet of pi.
    """
    scales = _param_scales(pi)
    for k in range(attempts):
        gen = _gen(seed + k)
        u = {n: scales[n] * torch.randn(p.shape, generator=gen).double() for n, p in pi.named_parameters()}
        kl_of, mu = _kl_function(pi, u, ans)
        try:
            kl_of(solve_scale(kl_of, kl))
        except UnreachableKL:
            continue
        return mu, seed + k
    raise UnreachableKL(f"KL {kl} per token not reached along {attempts} random directions")


# ---------------------------------------------------------------------------------------------- running


def _metrics(m: dict[str, Any]) -> dict[str, float]:
    tn = float(m["true_grad"].norm())
    mn = float(m["mean_grad"].norm())
    out = {k: float(m[k]) for k in ("cosine", "rel_bias", "scaled_bias", "trace_var", "ess", "kl_per_token",
                                      "spread", "mc_error", "objective")}
    out.update(rel_var=m["trace_var"] / tn**2 if tn > 0 else math.nan, grad_norm=tn, mean_norm=mn,
               rewarded=float(m["rewarded"]))
    return out


def _loss_options(spec: EstimatorSpec, variant: str) -> dict[str, Any]:
    """policy_loss options of the design (the is-product control is not policy_loss and takes none)."""
    return {} if variant == CONTROL else {"max_log_ratio": spec.max_log_ratio}


def _group_rows(spec: EstimatorSpec, policy: str, length: int, method: str, draw: int, cells: list[Cell]) -> list[dict]:
    """Every row of one (policy, T, method, draw) group: one pi, one target, one direction per KL."""
    torch.set_num_threads(1)
    pid = POLICIES.index(policy)
    pi = draw_policy(policy, spec.vocab, length, _gen(_seed(spec, draw, length, pid, 0)), spec.hidden)
    target_seed = _seed(spec, draw, length, 99, 0)
    noise_seed = _seed(spec, draw, length, pid, 2)
    rows = []
    base: AnswerSet | None = None
    if method == "enumeration":
        base = prepare_answers(SequenceBandit(spec.vocab, length, spec.rewards[0], target_seed=target_seed), pi, pi)
    direction = _seed(spec, draw, length, pid, 1)
    behaviours = {}
    for kl in sorted({c.kl for c in cells}, reverse=True):  # the largest first: its direction serves all
        behaviours[kl], direction = behaviour_at_kl(pi, kl, direction, base)
    for kl in sorted(behaviours):
        mu = behaviours[kl]
        for reward in sorted({c.reward for c in cells if c.kl == kl}):
            env = SequenceBandit(spec.vocab, length, reward, target_seed=target_seed)
            if method == "enumeration":
                ans = prepare_answers(env, mu, pi, reuse=base)
            else:
                ans = prepare_answers(env, mu, pi, mc_samples=spec.mc_samples, seed=_seed(spec, draw, length, pid, 3))
            for cell in (c for c in cells if c.kl == kl and c.reward == reward):
                eps_low, eps_high = CLIPS[cell.clip]
                for v in spec.variants:
                    m = moments(ans, eps_low=eps_low, eps_high=eps_high, noise_tau=cell.tau,
                                noise_draws=spec.noise_draws, seed=noise_seed, **_loss_options(spec, v),
                                **variant_kwargs(v))
                    rows.append({**dataclasses.asdict(cell), "draw": draw, "variant": v, **_metrics(m)})
    return rows


def _groups(spec: EstimatorSpec, cells: Iterable[Cell]) -> list[tuple[str, int, str, int, list[Cell]]]:
    by: dict[tuple[str, int, str], list[Cell]] = defaultdict(list)
    for c in cells:
        by[(c.policy, c.length, c.method)].append(c)
    # the expensive groups (long answers, the RNN) first, so that two workers finish together
    order = sorted(by, key=lambda k: (-(k[1] * (3 if k[0] == "autoregressive" else 1)), k))
    return [(*k, d, by[k]) for k in order for d in range(spec.draws)]


def run_cells(spec: EstimatorSpec = SPEC, cells: Sequence[Cell] | None = None, *, workers: int | None = None,
              progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Rows (cell fields, ``draw``, ``variant``, :data:`ROW_METRICS`) of every cell and draw, in a
    fixed order; ``workers`` > 1 runs the (policy, T, draw) groups in that many processes."""
    groups = _groups(spec, spec.cells() if cells is None else cells)
    workers = min(os.cpu_count() or 1, 2) if workers is None else max(1, int(workers))
    results: dict[int, list[dict]] = {}
    if workers == 1:
        for i, g in enumerate(groups):
            results[i] = _group_rows(spec, *g)
            if progress:
                progress(i + 1, len(groups))
    else:
        ctx = multiprocessing.get_context("spawn")  # fork after torch initialised its thread pool can hang
        with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futs = {pool.submit(_group_rows, spec, *g): i for i, g in enumerate(groups)}
            for k, fut in enumerate(cf.as_completed(futs)):
                results[futs[fut]] = fut.result()
                if progress:
                    progress(k + 1, len(groups))
    return [r for i in range(len(groups)) for r in results[i]]


def measurable(rows: Sequence[dict[str, Any]], spec: EstimatorSpec = SPEC) -> list[dict[str, Any]]:
    """The rows that are measurements: every enumeration, and the Monte Carlo draws whose sample holds
    at least ``spec.mc_min_rewarded`` rewarded answers (below that the gradient rests on answers the
    sample missed and its stated error means nothing; see rl.envs.estimator)."""
    return [r for r in rows if r["method"] == "enumeration" or r["rewarded"] >= spec.mc_min_rewarded]


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    cols = [*CELL_FIELDS, "draw", "variant", *ROW_METRICS]
    lines = [",".join(cols)]
    for r in rows:
        lines.append(",".join(repr(r[c]) if isinstance(r[c], float) else str(r[c]) for c in cols))
    atomic_write_text(path, "\n".join(lines) + "\n")


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows ``run`` stored in draws.csv (floats exact: written with repr)."""
    ints, strs = {"length", "draw"}, {"reward", "policy", "clip", "method", "variant"}
    with open(path, newline="") as f:
        return [{k: (int(v) if k in ints else v if k in strs else float(v)) for k, v in r.items()}
                for r in csv.DictReader(f)]


def run(study_dir: str | Path, reports_dir: str | Path, *, spec: EstimatorSpec = SPEC, workers: int | None = None,
        reuse: bool = True, run_missing: bool = True, progress: bool = False) -> dict[str, Any]:
    """Run the study (or reuse ``study_dir/draws.csv`` of the same design) and write the report.

    Returns ``{"readme", "findings", "headline", "seconds", "rows", "ran"}``. With ``run_missing``
    False and no stored draws, raises ValueError (``hmpo report --no-run``).
    """
    from rl.studies.estimator_report import write_report

    study_dir, reports_dir = Path(study_dir), Path(reports_dir)
    draws, meta = study_dir / "draws.csv", study_dir / "design.json"
    t0 = time.perf_counter()
    stored = reuse and draws.exists() and meta.exists() and \
        json.loads(meta.read_text()).get("fingerprint") == spec.fingerprint()
    if stored:
        rows = load_rows(draws)
        ran = False
    elif not run_missing:
        raise ValueError(f"no stored draws of this design under {study_dir} (run without --no-run)")
    else:
        def show(k: int, n: int) -> None:
            print(f"\r  estimator study: {k}/{n} groups", end="\n" if k == n else "", flush=True)

        rows = run_cells(spec, workers=workers, progress=show if progress else None)
        study_dir.mkdir(parents=True, exist_ok=True)
        _write_rows(draws, rows)
        atomic_write_text(meta, json.dumps({"fingerprint": spec.fingerprint(), "design": dataclasses.asdict(spec),
                                            "seconds": time.perf_counter() - t0}, indent=1))
        ran = True
    seconds = time.perf_counter() - t0 if ran else json.loads(meta.read_text()).get("seconds", math.nan)
    info = write_report(rows, reports_dir, spec=spec, seconds=seconds)
    return {**info, "seconds": seconds, "rows": len(rows), "ran": ran}


# ---------------------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Comparison:
    """A difference ``a - b`` of one quantity over the draws: mean, 95% CI, p-value (raw and Holm-
    adjusted within its family), sample size and the effect detectable at 80% power."""

    quantity: str
    a: str
    b: str
    cell: Cell
    diff: float
    ci: tuple[float, float]
    p_value: float
    n: int
    mde: float
    paired: bool
    p_adjusted: float = math.nan


def _t_summary(d: np.ndarray) -> tuple[float, tuple[float, float], float, float]:
    """(mean, 95% CI, two-sided p of mean = 0, MDE at 80% power) of a sample by Student's t."""
    from scipy import stats as sps

    n = d.size
    if n < 2 or not np.isfinite(d).all():  # e.g. a zero variance (E g = 0: log -inf) in one of the pair
        return (float(d.mean()) if n and not np.isnan(d).any() else math.nan), (math.nan, math.nan), math.nan, math.nan
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if not math.isfinite(sd):
        return mean, (math.nan, math.nan), math.nan, math.nan
    if sd == 0.0:
        return mean, (mean, mean), (0.0 if mean != 0 else 1.0), 0.0
    se = sd / math.sqrt(n)
    tq = float(sps.t.ppf(0.975, n - 1))
    p = float(2 * sps.t.sf(abs(mean) / se, n - 1))
    return mean, (mean - tq * se, mean + tq * se), p, (tq + float(sps.t.ppf(0.8, n - 1))) * se


class RowIndex:
    """The rows by (cell, variant) and draw, built once: lookups in a findings pass are then O(1)."""

    def __init__(self, rows: Iterable[dict]):
        self.rows = list(rows)
        self._by: dict[tuple, dict[int, dict]] = {}
        for r in self.rows:
            self._by.setdefault((tuple(r[k] for k in CELL_FIELDS), r["variant"]), {})[r["draw"]] = r
        self.cells = {key for key, _ in self._by}

    def values(self, cell: Cell, variant: str, quantity: str) -> dict[int, float]:
        """draw -> the quantity of ``variant`` in ``cell`` (empty when absent)."""
        return {d: _quantity(r, quantity) for d, r in self._by.get((dataclasses.astuple(cell), variant), {}).items()}

    def has(self, cell: Cell) -> bool:
        return dataclasses.astuple(cell) in self.cells


def _ix(rows: Sequence[dict] | RowIndex) -> RowIndex:
    return rows if isinstance(rows, RowIndex) else RowIndex(rows)


def _values(rows: Sequence[dict] | RowIndex, cell: Cell, variant: str, quantity: str) -> dict[int, float]:
    return _ix(rows).values(cell, variant, quantity)


#: a variance beyond float64 (the is-product control under the farthest behaviour policies: sum_y pi^2 / mu
#: overflows) counts as the largest double, a lower bound, so that means and tests stay finite
VAR_CEILING = sys.float_info.max


def log_rel_var(rel_var: float) -> float:
    """log of the relative variance, an overflowed (inf) variance read as :data:`VAR_CEILING`."""
    return math.log(min(rel_var, VAR_CEILING)) if rel_var > 0 else -math.inf


def _quantity(r: dict, quantity: str) -> float:
    """A row's value of ``quantity``; "log_rel_var" is :func:`log_rel_var` of the relative variance."""
    if quantity == "log_rel_var":
        return log_rel_var(r["rel_var"])
    return float(r[quantity])


def compare_paired(rows: Sequence[dict], cell: Cell, a: str, b: str, quantity: str = "cosine") -> Comparison:
    """``a - b`` in one cell, paired by draw (the draws share pi, mu and the target)."""
    ix = _ix(rows)
    va, vb = ix.values(cell, a, quantity), ix.values(cell, b, quantity)
    common = sorted(set(va) & set(vb))
    d = np.array([va[k] - vb[k] for k in common], dtype=float)
    mean, ci, p, mde = _t_summary(d)
    return Comparison(quantity, a, b, cell, mean, ci, p, int(d.size), mde, True)


def compare_unpaired(rows: Sequence[dict], cell_a: Cell, cell_b: Cell, a: str, b: str,
                     quantity: str = "cosine") -> Comparison:
    """(a - b in cell_a) - (a - b in cell_b): the change of a paired gap between two cells whose
    draws are independent (e.g. two lengths), by Welch's t on the per-draw gaps."""
    from scipy import stats as sps

    ix = _ix(rows)

    def gaps(cell: Cell) -> np.ndarray:
        va, vb = ix.values(cell, a, quantity), ix.values(cell, b, quantity)
        return np.array([va[k] - vb[k] for k in sorted(set(va) & set(vb))], dtype=float)

    ga, gb = gaps(cell_a), gaps(cell_b)
    diff = float(ga.mean() - gb.mean())
    va_, vb_ = ga.var(ddof=1) / ga.size, gb.var(ddof=1) / gb.size
    se = math.sqrt(va_ + vb_)
    if se == 0:
        return Comparison(quantity, a, b, cell_a, diff, (diff, diff), 0.0 if diff else 1.0, ga.size + gb.size, 0.0, False)
    dof = (va_ + vb_) ** 2 / (va_**2 / (ga.size - 1) + vb_**2 / (gb.size - 1))
    tq = float(sps.t.ppf(0.975, dof))
    p = float(2 * sps.t.sf(abs(diff) / se, dof))
    mde = (tq + float(sps.t.ppf(0.8, dof))) * se
    return Comparison(quantity, a, b, cell_a, diff, (diff - tq * se, diff + tq * se), p, ga.size + gb.size, mde, False)


def _holm(cmps: list[Comparison]) -> list[Comparison]:
    from rl.studies.stats import holm

    adj = holm([c.p_value for c in cmps]) if cmps else []
    return [dataclasses.replace(c, p_adjusted=float(q)) for c, q in zip(cmps, adj)]


def verdict(c: Comparison, margin: float, alpha: float, *, higher_is_better: bool = True) -> str:
    """better / worse / equivalent / inconclusive for ``a`` against ``b`` (see the module docstring).

    Never a direction from a difference below the margin: significant but smaller than the margin
    is "equivalent" when the CI lies inside +-margin, else "inconclusive".
    """
    lo, hi = c.ci
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if -margin < lo and hi < margin:
        return "equivalent"
    p = c.p_adjusted if math.isfinite(c.p_adjusted) else c.p_value
    if p < alpha and abs(c.diff) >= margin:
        return "better" if (c.diff > 0) == higher_is_better else "worse"
    return "inconclusive"


# ---------------------------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Finding:
    """One answer of the study as its report renders it; :func:`as_study_finding` gives the
    general :class:`rl.studies.findings.Finding` written to ``findings.json`` for the ledger.

    ``verdict``: better / worse / equivalent / inconclusive for comparisons (of the claim's first
    named variant against the second, in the claim's direction), confirmed / contradicted for exact
    identities, measured for descriptive figures. ``value`` is the headline number of ``quantity``
    (with its 95% ``ci`` where it has one); ``detail`` says how the family behind it came out;
    ``figure`` is relative to the report folder.
    """

    id: str
    claim: str
    quantity: str
    value: float
    ci: tuple[float, float] | None
    verdict: str
    figure: str | None
    detail: str = ""
    p_adjusted: float | None = None
    family: int = 1
    margin: float = math.nan
    n: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ci"] = None if self.ci is None else list(self.ci)
        return d


def _cells_where(spec: EstimatorSpec, **kw: Any) -> list[Cell]:
    return [c for c in spec.cells() if all(getattr(c, k) == v for k, v in kw.items())]


def _present(rows: Sequence[dict] | RowIndex, cells: Iterable[Cell]) -> list[Cell]:
    ix = _ix(rows)
    return [c for c in cells if ix.has(c)]


def _family_detail(cmps: list[Comparison], verdicts: list[str]) -> str:
    counts = {v: verdicts.count(v) for v in ("better", "worse", "equivalent", "inconclusive") if verdicts.count(v)}
    return f"over {len(cmps)} cells: " + ", ".join(f"{v} in {k}" for v, k in counts.items())


def _comparison_findings(rows, spec, fid: str, claim: str, a: str, b: str, quantity: str, cells: list[Cell],
                         headline: Cell, margin: float, higher: bool, figure: str) -> list[Finding]:
    cmps = _holm([compare_paired(rows, c, a, b, quantity) for c in cells])
    vs = [verdict(c, margin, spec.alpha, higher_is_better=higher) for c in cmps]
    by = {c.cell: (c, v) for c, v in zip(cmps, vs)}
    if headline not in by:
        return []
    c, v = by[headline]
    return [Finding(fid, claim, f"{quantity}({a}) - {quantity}({b}) at {headline.label()}", c.diff, c.ci, v, figure,
                    _family_detail(cmps, vs) + f"; detectable at 80% power: {c.mde:.3g}; Holm over the family",
                    c.p_adjusted, len(cmps), margin, c.n)]


def findings(rows: Sequence[dict], spec: EstimatorSpec = SPEC) -> list[Finding]:
    """The study's findings, each declared here (claim, quantity, family, margin) before the data;
    computed on the :func:`measurable` rows."""
    ix = RowIndex(measurable(rows, spec))
    rows = ix.rows
    out: list[Finding] = []
    T0, K0 = spec.centre_length, spec.centre_kl
    off_kls = [k for k in spec.kls if k > 0]
    # 1. exact identities (theorems TE1-TE3 of proofs/theorems_estimator.py), checked on every draw
    add = [r for r in rows if r["reward"] == "count" and r["policy"] == "tabular" and r["method"] == "enumeration"
           and r["tau"] == 0 and r["clip"] == "none" and r["variant"] in ("p=1", "grpo-token")]
    if add:
        dev = max(1.0 - r["cosine"] for r in add)
        out.append(Finding("est-additive-arithmetic-unbiased",
                           "For the additive count reward and a factorized policy, p = 1 and token-level GRPO are "
                           "unbiased in direction (cosine 1) at every off-policy distance (theorem TE3)",
                           "max over cells and draws of 1 - cosine", dev, None,
                           "confirmed" if dev <= 1e-9 else "contradicted", "figures/cosine_vs_kl.png",
                           f"{len(add)} (cell, draw, variant) evaluations by enumeration"))
    ctl = [r for r in rows if r["variant"] == CONTROL and r["tau"] == 0 and r["method"] == "enumeration"]
    if ctl:
        dev = max(r["rel_bias"] for r in ctl)
        out.append(Finding("est-control-unbiased",
                           "The is-product control (full likelihood ratio) is unbiased: rel_bias 0 for every mu "
                           "(theorem TE2)", "max over cells and draws of rel_bias", dev, None,
                           "confirmed" if dev <= 1e-9 else "contradicted", "figures/cosine_vs_kl.png",
                           f"{len(ctl)} evaluations by enumeration; with noise tau it is exp(T tau^2 / 2) grad J"))
    onp = [r for r in rows if r["kl"] == 0 and r["tau"] == 0 and r["clip"] == "none" and r["method"] == "enumeration"
           and r["variant"] != CONTROL]
    if onp:
        dev_c = max(abs(1.0 - r["cosine"]) for r in onp)
        dev_b = max(abs(r["rel_bias"] - (1.0 - 1.0 / r["length"])) for r in onp)
        out.append(Finding("est-on-policy-length-normalisation",
                           "On-policy (mu = pi, no noise, no clip) every variant has cosine 1, and with the "
                           "trainer's seq-mean-token-mean aggregation rel_bias 1 - 1/T (theorem TE1)",
                           "max over cells, draws and variants of |1 - cosine| and |rel_bias - (1 - 1/T)|",
                           max(dev_c, dev_b), None, "confirmed" if max(dev_c, dev_b) <= 1e-9 else "contradicted",
                           "figures/cosine_vs_kl.png", f"|1 - cosine| <= {dev_c:.2g}, |rel_bias - (1-1/T)| <= {dev_b:.2g}"))
    noise = [r for r in rows if r["kl"] == 0 and r["tau"] > 0 and r["clip"] == "none" and r["variant"] != CONTROL
             and r["mc_error"] > 0]
    if noise:
        # An estimate m + e of a vector m parallel to grad J, e of RMS |e| = mc_error |m|, shows a cosine deficit
        # 1 - cos ~ |e_perp|^2 / (2 |m|^2): (1 - cos) / mc_error^2 averages about 1/2 when the direction is exact,
        # and a true bias b adds b / mc_error^2 (large: mc_error^2 is 1e-3 at tau = 0.1). Declared: exact if <= 1.
        ratios = [(1.0 - r["cosine"]) / r["mc_error"] ** 2 for r in noise]
        mean_ratio = float(np.mean(ratios))
        out.append(Finding("est-noise-only-direction",
                           "With mismatch noise and no policy shift (KL 0, unclipped) every p keeps cosine 1 "
                           "(theorem TE6: the noise is exchangeable over tokens): the measured cosine deficit is the "
                           "Monte Carlo error of the noise draws and nothing more",
                           "mean over cells, draws and variants of (1 - cosine) / mc_error^2", mean_ratio, None,
                           "confirmed" if mean_ratio <= 1.0 else "contradicted", "figures/noise.png",
                           f"{len(noise)} evaluations; median {float(np.median(ratios)):.2f}, largest "
                           f"{max(ratios):.2f}; largest 1 - cosine {max(1.0 - r['cosine'] for r in noise):.3g}"))
    # 2. direction: HMPO and the arithmetic mean against GSPO, every reward, both policies, every KL > 0
    for a, name in (("p=-1", "hmpo"), ("p=1", "arithmetic")):
        fam = _present(ix, [c for c in spec.cells() if c.length == T0 and c.kl in off_kls and c.tau == 0
                            and c.clip == "none" and c.method == "enumeration"])
        for reward in spec.rewards:
            out += _comparison_findings(
                ix, spec, f"est-direction-{name}-vs-gspo-{reward}",
                f"{a} points closer to grad J than GSPO (p=0) for the {reward} reward (cosine of the expected "
                "single-answer gradient)", a, BASELINE, "cosine", fam, Cell(reward, "tabular", T0, K0),
                spec.margin, True, "figures/cosine_vs_kl.png")
    # 3. variance (bias-variance): single-answer variance relative to |grad J|^2, log scale
    lv = math.log1p(spec.var_margin)
    fam = _present(ix, [c for c in spec.cells() if c.length == T0 and c.kl in off_kls and c.tau == 0
                        and c.clip == "none" and c.method == "enumeration"])
    for a, name in (("p=-1", "hmpo"), ("p=1", "arithmetic"), (CONTROL, "is-product")):
        for reward in spec.rewards:
            out += _comparison_findings(
                ix, spec, f"est-variance-{name}-vs-gspo-{reward}",
                f"{a} has a smaller single-answer gradient variance than GSPO (p=0) for the {reward} reward",
                a, BASELINE, "log_rel_var", fam, Cell(reward, "tabular", T0, K0), lv, False, "figures/variance_vs_p.png")
    out += _tradeoff_findings(ix, spec)
    out += _length_findings(ix, spec)
    out += _clip_findings(ix, spec)
    out += _ess_findings(ix, spec)
    out += _mc_findings(ix, spec)
    out += _issue_findings(ix, spec)
    return out


def _mean(rows: Sequence[dict] | RowIndex, cell: Cell, variant: str, quantity: str) -> float:
    v = list(_values(rows, cell, variant, quantity).values())
    return float(np.mean(v)) if v else math.nan


def _tradeoff_findings(rows, spec) -> list[Finding]:
    """Is the lower-variance mean the more biased one? Spearman correlation over the seven p of
    (mean scaled bias, mean log variance) per cell; descriptive."""
    from scipy import stats as sps

    ps = [v for v in spec.variants if v.startswith("p=")]
    T0 = spec.centre_length
    out = []
    for reward in spec.rewards:
        rhos = []
        for kl in (k for k in spec.kls if k > 0):
            cell = Cell(reward, "tabular", T0, kl)
            b = [_mean(rows, cell, v, "scaled_bias") for v in ps]
            lv = [_mean(rows, cell, v, "log_rel_var") for v in ps]
            if all(map(math.isfinite, b + lv)):
                rhos.append((kl, float(sps.spearmanr(b, lv).statistic)))
        if not rhos:
            continue
        rho0 = dict(rhos).get(spec.centre_kl, rhos[-1][1])
        out.append(Finding(f"est-bias-variance-tradeoff-{reward}",
                           f"Across p, a smaller direction bias comes with a larger variance for the {reward} reward "
                           "(a bias-variance trade-off: negative rank correlation)",
                           f"Spearman rho over p of (scaled bias, log variance) at KL {spec.centre_kl:g}", rho0, None,
                           "measured", "figures/variance_vs_p.png",
                           "rho by KL: " + ", ".join(f"{k:g}: {r:+.2f}" for k, r in rhos)))
    return out


def _length_findings(rows, spec) -> list[Finding]:
    """C000-35: does the HMPO-GSPO cosine gap change with the answer length at fixed KL per token?"""
    lengths = spec.enum_lengths
    out = []
    if len(lengths) < 2:
        return out
    fam = []
    for reward in spec.rewards:
        for pol in spec.policies:
            long, short = Cell(reward, pol, lengths[-1], spec.centre_kl), Cell(reward, pol, lengths[0], spec.centre_kl)
            if _present(rows, [long, short]) == [long, short]:
                fam.append(compare_unpaired(rows, long, short, "p=-1", BASELINE))
    fam = _holm(fam)
    for c in fam:
        if c.cell.policy != "tabular":
            continue
        v = verdict(c, spec.margin, spec.alpha)
        mc = [(T, _mean(rows, Cell(c.cell.reward, "tabular", T, spec.centre_kl, method="monte-carlo"), "p=-1", "cosine")
               - _mean(rows, Cell(c.cell.reward, "tabular", T, spec.centre_kl, method="monte-carlo"), BASELINE,
                       "cosine")) for T in spec.mc_lengths]
        mc_txt = ", ".join(f"T={T}: {g:+.3f}" for T, g in mc if math.isfinite(g))
        out.append(Finding(f"est-length-gap-{c.cell.reward}",
                           f"The cosine gap between HMPO (p=-1) and GSPO (p=0) for the {c.cell.reward} reward is larger "
                           f"(more positive) at T={lengths[-1]} than at T={lengths[0]}, at {spec.centre_kl:g} KL per token",
                           f"gap(T={lengths[-1]}) - gap(T={lengths[0]}), gap = cosine(p=-1) - cosine(p=0)", c.diff,
                           c.ci, v, "figures/length.png",
                           f"Welch over independent draws, Holm over {len(fam)} (reward, policy) pairs; detectable at "
                           f"80% power: {c.mde:.3g}" + (f"; Monte Carlo gaps {mc_txt}" if mc_txt else ""),
                           c.p_adjusted, len(fam)))
    return out


def _clip_findings(rows, spec) -> list[Finding]:
    if "gspo" not in spec.clips or not spec.clip_kls:
        return []
    kl = spec.clip_kls[min(1, len(spec.clip_kls) - 1)]
    cells = [(Cell(r, "tabular", spec.centre_length, kl, 0.0, "gspo"), Cell(r, "tabular", spec.centre_length, kl))
             for r in spec.rewards]
    out = []
    for clipped, free in cells:
        if _present(rows, [clipped, free]) != [clipped, free]:
            continue
        a, b = _values(rows, clipped, BASELINE, "cosine"), _values(rows, free, BASELINE, "cosine")
        d = np.array([a[k] - b[k] for k in sorted(set(a) & set(b))])
        mean, ci, p, mde = _t_summary(d)
        c = Comparison("cosine", "gspo clip", "no clip", clipped, mean, ci, p, d.size, mde, True, p)
        out.append(Finding(f"est-gspo-window-{clipped.reward}",
                           f"GSPO's narrow window (3e-4/4e-4) keeps GSPO's direction (p=0) as close to grad J as no clip "
                           f"for the {clipped.reward} reward at KL {kl:g}",
                           "cosine(p=0, GSPO window) - cosine(p=0, no clip)", mean, ci,
                           verdict(c, spec.margin, spec.alpha), "figures/clip.png",
                           f"paired over draws; detectable at 80% power: {mde:.3g}"))
    return out


def _ess_findings(rows, spec) -> list[Finding]:
    """The study's ESS against the Gaussian limit exp(-p^2 sigma^2) at the longest answers."""
    T = max(spec.mc_lengths or spec.enum_lengths)
    sel = [r for r in _ix(rows).rows if r["length"] == T and r["tau"] == 0 and r["clip"] == "none"
           and r["policy"] == "tabular" and r["variant"].startswith("p=") and r["kl"] > 0]
    if not sel:
        return []
    dev = [abs(r["ess"] - math.exp(-float(r["variant"][2:]) ** 2 * r["spread"] ** 2)) for r in sel]
    return [Finding("est-ess-gaussian-limit",
                    f"The token-weight ESS follows exp(-p^2 sigma^2) (theorem TE5, i.i.d. Gaussian log-ratios, T -> "
                    f"inf), sigma the within-answer spread of the log-ratios, at T = {T}",
                    "max |ESS - exp(-p^2 sigma^2)| over cells, draws and p", max(dev), None, "measured",
                    "figures/ess_vs_spread.png",
                    f"median {float(np.median(dev)):.3g} over {len(dev)} evaluations; the bandit's log-ratios are "
                    "not Gaussian, so the limit is a reference, not an identity")]


def _mc_findings(rows, spec) -> list[Finding]:
    """The Monte Carlo path against enumeration in the centre cell: within the stated error?"""
    out = []
    worst = 0.0
    n = 0
    for reward in spec.rewards:
        ex = Cell(reward, "tabular", spec.centre_length, spec.centre_kl)
        mc = dataclasses.replace(ex, method="monte-carlo")
        for v in spec.variants:
            a, b = _values(rows, ex, v, "cosine"), _values(rows, mc, v, "cosine")
            e = _values(rows, mc, v, "mc_error")
            for k in set(a) & set(b):
                worst = max(worst, abs(a[k] - b[k]) / max(e[k], 1e-300))
                n += 1
    if n:
        out.append(Finding("est-monte-carlo-agrees",
                           "The Monte Carlo path agrees with exact enumeration within its stated error in the centre "
                           "cell", "max over rewards, variants and draws of |cos_MC - cos_exact| / mc_error", worst,
                           None, "confirmed" if worst <= 4.0 else "contradicted", "figures/length.png",
                           f"{n} paired evaluations with {spec.mc_samples} answers each; mc_error is the relative RMS "
                           "error of E g, an upper scale for the cosine's error"))
    return out


def _issue_findings(rows, spec) -> list[Finding]:
    """The issue's figures under this study's definitions (descriptive)."""
    out = []
    T0 = spec.centre_length
    for reward in ("all-or-nothing", "prefix"):
        cell = Cell(reward, "tabular", T0, spec.issue_kl)
        vals = {v: _mean(rows, cell, v, "cosine") for v in ("p=0", "p=1", "p=-1")}
        if all(map(math.isfinite, vals.values())):
            out.append(Finding(f"est-issue-figures-{reward}",
                               "Issue 12 reports, for the non-additive rewards at V = 3, T = 8 and KL 0.25 per token, "
                               "cosine p=0 0.86, p=1 0.80, p=-1 0.42",
                               f"mean cosine over draws (p=0, p=1, p=-1), {reward}, V={spec.vocab}, T={T0}, "
                               f"KL {spec.issue_kl:g}", vals["p=0"], None, "measured",
                               "figures/cosine_vs_kl.png",
                               f"{reward}: " + ", ".join(f"{v} {x:.3f}" for v, x in vals.items())))
    cell = Cell("all-or-nothing", "tabular", T0, 0.0, max(spec.taus))
    vals = {v: _mean(rows, cell, v, "cosine") for v in ("p=0", "p=-1", "p=1")}
    if all(map(math.isfinite, vals.values())):
        err = {v: _mean(rows, cell, v, "mc_error") for v in vals}
        out.append(Finding("est-issue-figures-noise",
                           "Issue 12 reports, with tau = 1 noise and no policy shift: cosine p=0 1.000, p=-1 0.98, "
                           "p=1 0.96", f"mean cosine over draws (p=0, p=-1, p=1), all-or-nothing, T={T0}, "
                           f"tau {max(spec.taus):g}, KL 0", vals["p=0"], None,
                           "measured", "figures/noise.png",
                           "all-or-nothing: " + ", ".join(f"{v} {x:.4f} (mc_error {err[v]:.3f})" for v, x in vals.items())
                           + "; the exact value is 1 for every p (theorem TE6)"))
    return out


#: the estimator's verdicts in the words of rl.studies.findings: an exact identity checked on
#: every draw "holds" or "fails"; a descriptive figure has no test
_GENERAL_VERDICT = {"confirmed": "holds", "contradicted": "fails", "measured": "descriptive"}


def as_study_finding(f: Finding) -> StudyFinding:
    """The general typed finding (rl.studies.findings) of one estimator finding, with its one test.

    Comparisons are stated in the claim's direction, so ``better`` supports the claim; an exact
    identity is supported where it holds; descriptive figures support nothing.
    """
    verdict = _GENERAL_VERDICT.get(f.verdict, f.verdict)
    supports = {"holds": "holds", "fails": "holds", "descriptive": None}.get(verdict, "better")
    exact = verdict in ("holds", "fails")
    lo, hi = f.ci if f.ci is not None else (math.nan, math.nan)
    test = StatTest(cell="estimator", endpoint=f.quantity,
                    test="exact identity over every draw" if exact else
                    "descriptive" if supports is None else "paired t over draws, Holm over the family",
                    n=f.n, estimate=float(f.value), ci_low=lo, ci_high=hi, margin=f.margin, p=math.nan,
                    p_adjusted=math.nan if f.p_adjusted is None else float(f.p_adjusted), verdict=verdict,
                    family=f"{f.id} ({f.family} cells)")
    return StudyFinding(id=f.id, kind="exact" if exact else "descriptive" if supports is None else "comparison",
                        claim=f.claim, study="estimator", endpoint=f.quantity,
                        margin="" if math.isnan(f.margin) else f"{f.margin:g}", family=test.family, tests=(test,),
                        verdict=verdict, supports=supports, outcome=outcome(verdict, supports),
                        summary=f"{f.verdict}: {f.quantity} = {f.value:.4g}" + (
                            f" [{lo:.3g}, {hi:.3g}]" if f.ci is not None else "") + (f". {f.detail}" if f.detail else ""),
                        figure=f.figure)


def findings_json(found: Sequence[Finding], spec: EstimatorSpec, n_rows: int) -> dict[str, Any]:
    """The findings.json document (rl.studies.findings' schema), with the design it came from."""
    return findings_document("estimator", [as_study_finding(f) for f in found], design_version=SCHEMA_VERSION,
                             fingerprint=spec.fingerprint(), design=dataclasses.asdict(spec), n_rows=n_rows)

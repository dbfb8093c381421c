"""The estimator study's report: reports/estimator/ (README.md, figures/*.png, summary.csv, findings.json).

Renders what :mod:`rl.studies.estimator` computed: per (cell, variant) summaries over the draws
(:func:`summarise`), the findings (typed records, written to findings.json with their schema
version) and six figures. Every number in the README comes from the rows; nothing is typed in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rl._io import atomic_write_json, atomic_write_text
from rl.studies.estimator import (
    BASELINE, CELL_FIELDS, CONTROL, SPEC, Cell, EstimatorSpec, RowIndex, compare_paired, findings, findings_json,
    log_rel_var, measurable, verdict,
)

__all__ = ["Summary", "summarise", "best_table", "write_report", "FIGURES"]

#: figure file -> what it shows (the README's captions)
FIGURES = {
    "cosine_vs_kl.png": "Cosine between E g and grad J (top) and scaled bias (bottom) against the KL per token, "
                        "one panel per reward structure (shared y-axes); tabular policy, T = 8, no noise, no clip. "
                        "Bands (p = -1, 0, 1): 95% t-intervals over the draws.",
    "cosine_vs_kl_autoregressive.png": "The same for the autoregressive (RNN) policy.",
    "variance_vs_p.png": "Single-answer variance trace Var g / |grad J|^2 (top, log scale; geometric mean over draws) "
                         "and scaled bias (bottom) against p, for three KL per token; the is-product control as "
                         "dashed lines. Tabular, T = 8.",
    "ess_vs_spread.png": "Token-weight ESS against the within-answer spread sigma of the token log-ratios, every "
                         "tabular cell without noise or clip (marker size: T), with the Gaussian limit "
                         "exp(-p^2 sigma^2) for |p| = 0.5, 1, 2 (p and -p share it).",
    "length.png": "Cosine against the answer length T: enumeration for T <= 8 (solid), Monte Carlo for T >= 8 "
                  "(dashed, error bars: the Monte Carlo error, capped at 1), at two KL per token; GMPO equals p = 0 "
                  "without a clip. The all-or-nothing reward is not measurable by Monte Carlo (no rewarded answers). The "
                  "is-product control is unbiased at every T (TE2): its falling Monte Carlo cosine is its variance "
                  "outgrowing 4096 samples, not a bias.",
    "noise.png": "Cosine against the mismatch noise tau on the behaviour log-probs, with no policy shift (top) and at "
                 "KL 0.2 (bottom). Tabular, T = 8, no clip. Without a policy shift the exact cosine is 1 for every "
                 "variant (theorem TE6): the deficits at tau = 1 are the Monte Carlo error of the few noise draws per "
                 "answer (largest for the heavy-tailed is-product and |p| = 2), not a bias; see est-noise-only-direction.",
    "clip.png": "Cosine against the KL per token for no clip (solid), the 0.2 window (dashed) and GSPO's 3e-4/4e-4 "
                "(dotted), for p = -1, 0, 1. Tabular, T = 8.",
}

_P_VARIANTS = ("p=-2", "p=-1", "p=-0.5", "p=0", "p=0.5", "p=1", "p=2")


@dataclass(frozen=True)
class Summary:
    """One (cell, variant) over its draws: means with 95% t-intervals (``rel_var``: geometric mean,
    interval on the log scale)."""

    cell: Cell
    variant: str
    n: int
    cosine: float
    cosine_ci: tuple[float, float]
    scaled_bias: float
    scaled_bias_ci: tuple[float, float]
    rel_bias: float
    rel_var: float
    rel_var_ci: tuple[float, float]
    ess: float
    spread: float
    kl: float
    mc_error: float


def _ci(x: np.ndarray) -> tuple[float, tuple[float, float]]:
    from scipy import stats as sps

    m = float(x.mean())
    if x.size < 2 or not np.isfinite(x).all():  # a zero variance (log -inf: E g = 0) has no interval
        return m, (math.nan, math.nan)
    h = float(sps.t.ppf(0.975, x.size - 1)) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return m, (m - h, m + h)


def _exp(x: float) -> float:
    """exp, saturating at inf (a geometric mean of variances near the float64 ceiling)."""
    return math.exp(x) if x < 709.78 else math.inf


def summarise(rows: Sequence[dict[str, Any]]) -> list[Summary]:
    """A Summary per (cell, variant), in the rows' order of first appearance."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((tuple(r[k] for k in CELL_FIELDS), r["variant"]), []).append(r)
    out = []
    for (key, variant), rs in groups.items():
        col = lambda k: np.array([r[k] for r in rs], dtype=float)  # noqa: E731
        cos, cos_ci = _ci(col("cosine"))
        sb, sb_ci = _ci(col("scaled_bias"))
        lv = np.array([log_rel_var(v) for v in col("rel_var")])
        lvm, lv_ci = _ci(lv)
        out.append(Summary(Cell(*key), variant, len(rs), cos, cos_ci, sb, sb_ci, float(col("rel_bias").mean()),
                           _exp(lvm), (_exp(lv_ci[0]), _exp(lv_ci[1])) if math.isfinite(lv_ci[0])
                           else (math.nan, math.nan), float(col("ess").mean()), float(col("spread").mean()),
                           float(col("kl_per_token").mean()), float(col("mc_error").mean())))
    return out


def _index(summ: Sequence[Summary]) -> dict[tuple[Cell, str], Summary]:
    return {(s.cell, s.variant): s for s in summ}


def best_table(rows: Sequence[dict], summ: Sequence[Summary], spec: EstimatorSpec) -> list[dict[str, Any]]:
    """Where each p is best: per (reward, policy, KL > 0) at the centre length, the variant with the
    highest mean cosine (the control excluded), the runner-up, their paired difference and verdict,
    and the variant with the lowest variance."""
    idx = _index(summ)
    rix = RowIndex(rows)
    out = []
    for pol in spec.policies:
        for reward in spec.rewards:
            for kl in (k for k in spec.kls if k > 0):
                cell = Cell(reward, pol, spec.centre_length, kl)
                cand = [idx[(cell, v)] for v in spec.variants if v != CONTROL and (cell, v) in idx]
                if len(cand) < 2:
                    continue
                # variants whose every draw coincides (p = 1 and GRPO unclipped) are one estimator: rank distinct ones
                ranked = sorted(cand, key=lambda s: -s.cosine)
                best = ranked[0]
                runner = next((s for s in ranked[1:] if abs(s.cosine - best.cosine) > 1e-12), ranked[1])
                ties = sorted((s.variant for s in ranked if abs(s.cosine - best.cosine) <= 1e-12),
                              key=lambda v: (not v.startswith("p="), v))
                c = compare_paired(rix, cell, best.variant, runner.variant)
                low = min(cand, key=lambda s: s.rel_var)
                out.append({"policy": pol, "reward": reward, "kl": kl, "best": " = ".join(ties), "cosine": best.cosine,
                            "runner_up": runner.variant, "runner_cosine": runner.cosine, "diff": c.diff, "ci": c.ci,
                            "verdict": verdict(c, spec.margin, spec.alpha), "lowest_variance": low.variant,
                            "gspo_cosine": idx[(cell, BASELINE)].cosine if (cell, BASELINE) in idx else math.nan})
    return out


# ---------------------------------------------------------------------------------------------- figures


#: variants drawn with their confidence bands (the others as lines only, so that bands stay readable)
_BANDED = ("p=-1", "p=0", "p=1")


def _colour(variant: str):
    """Blues for p < 0, reds for p > 0 (darker with |p|), black for GSPO (p = 0), the rest by name."""
    import matplotlib.pyplot as plt

    if variant.startswith("p="):
        pv = float(variant[2:])
        if pv == 0:
            return "black"
        depth = 0.35 + 0.65 * min(abs(pv), 2.0) / 2.0
        return plt.get_cmap("Blues" if pv < 0 else "Reds")(depth)
    return {"grpo-token": "tab:orange", "gmpo": "tab:green", CONTROL: "0.55"}[variant]


def _style(variant: str) -> dict[str, Any]:
    if variant == "grpo-token":
        return {"ls": (0, (4, 3)), "lw": 1.2}
    if variant == "gmpo":
        return {"ls": ":", "lw": 1.8}
    if variant == CONTROL:
        return {"ls": "-", "lw": 3.0, "alpha": 0.6}
    return {"ls": "-", "lw": 1.5}


def _series(idx, cells: Sequence[Cell], variant: str, attr: str):
    ss = [idx.get((c, variant)) for c in cells]
    y = np.array([getattr(s, attr) if s else math.nan for s in ss])
    ci = np.array([getattr(s, attr + "_ci") if s and hasattr(s, attr + "_ci") else (math.nan, math.nan) for s in ss])
    return y, ci


def _fig_vs_kl(idx, spec: EstimatorSpec, policy: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    kls = list(spec.kls)
    x = np.arange(len(kls))
    fig, axes = plt.subplots(2, len(spec.rewards), figsize=(4.2 * len(spec.rewards), 7), sharey="row", squeeze=False)
    for j, reward in enumerate(spec.rewards):
        cells = [Cell(reward, policy, spec.centre_length, k) for k in kls]
        for i, attr in enumerate(("cosine", "scaled_bias")):
            ax = axes[i, j]
            for v in spec.variants:
                y, ci = _series(idx, cells, v, attr)
                ax.plot(x, y, color=_colour(v), label=v, **_style(v))
                if v in _BANDED:
                    ax.fill_between(x, ci[:, 0], ci[:, 1], color=_colour(v), alpha=0.12, lw=0)
            ax.set_xticks(x, [f"{k:g}" for k in kls])
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(reward)
            else:
                ax.set_xlabel("KL(mu || pi) per token")
        axes[0, 0].set_ylabel("cosine(E g, grad J)")
        axes[1, 0].set_ylabel("scaled bias  min_c |c E g - grad J| / |grad J|")
    axes[0, -1].legend(fontsize=7, ncol=2, loc="lower left")
    fig.suptitle(f"{policy} policy, V = {spec.vocab}, T = {spec.centre_length}, {spec.draws} draws per cell")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fig_variance(idx, spec: EstimatorSpec, path: Path) -> None:
    import matplotlib.pyplot as plt

    ps = [v for v in _P_VARIANTS if v in spec.variants]
    x = np.array([float(v[2:]) for v in ps])
    kls = [k for k in spec.kls if k > 0][-3:]
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(2, len(spec.rewards), figsize=(4.2 * len(spec.rewards), 7), sharey="row", squeeze=False)
    for j, reward in enumerate(spec.rewards):
        for k, kl in enumerate(kls):
            col = cmap(k / max(len(kls) - 1, 1))
            cell = Cell(reward, "tabular", spec.centre_length, kl)
            for i, attr in enumerate(("rel_var", "scaled_bias")):
                y = np.array([idx[(cell, v)].__getattribute__(attr) if (cell, v) in idx else math.nan for v in ps])
                ci = np.array([getattr(idx[(cell, v)], attr + "_ci") if (cell, v) in idx else (math.nan,) * 2
                               for v in ps])
                axes[i, j].plot(x, y, "o-", color=col, label=f"KL {kl:g}")
                axes[i, j].fill_between(x, ci[:, 0], ci[:, 1], color=col, alpha=0.15, lw=0)
                if (cell, CONTROL) in idx:
                    axes[i, j].axhline(getattr(idx[(cell, CONTROL)], attr), color=col, ls="--", lw=1)
        axes[0, j].set_yscale("log")
        axes[0, j].set_title(reward)
        axes[1, j].set_xlabel("p")
        for i in range(2):
            axes[i, j].grid(alpha=0.3)
    axes[0, 0].set_ylabel("trace Var g / |grad J|^2")
    axes[1, 0].set_ylabel("scaled bias")
    axes[0, -1].legend(fontsize=8)
    fig.suptitle(f"variance against p (dashed: is-product control); tabular, T = {spec.centre_length}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fig_ess(summ: Sequence[Summary], spec: EstimatorSpec, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    sel = [s for s in summ if s.cell.policy == "tabular" and s.cell.tau == 0 and s.cell.clip == "none"
           and s.variant in _P_VARIANTS and s.variant != "p=0"]
    smax = max((s.spread for s in sel), default=1.0)
    grid = np.linspace(0, smax * 1.05, 200)
    for ap, ls in ((0.5, ":"), (1.0, "--"), (2.0, "-")):
        ax.plot(grid, np.exp(-(ap**2) * grid**2), color="k", ls=ls, lw=1, label=f"exp(-p^2 sigma^2), |p| = {ap:g}")
    for s in sel:
        ax.scatter(s.spread, s.ess, s=8 + 1.5 * s.cell.length, color=_colour(s.variant), alpha=0.7,
                   marker="o" if s.cell.method == "enumeration" else "s", edgecolors="none")
    for v in _P_VARIANTS:
        if v != "p=0":
            ax.scatter([], [], color=_colour(v), label=v)
    ax.set_xlabel("sigma: within-answer spread of the token log-ratios, sqrt(E_y Var_t l_t)")
    ax.set_ylabel("E_y token-weight ESS (the loss's metric)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("ESS against the spread (circles: enumeration, squares: Monte Carlo; size: T)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fig_length(idx, spec: EstimatorSpec, path: Path) -> None:
    import matplotlib.pyplot as plt

    kls = [k for k in spec.mc_kls if k in spec.kls] or list(spec.mc_kls)
    fig, axes = plt.subplots(len(kls), len(spec.rewards), figsize=(4.2 * len(spec.rewards), 3.6 * len(kls)),
                             sharey=True, squeeze=False)
    # GMPO is p = 0 here (no clip); the control first, so that the means are drawn over it
    variants = [v for v in (CONTROL, "p=-1", "p=1", "p=0") if v in spec.variants]
    for i, kl in enumerate(kls):
        for j, reward in enumerate(spec.rewards):
            ax = axes[i, j]
            for v in variants:
                ce = [Cell(reward, "tabular", T, kl) for T in spec.enum_lengths]
                y, _ = _series(idx, ce, v, "cosine")
                ax.plot(spec.enum_lengths, y, "o-", color=_colour(v), label=v)
                mts = sorted({spec.centre_length, *spec.mc_lengths})
                cm = [Cell(reward, "tabular", T, kl, method="monte-carlo") for T in mts]
                ym, _ = _series(idx, cm, v, "cosine")
                err = np.array([idx[(c, v)].mc_error if (c, v) in idx else math.nan for c in cm])
                ax.errorbar(mts, ym, yerr=np.minimum(err, 1.0), fmt="s--", color=_colour(v), ms=4, capsize=2, lw=1)
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted({*spec.enum_lengths, *spec.mc_lengths}), [str(t) for t in
                                                                          sorted({*spec.enum_lengths, *spec.mc_lengths})])
            ax.set_ylim(-0.05, 1.05)
            ax.grid(alpha=0.3)
            ax.set_title(f"{reward}, KL {kl:g}")
            ax.set_xlabel("T (answer length)")
        axes[i, 0].set_ylabel("cosine(E g, grad J)")
    axes[0, -1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fig_noise(idx, spec: EstimatorSpec, path: Path) -> None:
    import matplotlib.pyplot as plt

    kls = list(spec.noise_kls)
    fig, axes = plt.subplots(len(kls), len(spec.rewards), figsize=(4.2 * len(spec.rewards), 3.6 * len(kls)),
                             sharey="row", squeeze=False)
    x = np.arange(len(spec.taus))
    for i, kl in enumerate(kls):
        for j, reward in enumerate(spec.rewards):
            ax = axes[i, j]
            cells = [Cell(reward, "tabular", spec.centre_length, kl, t) for t in spec.taus]
            for v in spec.variants:
                y, ci = _series(idx, cells, v, "cosine")
                ax.plot(x, y, color=_colour(v), label=v, **_style(v))
                if v in _BANDED:
                    ax.fill_between(x, ci[:, 0], ci[:, 1], color=_colour(v), alpha=0.12, lw=0)
            ax.set_xticks(x, [f"{t:g}" for t in spec.taus])
            ax.grid(alpha=0.3)
            ax.set_title(f"{reward}, KL {kl:g}")
            ax.set_xlabel("tau (noise sd on log mu)")
        axes[i, 0].set_ylabel("cosine(E g, grad J)")
    axes[0, -1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fig_clip(idx, spec: EstimatorSpec, path: Path) -> None:
    import matplotlib.pyplot as plt

    kls = list(spec.clip_kls)
    x = np.arange(len(kls))
    styles = {"none": "-", "0.2": "--", "gspo": ":"}
    fig, axes = plt.subplots(1, len(spec.rewards), figsize=(4.2 * len(spec.rewards), 3.8), sharey=True, squeeze=False)
    for j, reward in enumerate(spec.rewards):
        ax = axes[0, j]
        for v in ("p=-1", "p=0", "p=1"):
            for clip in spec.clips:
                cells = [Cell(reward, "tabular", spec.centre_length, k, 0.0, clip) for k in kls]
                y, _ = _series(idx, cells, v, "cosine")
                ax.plot(x, y, ls=styles.get(clip, "-"), color=_colour(v), lw=1.6, label=f"{v}, clip {clip}")
        ax.set_xticks(x, [f"{k:g}" for k in kls])
        ax.set_title(reward)
        ax.set_xlabel("KL per token")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("cosine(E g, grad J)")
    axes[0, -1].legend(fontsize=6, ncol=1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_figures(rows: Sequence[dict], summ: Sequence[Summary], spec: EstimatorSpec, fig_dir: Path) -> list[str]:
    """Every figure of :data:`FIGURES` (those the rows can draw); the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    fig_dir.mkdir(parents=True, exist_ok=True)
    idx = _index(summ)
    pols = {s.cell.policy for s in summ}
    drawn = []
    jobs = [("cosine_vs_kl.png", lambda p: _fig_vs_kl(idx, spec, "tabular", p)),
            ("variance_vs_p.png", lambda p: _fig_variance(idx, spec, p)),
            ("ess_vs_spread.png", lambda p: _fig_ess(summ, spec, p)),
            ("length.png", lambda p: _fig_length(idx, spec, p)),
            ("noise.png", lambda p: _fig_noise(idx, spec, p)),
            ("clip.png", lambda p: _fig_clip(idx, spec, p))]
    if "autoregressive" in pols:
        jobs.insert(1, ("cosine_vs_kl_autoregressive.png", lambda p: _fig_vs_kl(idx, spec, "autoregressive", p)))
    for name, draw in jobs:
        draw(fig_dir / name)
        drawn.append(name)
    return drawn


# ---------------------------------------------------------------------------------------------- README


def _full_product(spec: EstimatorSpec) -> int:
    """Cells of the full grid: every axis crossed (the RNN by enumeration only, T <= max enum length)."""
    per_policy = {"tabular": len(spec.enum_lengths) + len(spec.mc_lengths), "autoregressive": len(spec.enum_lengths)}
    lengths = sum(per_policy.get(p, 0) for p in spec.policies)
    return len(spec.rewards) * lengths * len(spec.kls) * len(spec.taus) * len(spec.clips)


def _fmt_ci(ci) -> str:
    return "" if ci is None else f"[{ci[0]:.3g}, {ci[1]:.3g}]"


def _summary_csv(summ: Sequence[Summary]) -> str:
    cols = [*CELL_FIELDS, "variant", "n", "cosine", "cosine_lo", "cosine_hi", "scaled_bias", "scaled_bias_lo",
            "scaled_bias_hi", "rel_bias", "rel_var", "rel_var_lo", "rel_var_hi", "ess", "spread", "kl", "mc_error"]
    lines = [",".join(cols)]
    for s in summ:
        vals = [*dataclasses.astuple(s.cell), s.variant, s.n, s.cosine, *s.cosine_ci, s.scaled_bias, *s.scaled_bias_ci,
                s.rel_bias, s.rel_var, *s.rel_var_ci, s.ess, s.spread, s.kl, s.mc_error]
        lines.append(",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in vals))
    return "\n".join(lines) + "\n"


def _verdict_counts(f) -> str:
    """"worse in 1, inconclusive in 5" from a comparison finding's detail ("over 6 cells: ...")."""
    return f.detail.split(";")[0].split(": ", 1)[-1] + f" (of {f.family})" if f.detail.startswith("over ") else f.verdict


def _what_it_shows(rows, summ, best, found, spec: EstimatorSpec) -> list[str]:
    """Plain-words findings; every number and every direction in them is computed from the data."""
    idx = _index(summ)
    by_id = {f.id: f for f in found}
    T0, K0 = spec.centre_length, spec.centre_kl
    out = []
    # in short: which variant wins most often per reward (over both policies and every KL > 0), and how HMPO fares
    for reward in spec.rewards:
        wins: dict[str, int] = {}
        rb = [b for b in best if b["reward"] == reward]
        for b in rb:
            ties = b["best"].split(" = ")
            name = next((t for t in ties if t.startswith("p=")), ties[0])
            wins[name] = wins.get(name, 0) + 1
        if rb:
            top = max(wins, key=wins.get)
            out.append(f"- In short, **{reward}**: {top} points closest to grad J in {wins[top]} of {len(rb)} cells "
                       "(both policies, every KL > 0; ties of identical estimators named once).")
    g = by_id.get(f"est-direction-hmpo-vs-gspo-{spec.rewards[0]}")
    if g:
        out.append(f"- HMPO (p = -1) against GSPO over all {g.family} off-policy cells of the direction family: "
                   f"{_verdict_counts(g)}" + ("; the harmonic mean weights each answer's tokens by their smallest "
                                              "ratios, and its expected gradient turns away from grad J with them."
                                              if g.verdict == "worse" else "."))
    for pol in spec.policies:
        bs = [b for b in best if b["policy"] == pol]
        for reward in spec.rewards:
            rb = [b for b in bs if b["reward"] == reward]
            if rb:
                winners = ", ".join(f"KL {b['kl']:g}: {b['best']} ({b['cosine']:.3f}; GSPO {b['gspo_cosine']:.3f})"
                                    for b in rb)
                out.append(f"- **{reward}, {pol}** (T = {T0}): closest to grad J: {winners}.")
    f = by_id.get("est-additive-arithmetic-unbiased")
    if f and f.verdict == "confirmed":
        rnn = [s.cosine for s in summ if s.variant == "p=1" and s.cell.reward == "count" and s.cell.kl > 0
               and s.cell.policy == "autoregressive" and s.cell.tau == 0]
        out.append(f"- The additive reward is the case the theory singles out (TE3): p = 1 and token-level GRPO have "
                   f"cosine 1 at every KL for the factorized policy (largest deviation {f.value:.1e}): each token's ratio "
                   "is then the exact importance weight of its own independent bandit. It is a property of the reward "
                   "and the factorization, not of the mean"
                   + (f": for the RNN policy p = 1's mean cosine on the count reward is {min(rnn):.3f} to {max(rnn):.3f}."
                      if rnn else "."))
    for name, a in (("hmpo", "HMPO (p = -1)"), ("arithmetic", "p = 1")):
        parts = []
        for reward in spec.rewards:
            g = by_id.get(f"est-direction-{name}-vs-gspo-{reward}")
            if g:
                parts.append(f"{reward} {g.value:+.3f} {_fmt_ci(g.ci)} ({g.verdict})")
        if parts:
            g0 = by_id.get(f"est-direction-{name}-vs-gspo-{spec.rewards[0]}")
            out.append(f"- Direction, {a} minus GSPO in cosine at KL {K0:g} (tabular, T = {T0}): " + "; ".join(parts)
                       + f". Over the whole family (both policies, every KL > 0): {_verdict_counts(g0)}.")
    for reward in spec.rewards:
        c = Cell(reward, "tabular", T0, K0)
        vals = {v: idx[(c, v)].rel_var for v in ("p=-1", "p=0", "p=1", CONTROL) if (c, v) in idx}
        if len(vals) == 4:
            lowest = min(("p=-1", "p=0", "p=1"), key=vals.get)
            txt = (f"- Variance ({reward}, KL {K0:g}): trace Var g / |grad J|^2 is {vals['p=0']:.3g} for GSPO, "
                   f"{vals['p=-1']:.3g} for HMPO, {vals['p=1']:.3g} for p = 1 (lowest of the three: {lowest}) and "
                   f"{vals[CONTROL]:.3g} for the unbiased is-product control, {vals[CONTROL] / vals['p=0']:.0f} times "
                   "GSPO's")
            t = by_id.get(f"est-bias-variance-tradeoff-{reward}")
            if t:
                txt += (f"; across p the rank correlation of bias and variance is {t.value:+.2f} "
                        + ("(a trade-off: the less biased means are the noisier)" if t.value < -0.5 else
                           "(no trade-off: the less biased means are also the less noisy)" if t.value > 0.5 else
                           "(no clear trade-off)"))
            out.append(txt + ".")
    fs = [by_id[k] for k in by_id if k.startswith("est-length-gap-")]
    if fs:
        out.append(f"- Length (C000-35): at {spec.centre_kl:g} KL per token the HMPO minus GSPO cosine gap changes from "
                   f"T = {spec.enum_lengths[0]} to T = {spec.enum_lengths[-1]} by "
                   + "; ".join(f"{g.id.removeprefix('est-length-gap-')} {g.value:+.3f} {_fmt_ci(g.ci)} ({g.verdict}"
                               + (f"; {g.detail.split('; ')[-1]}" if "Monte Carlo gaps" in g.detail else "") + ")"
                               for g in fs) + ".")
    f = by_id.get("est-noise-only-direction")
    if f:
        out.append(f"- Mismatch noise alone (KL 0, no clip) leaves every mean's direction exact (theorem TE6): the "
                   f"cosine deficits measured are the Monte Carlo error of the noise draws, (1 - cosine) / mc_error^2 "
                   f"averaging {f.value:.2f} (1/2 expected without bias; {f.verdict}; {f.detail}).")
    for key in ("est-issue-figures-all-or-nothing", "est-issue-figures-prefix", "est-issue-figures-noise"):
        f = by_id.get(key)
        if f:
            out.append(f"- {f.claim}. Measured here: {f.detail}.")
    fs = [by_id[k] for k in by_id if k.startswith("est-gspo-window-")]
    if fs:
        out.append("- Clip: GSPO's window against no clip for GSPO itself, in cosine: "
                   + "; ".join(f"{g.id.removeprefix('est-gspo-window-')} {g.value:+.3f} {_fmt_ci(g.ci)} ({g.verdict})"
                               for g in fs) + ".")
    f = by_id.get("est-ess-gaussian-limit")
    if f:
        out.append(f"- ESS: {f.detail.split(';')[0]}; largest distance from exp(-p^2 sigma^2) {f.value:.3g}. In that "
                   "limit the ESS depends on p^2 only, so p and -p thin the token weights alike; they differ in which "
                   "tokens they keep (the largest ratios for p > 0, the smallest for p < 0).")
    return out


def write_report(rows: Sequence[dict], out_dir: str | Path, *, spec: EstimatorSpec = SPEC,
                 seconds: float = math.nan) -> dict[str, Any]:
    """Write reports/estimator/ from the study's rows; returns ``{"readme", "findings", "headline"}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    all_rows, rows = rows, measurable(rows, spec)
    kept = {id(r) for r in rows}
    left_out = [r for r in all_rows if id(r) not in kept]
    dropped = sorted({(r["reward"], r["length"], r["kl"]) for r in left_out})
    n_dropped = len({(r["reward"], r["length"], r["kl"], r["draw"]) for r in left_out})
    summ = summarise(rows)
    found = findings(rows, spec)
    best = best_table(rows, summ, spec)
    figs = write_figures(rows, summ, spec, out_dir / "figures")
    atomic_write_text(out_dir / "summary.csv", _summary_csv(summ))
    atomic_write_json(out_dir / "findings.json", findings_json(found, spec, len(all_rows)))
    cells = {tuple(r[k] for k in CELL_FIELDS) for r in all_rows}
    L = [f"# The exact estimator study", "",
         "How far each mean's expected single-answer policy gradient is from the true gradient grad J, by exact "
         "enumeration (no optimiser, no sampling noise): cosine, bias, variance and token-weight ESS of every loss "
         "variant of `rl.losses.policy_loss`, against the off-policy distance, the training-inference mismatch, the "
         "clip window, the answer length and the reward structure. Generated by `hmpo report` "
         f"(`rl.studies.estimator`): {len(cells)} cells x {spec.draws} draws x {len(spec.variants)} variants = "
         f"{len(all_rows)} evaluations" + (f" in {seconds:.0f} s." if math.isfinite(seconds) else "."), ""]
    if dropped:
        L += [f"Not measurable by Monte Carlo and left out ({n_dropped} cell draws with fewer than "
              f"{spec.mc_min_rewarded} rewarded answers in {spec.mc_samples} samples): "
              + "; ".join(f"{rw} T={T} KL {kl:g}" for rw, T, kl in dropped) + ".", ""]
    L += ["## What this shows", "", *_what_it_shows(rows, summ, best, found, spec), ""]
    L += ["## Design", "",
          f"- Answers of T tokens from V = {spec.vocab}; rewards {', '.join(spec.rewards)}; policies "
          f"{', '.join(spec.policies)} (the RNN with hidden size {spec.hidden}).",
          "- A draw: a hidden target y*, a current policy pi (tabular logits i.i.d. N(0, 1); RNN weight matrices "
          "N(0, 1/fan_in), embeddings and biases N(0, 1)) and a direction u drawn the same way; the behaviour policy "
          "is mu = pi + delta u with delta solved so that KL(mu || pi) / T is the cell's KL per token (exact). The "
          f"draws d = 0..{spec.draws - 1} are common to every KL, reward, noise level, clip and variant (paired).",
          "- The estimator: g(y) = -grad policy_loss on a batch of the one answer y ~ mu, advantage "
          "A(y) = rbar(y) - J(mu), the trainer's `seq-mean-token-mean` aggregation, the loss's safety cap on "
          f"log-ratios `max_log_ratio` = {spec.max_log_ratio} (the trainer's 20 caps the rare huge ratios of the "
          "far behaviour policies and biases even the exactly unbiased variants), behaviour log-probs seen with "
          f"N(0, tau^2) noise per token ({spec.noise_draws} fixed-seed noise draws per answer). Exact expectation over "
          f"y by enumeration for T <= {max(spec.enum_lengths)}; Monte Carlo ({spec.mc_samples} answers from mu per draw, "
          "analytic grad J) for the factorized policy at T in "
          f"{{{', '.join(map(str, spec.mc_lengths))}}}, with its error `mc_error` (relative RMS error of E g).",
          "- Crossed from the centre cell (tabular, T = "
          f"{spec.centre_length}, no noise, no clip) rather than the full product ({_full_product(spec)} cells): "
          f"KL {list(spec.kls)} x reward x "
          f"policy x T {list(spec.enum_lengths)}; noise tau {list(spec.taus[1:])} x KL {list(spec.noise_kls)} x reward; "
          f"clip {list(spec.clips[1:])} x KL {list(spec.clip_kls)} x reward, and clip x tau {spec.taus[-1]:g} at KL 0; "
          f"Monte Carlo T {list(spec.mc_lengths)} x KL {list(spec.mc_kls)} x reward, plus the Monte Carlo twin of the "
          f"centre cell (KL {spec.centre_kl:g}); KL {spec.issue_kl:g} at T = {spec.centre_length} for the issue's figures.",
          f"- Declared endpoints: cosine (higher is better; smallest effect of interest {spec.margin:g}) and the "
          f"single-answer variance relative to |grad J|^2 (lower is better; {spec.var_margin:.0%}); comparisons with "
          "GSPO (p = 0) paired over the draws (t-test), Holm over the family behind each claim, alpha "
          f"{spec.alpha:g}. Verdicts: better / worse (adjusted p < alpha and the effect at least the margin), "
          "equivalent (95% CI inside the margin), inconclusive otherwise (with the effect detectable at 80% "
          "power); exact identities confirmed / contradicted.", ""]
    L += ["## Findings", "", "| id | verdict | quantity | value | 95% CI | detail |", "|---|---|---|---|---|---|"]
    for f in found:
        L.append(f"| {f.id} | {f.verdict} | {f.quantity} | {f.value:.4g} | {_fmt_ci(f.ci)} | {f.detail} |")
    L += ["", "Typed records in [findings.json](findings.json) (schema version in the file); claims in "
          "[../claims.md](../claims.md) cite them.", ""]
    L += ["## Where each p is best", "",
          f"Highest mean cosine per cell (T = {spec.centre_length}, no noise, no clip; the is-product control excluded; "
          "variants with identical estimates joined by =), the runner-up, the paired difference with its 95% CI and "
          "verdict at the margin, and the variant with the lowest variance.", "",
          "| policy | reward | KL | best | cosine | runner-up | cosine | best - runner-up | verdict | lowest variance |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for b in best:
        L.append(f"| {b['policy']} | {b['reward']} | {b['kl']:g} | {b['best']} | {b['cosine']:.3f} | {b['runner_up']} | "
                 f"{b['runner_cosine']:.3f} | {b['diff']:+.3f} {_fmt_ci(b['ci'])} | {b['verdict']} | "
                 f"{b['lowest_variance']} |")
    L += ["", "## Figures", ""]
    for name in figs:
        L += [f"![{name}](figures/{name})", "", FIGURES[name], ""]
    L += ["## Files", "", "- `summary.csv`: one row per (cell, variant): means and 95% intervals over the draws.",
          "- `findings.json`: the findings as typed records.",
          "- The per-draw rows are kept under the study directory (`studies/estimator/draws.csv`), so that "
          "`hmpo report --no-run` rewrites this report without recomputing.", ""]
    atomic_write_text(out_dir / "README.md", "\n".join(L))
    head = "; ".join(f"{f.id}: {f.verdict}" for f in found if f.verdict != "measured")[:400]
    return {"readme": str(out_dir / "README.md"), "findings": [f.as_dict() for f in found],
            "headline": f"{len(all_rows)} exact estimator evaluations. {head}"}

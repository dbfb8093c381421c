"""Write a study's report: findings in words, PNG figures, CSV tables, machine-readable findings.

``write_study_report(study_dir, out_dir)`` reads the results files of one study (see
rl.studies.runner), runs the statistics of rl.studies.stats and writes into ``out_dir``:

    README.md        findings in words first (what separated from the GSPO baseline, what did
                     not), then the figures, the tables, the method and the provenance
    summary.csv      one row per (condition, variant): means, 95% bootstrap intervals, spread,
                     steps to threshold, collapses, spikes, NaN updates, clip fractions, KL, ...
    runs.csv         one row per run: the per-run scalars every summary is computed from
    comparisons.csv  every variant against the baseline per condition and metric: effect sizes,
                     test, p-value, Holm-adjusted p-value, verdict
    findings.json    the measured claims with verdict suggestions, p-values and the figure
                     that shows each (read by the claims ledger)
    figures/*.png    reward curves with bands, final reward and sample efficiency against p,
                     final reward per variant, clip fractions, sequence-ratio distributions, KL,
                     learned p

``write_index(reports_dir)`` writes reports/README.md linking theory.md, claims.md and every
study folder. Figures use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rl.studies.runner import atomic_write_json, load_results
from rl.studies.spec import VARIANT_NAMES, parse_spec, variant_p
from rl.studies.stats import Analysis, Comparison, analyze, holm, interaction_test

__all__ = ["write_study_report", "write_index", "measured_claims", "FINDINGS_FORMAT"]

FINDINGS_FORMAT = "hmpo-findings/1"

# metric -> how it reads in sentences
_METRIC_WORDS = {
    "final": "final reward",
    "auc": "mean reward over training (area under the curve)",
    "final_spread": "spread of the final reward across seeds",
    "collapsed": "rate of collapsed runs",
    "steps_to_threshold": "steps to reach the threshold",
}


def _name(v: str) -> str:
    return f"{v} ({VARIANT_NAMES[v]})" if v in VARIANT_NAMES else v


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "never" if x > 0 else "-inf"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{x:.{digits}g}"


def _pfmt(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


# ----------------------------------------------------------------------------- figures

def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _colors(variants: Sequence[str]) -> dict[str, Any]:
    plt = _plt()
    ps = sorted({variant_p(v) for v in variants if variant_p(v) is not None})
    cmap = plt.get_cmap("viridis")
    out: dict[str, Any] = {}
    for v in variants:
        p = variant_p(v)
        if p is not None:
            i = ps.index(p)
            out[v] = cmap(0.9 * i / max(1, len(ps) - 1))
    others = [v for v in variants if v not in out]
    tab = plt.get_cmap("tab10")
    for i, v in enumerate(others):
        out[v] = tab((i + 3) % 10)
    return out


def _wrap(text: str, width: int = 48) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def _style(v: str) -> str:
    return "-" if variant_p(v) is not None else "--"


def _grid(n: int):
    plt = _plt()
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _curve_figure(a: Analysis, bands: dict, ylabel: str, path: Path, title: str) -> Path | None:
    cells = [c for c in a.cells if any((c, v) in bands for v in a.variants[c])]
    if not cells:
        return None
    fig, axes = _grid(len(cells))
    for ax, cell in zip(axes, cells):
        colors = _colors(a.variants[cell])
        for v in a.variants[cell]:
            b = bands.get((cell, v))
            if b is None:
                continue
            ax.plot(b["step"], b["mean"], _style(v), color=colors[v], lw=1.4, label=v)
            ok = np.isfinite(b["lo"]) & np.isfinite(b["hi"])
            if ok.any():
                ax.fill_between(b["step"][ok], b["lo"][ok], b["hi"][ok], color=colors[v], alpha=0.15, lw=0)
        ax.set_title(_wrap(_short_cell(a, cell)), fontsize=8)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2 if len(a.variants[cell]) > 4 else 1)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _short_cell(a: Analysis, cell: str) -> str:
    """A condition by what sets it apart: the environment, then every factor whose value differs
    from its most common value across conditions ("-" = not applicable, left out)."""
    factors = a.cell_factors.get(cell, {})
    if len(a.cells) == 1:
        return ", ".join(f"{k}={v}" for k, v in factors.items() if v != "-") or "all runs"
    parts = []
    for k, v in factors.items():
        values = [a.cell_factors[c].get(k) for c in a.cells]
        if len(set(values)) < 2 or v == "-":
            continue
        mode = max(set(values), key=lambda x: (values.count(x), str(x)))
        if k == "env" or v != mode:
            parts.append(f"{k}={v}")
    return ", ".join(parts) or "reference condition"


def _final_vs_p_figure(a: Analysis, path: Path) -> Path | None:
    cells = [c for c in a.cells if sum(variant_p(v) is not None for v in a.variants[c]) >= 2]
    if not cells:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    summ = {(s.cell, s.variant): s for s in a.summaries}
    for i, cell in enumerate(cells):
        vs = sorted((v for v in a.variants[cell] if variant_p(v) is not None), key=variant_p)
        x = np.array([variant_p(v) for v in vs]) + 0.015 * (i - len(cells) / 2)
        for ax, (m, lo, hi) in zip(axes[:2], (("final_mean", "final_lo", "final_hi"), ("auc_mean", "auc_lo", "auc_hi"))):
            mv = np.array([getattr(summ[(cell, v)], m) for v in vs])
            err = np.vstack([np.nan_to_num(mv - [getattr(summ[(cell, v)], lo) for v in vs]),
                             np.nan_to_num(np.array([getattr(summ[(cell, v)], hi) for v in vs]) - mv)])
            ax.errorbar(x, mv, yerr=err, marker="o", ms=4, capsize=2, label=_short_cell(a, cell) if ax is axes[0] else None)
        st = [summ[(cell, v)].steps_to_threshold_median for v in vs]
        cap = max(len(a.curves[(cell, v)]["step"]) for v in vs)
        axes[2].plot(x, [s if math.isfinite(s) else cap for s in st], marker="s", ms=4)
        for xi, s_ in zip(x, st):
            if not math.isfinite(s_):
                axes[2].annotate("never", (xi, cap), fontsize=6, ha="center", va="bottom")
    for ax, label in zip(axes, (f"final {a.metric} (mean, 95% CI)", f"mean {a.metric} over training (95% CI)",
                                "median steps to threshold")):
        for p0 in (0, -1):
            ax.axvline(p0, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("p  (1 arithmetic, 0 GSPO, -1 HMPO)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.legend(loc="lower center", ncol=min(4, len(cells)), fontsize=7, frameon=False)
    fig.suptitle("Final reward, sample efficiency (area under the curve, steps to threshold) against p", fontsize=11)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * ((len(cells) - 1) // 4), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _by_variant_figure(a: Analysis, path: Path, key: str = "final") -> Path | None:
    """Per condition: every run's value (dots) and each variant's mean with its 95% CI.
    key: "final" (final reward) or "auc" (mean reward over training)."""
    if not a.summaries:
        return None
    fig, axes = _grid(len(a.cells))
    summ = {(s.cell, s.variant): s for s in a.summaries}
    runs_by: dict[tuple[str, str], list[float]] = {}
    for r in a.runs:
        runs_by.setdefault((r["cell"], r["variant"]), []).append(r[key])
    for ax, cell in zip(axes, a.cells):
        vs = a.variants[cell]
        colors = _colors(vs)
        for i, v in enumerate(vs):
            s = summ[(cell, v)]
            m, lo, hi = getattr(s, f"{key}_mean"), getattr(s, f"{key}_lo"), getattr(s, f"{key}_hi")
            pts = runs_by.get((cell, v), [])
            ax.scatter([i] * len(pts), pts, s=10, color=colors[v], alpha=0.5)
            ax.errorbar([i], [m], yerr=[[np.nan_to_num(m - lo)], [np.nan_to_num(hi - m)]],
                        fmt="D", color="black", capsize=3, ms=4)
        if a.baseline in vs:
            ax.axhline(getattr(summ[(cell, a.baseline)], f"{key}_mean"), color="grey", ls=":", lw=1)
        ax.set_xticks(range(len(vs)), vs, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel(f"{'final' if key == 'final' else 'mean over training of'} {a.metric}", fontsize=8)
        ax.set_title(_wrap(_short_cell(a, cell)), fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    what = "Final reward" if key == "final" else "Mean reward over training (sample efficiency)"
    fig.suptitle(f"{what} per variant (dots: seeds; diamond: mean with 95% bootstrap CI; dotted: baseline)",
                 fontsize=10)
    return _save(fig, path)


def _clip_figure(a: Analysis, path: Path) -> Path | None:
    if not any(math.isfinite(s.clip_low) or math.isfinite(s.clip_high) for s in a.summaries):
        return None
    fig, axes = _grid(len(a.cells))
    summ = {(s.cell, s.variant): s for s in a.summaries}
    for ax, cell in zip(axes, a.cells):
        vs = a.variants[cell]
        x = np.arange(len(vs))
        low = [summ[(cell, v)].clip_low for v in vs]
        high = [summ[(cell, v)].clip_high for v in vs]
        ax.bar(x - 0.2, np.nan_to_num(low), 0.4, label="low side (ratio < 1 - eps_low)", color="tab:blue")
        ax.bar(x + 0.2, np.nan_to_num(high), 0.4, label="high side (ratio > 1 + eps_high)", color="tab:orange")
        ax.set_xticks(x, vs, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("clip fraction (mean over steps)")
        ax.set_title(_wrap(_short_cell(a, cell)), fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7)
    fig.suptitle("Clip fractions, low and high side", fontsize=11)
    return _save(fig, path)


def _ratio_figure(a: Analysis, path: Path) -> Path | None:
    cells = [c for c in a.cells if any((c, v) in a.ratio_samples for v in a.variants[c])]
    if not cells:
        return None
    fig, axes = _grid(len(cells))
    for ax, cell in zip(axes, cells):
        vs = [v for v in a.variants[cell] if (cell, v) in a.ratio_samples]
        data, labels, pos = [], [], []
        for i, v in enumerate(vs):
            r = a.ratio_samples[(cell, v)]
            for j, key in enumerate(("min", "mean", "max")):
                vals = r.get(key, np.array([]))
                vals = vals[np.isfinite(vals) & (vals > 0)]
                if vals.size:
                    data.append(np.log(vals))
                    pos.append(i * 4 + j)
            labels.append((i * 4 + 1, v))
        if data:
            bp = ax.boxplot(data, positions=pos, widths=0.8, showfliers=False, patch_artist=True)
            for k, patch in enumerate(bp["boxes"]):
                patch.set_facecolor(("tab:blue", "tab:gray", "tab:orange")[pos[k] % 4])
                patch.set_alpha(0.6)
        ax.set_xticks([p for p, _ in labels], [v for _, v in labels], rotation=45, ha="right", fontsize=7)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_ylabel("log sequence ratio per step")
        ax.set_title(_wrap(_short_cell(a, cell) + "  (blue min, grey mean, orange max)"), fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Distribution of the per-step sequence-ratio statistics (log scale)", fontsize=10)
    return _save(fig, path)


def write_figures(a: Analysis, fig_dir: Path) -> dict[str, Path]:
    """All figures that the data support; name -> path."""
    out: dict[str, Path] = {}
    makers = {
        "reward_curves": lambda p: _curve_figure(a, a.curves, a.metric, p,
                                                 f"{a.metric}: mean over seeds with 95% bootstrap band"),
        "final_vs_p": lambda p: _final_vs_p_figure(a, p),
        "final_by_variant": lambda p: _by_variant_figure(a, p, "final"),
        "auc_by_variant": lambda p: _by_variant_figure(a, p, "auc"),
        "clip_fractions": lambda p: _clip_figure(a, p),
        "ratio_distribution": lambda p: _ratio_figure(a, p),
        "kl": lambda p: _curve_figure(a, a.kl_curves, "KL(old || new)", p,
                                      "KL between behaviour and updated policy per step"),
        "learned_p": lambda p: _curve_figure(a, {k: v for k, v in a.p_curves.items()
                                                 if k[1] in ("learnable-p", "adaptive")},
                                             "p", p, "The p in force: learned (learnable-p) or chosen (adaptive)"),
    }
    for name, make in makers.items():
        path = make(fig_dir / f"{name}.png")
        if path is not None:
            out[name] = path
    return out


# ----------------------------------------------------------------------------- tables

def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: _csv_value(r.get(k)) for k in keys})


def _csv_value(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        v = v.item()
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, list):
        return " ".join(str(x) for x in v)
    return v


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- findings

def _cmp_sentence(c: Comparison, metric: str) -> str:
    words = _METRIC_WORDS.get(c.metric, c.metric)
    if c.metric == "steps_to_threshold":
        vals = f"median {_fmt(c.median_x)} vs {_fmt(c.median_y)}"
        eff = f"Cliff's delta {_fmt(c.cliffs_delta, 2)}"
    elif c.metric == "final_spread":
        vals = f"std {_fmt(c.mean_x)} vs {_fmt(c.mean_y)}"
        eff = "Brown-Forsythe"
    elif c.metric == "collapsed":
        vals = f"{_fmt(c.mean_x)} vs {_fmt(c.mean_y)}"
        eff = "Fisher exact"
    else:
        vals = f"{_fmt(c.mean_x)} vs {_fmt(c.mean_y)}"
        eff = f"Hedges' g {_fmt(c.hedges_g, 2)}"
    return (f"{_name(c.variant)} vs {_name(c.baseline)}, {words}: {vals} "
            f"({eff}; {c.test} p = {_pfmt(c.p_value)}, Holm p = {_pfmt(c.p_adjusted)}, n = {c.n_x}/{c.n_y})")


def _cell_findings(a: Analysis, cell: str) -> list[str]:
    out = []
    summ = {s.variant: s for s in a.summaries if s.cell == cell}
    vs = a.variants[cell]
    cs = [c for c in a.comparisons if c.cell == cell]
    label = _short_cell(a, cell)
    finals = {v: summ[v].final_mean for v in vs}
    if len(vs) > 1 and all(c.verdict == "identical" for c in cs if c.metric == "final") and cs:
        out.append(f"- **[{label}]** every variant produced the same final {a.metric} seed for seed "
                   f"({_fmt(next(iter(finals.values())))}): the means cannot differ here (on-policy updates or "
                   "one-token answers, where every p gives the same gradient).")
        return out
    ranked = sorted((v for v in vs if math.isfinite(finals[v])), key=lambda v: -finals[v])
    if ranked:
        best = ranked[0]
        s = summ[best]
        out.append(f"- **[{label}]** highest mean final {a.metric}: {_name(best)} {_fmt(s.final_mean)} "
                   f"[95% CI {_fmt(s.final_lo)}, {_fmt(s.final_hi)}], n = {s.n}"
                   + (f"; baseline {_name(a.baseline)} {_fmt(summ[a.baseline].final_mean)} "
                      f"[{_fmt(summ[a.baseline].final_lo)}, {_fmt(summ[a.baseline].final_hi)}]"
                      if a.baseline in summ and best != a.baseline else "") + ".")
    sep = [c for c in cs if c.verdict in ("better", "worse")]
    for c in sep:
        out.append(f"  - separated: {c.verdict} than the baseline: {_cmp_sentence(c, a.metric)}.")
    primary = [c for c in cs if c.metric in ("final", "auc", "steps_to_threshold", "final_spread", "collapsed")]
    notsep = sorted({c.variant for c in primary if c.verdict == "not separated"}
                    - {c.variant for c in sep})
    if notsep:
        notes = {c.note for c in cs if c.note}
        out.append(f"  - the data do not separate {', '.join(notsep)} from {a.baseline} on final reward, "
                   f"area under the curve, steps to threshold, spread or collapses (Holm-adjusted p > {a.alpha})"
                   + (f"; note: {sorted(notes)[0]}" if notes else "") + ".")
    if a.baseline in summ and not cs:
        out.append("  - no comparisons: fewer than 5 seeds per variant.")
    if vs and not math.isfinite(summ[vs[0]].threshold):
        out.append("  - no variant ended above where its runs started: no sample-efficiency threshold here.")
    coll = [(v, summ[v].collapsed, summ[v].n) for v in vs if summ[v].collapsed]
    if coll:
        out.append("  - collapsed runs: " + ", ".join(f"{v} {k}/{n}" for v, k, n in coll) + ".")
    nan = [(v, summ[v].nan_steps) for v in vs if math.isfinite(summ[v].nan_steps) and summ[v].nan_steps > 0]
    if nan:
        out.append("  - skipped non-finite updates: " + ", ".join(f"{v} {int(k)}" for v, k in nan) + ".")
    return out


def _overall(verdicts: list[str]) -> str:
    vs = [v for v in verdicts if v not in ("too few runs",)]
    if not vs:
        return "not measured"
    if all(v == "identical" for v in vs):
        return "identical"
    better, worse = vs.count("better"), vs.count("worse")
    if better and not worse:
        return "supported"
    if worse and not better:
        return "refuted"
    if better and worse:
        return "mixed"
    return "not separated"


def measured_claims(a: Analysis, figures: dict[str, Path], rel_to: Path) -> list[dict[str, Any]]:
    """Verdict suggestions for the seeds' measured claims, from this study's comparisons.

    Each claim: {"id", "claim", "verdict" (supported | refuted | mixed | not separated |
    identical | not measured), "conditions" (per cell: verdict, p, Holm p, effect), "figure"}.
    "supported"/"refuted" means at least one condition separated in that direction (Holm,
    alpha) and none in the other; "mixed": both directions occur; "not separated": none did.
    """
    def rel(name: str) -> str | None:
        p = figures.get(name)
        if p is None:
            return None
        try:
            return str(Path(p).resolve().relative_to(rel_to.resolve()))
        except ValueError:
            return str(p)

    def claim(cid: str, text: str, variant: str, metrics: Sequence[str], figure: str,
              cells: Sequence[str] | None = None, expect_better: bool = True) -> dict[str, Any] | None:
        cs = [c for c in a.comparisons if c.variant == variant and c.metric in metrics
              and (cells is None or c.cell in cells)]
        if not cs:
            return None
        conds = [{"condition": c.cell, "metric": c.metric, "verdict": c.verdict, "test": c.test,
                  "p_value": _num(c.p_value), "p_adjusted": _num(c.p_adjusted),
                  "variant_value": _num(c.mean_x if c.metric != "steps_to_threshold" else c.median_x),
                  "baseline_value": _num(c.mean_y if c.metric != "steps_to_threshold" else c.median_y),
                  "hedges_g": _num(c.hedges_g), "cliffs_delta": _num(c.cliffs_delta), "n": [c.n_x, c.n_y],
                  **({"note": c.note} if c.note else {})} for c in cs]
        v = _overall([c.verdict for c in cs])
        if not expect_better and v in ("supported", "refuted"):
            v = "refuted" if v == "supported" else "supported"
        return {"id": cid, "claim": text, "study": a.study, "verdict": v, "baseline": a.baseline,
                "variant": variant, "conditions": conds, "figure": rel(figure),
                "alpha": a.alpha, "correction": "Holm within (condition, metric)"}

    out = []
    base = a.baseline
    specs = [
        ("hmpo-more-stable-than-gspo", "HMPO (harmonic, p=-1) trains more stably than GSPO (p=0): smaller spread "
         "across seeds and fewer collapsed runs", "p=-1", ("final_spread", "collapsed"), "final_by_variant", True),
        ("hmpo-sample-efficiency-vs-gspo", "HMPO is more sample-efficient than GSPO (fewer steps to a reward "
         "threshold, higher mean reward over training)", "p=-1", ("steps_to_threshold", "auc"), "auc_by_variant", True),
        ("hmpo-final-reward-vs-gspo", "HMPO reaches a higher final reward than GSPO", "p=-1", ("final",),
         "reward_curves", True),
        ("arithmetic-less-stable-than-gspo", "The arithmetic mean (p=1) is less stable than GSPO "
         "(unequal token weights cause instability)", "p=1", ("final_spread", "collapsed"), "final_by_variant", False),
        ("grpo-token-less-stable-than-gspo", "Token-level GRPO is less stable than GSPO", "grpo-token",
         ("final_spread", "collapsed"), "final_by_variant", False),
        ("adaptive-mean-vs-gspo", "Adaptive mean selection reaches a higher final reward than GSPO", "adaptive",
         ("final",), "final_by_variant", True),
        ("rmi-vs-gspo", "Recursive mean iteration (RMI) reaches a higher final reward than GSPO", "rmi",
         ("final",), "final_by_variant", True),
        ("multiscale-vs-gspo", "Multi-scale means reach a higher final reward than GSPO", "multiscale",
         ("final",), "final_by_variant", True),
        ("learnable-p-vs-gspo", "A learnable p reaches a higher final reward than fixed p=0", "learnable-p",
         ("final",), "learned_p" if "learned_p" in figures else "final_by_variant", True),
    ]
    if base == "p=0":
        for cid, text, v, metrics, fig, better in specs:
            c = claim(cid, text, v, metrics, fig, expect_better=better)
            if c is not None:
                out.append(c)
    # factor effects: does the HMPO-GSPO gap change with a factor, other factors held fixed?
    for factor, cid, text in (("seq_len", "sequence-length-effect",
                               "The effect of the mean (p=-1 vs p=0) depends on sequence length"),
                              ("off_policy", "off-policy-degree-effect",
                               "The effect of the mean (p=-1 vs p=0) depends on the off-policy degree "
                               "(epochs x minibatches)"),
                              ("policy_lag", "policy-lag-effect",
                               "The effect of the mean (p=-1 vs p=0) depends on the policy lag"),
                              ("clip", "clip-window-effect",
                               "The effect of the mean (p=-1 vs p=0) depends on the clip window"),
                              ("reward_noise", "reward-noise-robustness",
                               "The effect of the mean (p=-1 vs p=0) depends on reward noise "
                               "(HMPO claimed robust to noisy rewards)")):
        groups: dict[tuple, dict[str, str]] = {}
        for cell in a.cells:
            f = a.cell_factors.get(cell, {})
            if factor not in f:
                continue
            key = tuple(sorted((k, v) for k, v in f.items() if k != factor))
            groups.setdefault(key, {})[f[factor]] = cell
        for key, levels in groups.items():
            if len(levels) < 2:
                continue
            per_level, diffs = {}, {}
            for lvl, cell in levels.items():
                cs = [c for c in a.comparisons if c.cell == cell and c.variant == "p=-1" and c.metric in ("final", "auc")]
                if not cs:
                    continue
                hm = {r["seed"]: r["auc"] for r in a.runs if r["cell"] == cell and r["variant"] == "p=-1"}
                gs = {r["seed"]: r["auc"] for r in a.runs if r["cell"] == cell and r["variant"] == base}
                d = [hm[k] - gs[k] for k in sorted(set(hm) & set(gs))]
                diffs[lvl] = d
                per_level[lvl] = {"condition": cell, "verdict": _overall([c.verdict for c in cs]),
                                  "auc_diff_mean": _num(float(np.mean(d))) if d else None,
                                  "metrics": {c.metric: {"diff": _num(c.diff), "p_adjusted": _num(c.p_adjusted),
                                                         "verdict": c.verdict} for c in cs}}
            if len(diffs) < 2:
                continue
            test, pval = interaction_test(diffs)
            if test == "identical":
                v = "identical"
            elif not math.isfinite(pval):
                v = "not measured"
            else:
                v = "supported" if pval <= a.alpha else "not separated"
            held = ", ".join(f"{k}={val}" for k, val in key
                             if val != "-" and len({a.cell_factors[c].get(k) for c in a.cells}) > 1)
            out.append({"id": cid, "claim": text, "study": a.study, "verdict": v, "factor": factor,
                        "held_fixed": held, "levels": per_level, "interaction_test": test,
                        "p_value": _num(pval), "figure": rel("reward_curves"),
                        "rule": "per-seed difference in mean reward over training (area under the curve) of "
                                "p=-1 minus p=0 at each level of the factor, other factors held fixed; "
                                "supported when these differences differ between levels (permutation test "
                                "for 2 levels, Kruskal-Wallis for more; alpha), not separated otherwise. "
                                "Each level's own p=-1 vs p=0 verdict is listed.",
                        "alpha": a.alpha})
    # clipping: the window bites on the low side more as p decreases (log M_p ~ mean + p Var/2)
    conds = []
    for cell in a.cells:
        rs = [r for r in a.runs if r["cell"] == cell and variant_p(r["variant"]) is not None
              and math.isfinite(r.get("clip_low", float("nan"))) and math.isfinite(r.get("clip_high", float("nan")))]
        if len({variant_p(r["variant"]) for r in rs}) < 3:
            continue
        x = np.array([variant_p(r["variant"]) for r in rs])
        y = np.array([r["clip_low"] - r["clip_high"] for r in rs])
        if np.ptp(y) == 0:
            continue
        from scipy.stats import spearmanr

        res = spearmanr(x, y)
        conds.append({"condition": cell, "spearman_rho": _num(float(res.statistic)), "p_value": _num(float(res.pvalue)),
                      "n_runs": len(rs)})
    if conds:
        adj = holm([c["p_value"] if isinstance(c["p_value"], float) else float("nan") for c in conds])
        for c, pa in zip(conds, adj):
            c["p_adjusted"] = _num(float(pa))
        sig = [c for c in conds if isinstance(c["p_adjusted"], float) and c["p_adjusted"] <= a.alpha]
        neg = [c for c in sig if c["spearman_rho"] < 0]
        v = ("supported" if neg and len(neg) == len(sig) else "refuted" if sig and not neg else
             "mixed" if sig else "not separated")
        out.append({"id": "clip-side-shift-with-p", "study": a.study, "verdict": v,
                    "claim": "With a plain window [1-eps, 1+eps], lower p clips more on the low side and less on the "
                             "high side (the sequence ratio is about exp(mean + p Var/2))",
                    "conditions": conds, "figure": rel("clip_fractions"), "alpha": a.alpha,
                    "rule": "Spearman correlation over runs between p and (low - high clip fraction), power-mean "
                            "variants only, per condition; Holm across conditions; supported when every separated "
                            "condition has a negative correlation"})
    # learnable p: where p goes
    lp = [s for s in a.summaries if s.variant == "learnable-p" and math.isfinite(s.final_p_mean)]
    if lp:
        out.append({"id": "learnable-p-where-it-goes", "claim": "Where a learnable p drives itself",
                    "study": a.study, "verdict": "measured",
                    "conditions": [{"condition": s.cell, "final_p_mean": s.final_p_mean, "n": s.n} for s in lp],
                    "figure": rel("learned_p")})
    # cost of the means
    cost = [s for s in a.summaries if math.isfinite(s.sec_per_step)]
    base_cost = {s.cell: s.sec_per_step for s in cost if s.variant == base}
    if cost and base_cost:
        out.append({"id": "cost-of-the-means", "claim": "Cost per training step of each mean relative to GSPO",
                    "study": a.study, "verdict": "measured",
                    "conditions": [{"condition": s.cell, "variant": s.variant, "sec_per_step": s.sec_per_step,
                                    "ratio_to_baseline": s.sec_per_step / base_cost[s.cell]}
                                   for s in cost if s.cell in base_cost and base_cost[s.cell] > 0],
                    "figure": None,
                    "note": "median wall-clock seconds per training step (the trainer's time_s), one thread per "
                            "run; whole steps on a possibly shared machine, so differences of tens of percent can "
                            "be load; the cost of the loss alone is measured by the benchmarks in benchmarks/"})
    return out


def _num(x: Any) -> Any:
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isnan(x):
            return None
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
    return x


# ----------------------------------------------------------------------------- the study report

def write_study_report(study_dir: str | Path, out_dir: str | Path, *, alpha: float = 0.05,
                       command: str | None = None) -> dict[str, Any]:
    """Analyse the study in ``study_dir`` and write its report into ``out_dir``.

    Returns {"readme", "findings", "figures", "summary_csv", "runs_csv", "comparisons_csv",
    "headline", "n_runs", "n_failed"}. ValueError if the directory holds no study.
    """
    study_dir, out_dir = Path(study_dir), Path(out_dir)
    mpath = study_dir / "manifest.json"
    if not mpath.exists():
        raise ValueError(f"{study_dir} holds no study (no manifest.json); run `hmpo study` first")
    manifest = json.loads(mpath.read_text())
    spec = parse_spec(manifest["spec"])
    planned = spec.runs()
    recs_all = load_results(study_dir)
    records = [recs_all[r.run_id] for r in planned
               if r.run_id in recs_all and recs_all[r.run_id].get("config_hash") == r.config_hash]
    if not records:
        raise ValueError(f"{study_dir}: no finished runs yet")
    metric = spec.metric
    metric_key = {"reward_mean": "reward"}.get(metric, metric)
    a = analyze(records, study=spec.name, metric=metric_key, baseline=spec.baseline if spec.compare else None,
                threshold=spec.threshold, alpha=alpha)
    fig_dir = out_dir / "figures"
    figures = write_figures(a, fig_dir)

    summary_rows = [s.as_dict() for s in a.summaries]
    _write_csv(out_dir / "summary.csv", summary_rows)
    _write_csv(out_dir / "runs.csv", a.runs)
    _write_csv(out_dir / "comparisons.csv", [c.as_dict() for c in a.comparisons])
    claims = measured_claims(a, figures, rel_to=out_dir)
    inv = manifest.get("invocations", [])
    prov = inv[-1] if inv else {}
    findings = {
        "format": FINDINGS_FORMAT,
        "study": spec.name,
        "description": spec.description,
        "metric": metric,
        "baseline": spec.baseline,
        "alpha": alpha,
        "n_runs": len(records),
        "n_planned": len(planned),
        "failed": a.failed,
        "git": prov.get("git"),
        "claims": claims,
        "figures": {k: str(Path(v).relative_to(out_dir)) for k, v in figures.items()},
    }
    atomic_write_json(out_dir / "findings.json", findings)

    # ---- README: findings in words first
    lines = [f"# Study `{spec.name}`", ""]
    if spec.description:
        lines += [spec.description, ""]
    lines += [f"{len(records)} of {len(planned)} planned runs finished"
              + (f", {len(a.failed)} failed ({', '.join(a.failed[:5])}{'...' if len(a.failed) > 5 else ''})"
                 if a.failed else "") + f"; metric `{metric}`; baseline {_name(spec.baseline) if spec.baseline else 'none'}.",
              "", "## Findings", ""]
    for cell in a.cells:
        lines += _cell_findings(a, cell)
    if claims:
        lines += ["", "### Measured claims (verdict suggestions for the claims ledger)", "",
                  _md_table(["claim", "verdict", "evidence"],
                            [[c["claim"], f"**{c['verdict']}**", _claim_evidence(c)] for c in claims]),
                  "", "Verdicts: *supported*/*refuted* = separated from the baseline in at least one condition "
                  f"(Holm-adjusted p <= {alpha}) in that direction and in none the other way; *mixed* = both; "
                  "*not separated* = the data do not separate the variants; *identical* = the runs coincide.", ""]
    lines += ["", "## Figures", ""]
    captions = {
        "reward_curves": f"Mean {metric} per step over seeds with a 95% percentile-bootstrap band, per condition.",
        "final_vs_p": "Final reward, mean reward over training (both with 95% CI) and median steps to the "
                      "threshold against p, one line per condition.",
        "final_by_variant": "Final reward of every run (dots) and the variant mean with its 95% CI.",
        "auc_by_variant": "Mean reward over training (area under the curve, a sample-efficiency measure) of every "
                          "run and the variant mean with its 95% CI.",
        "clip_fractions": "Fraction of clipped ratios, low and high side, averaged over steps and seeds.",
        "ratio_distribution": "Per-step minimum, mean and maximum sequence ratio (log), pooled over seeds.",
        "kl": "KL between the behaviour policy and the updated policy, per step (mean and band).",
        "learned_p": "The exponent p in force per step: trained by gradient (learnable-p) or chosen each step "
                     "from the ratio spread (adaptive); mean over seeds with a 95% band.",
    }
    for name, path in figures.items():
        rel = Path(path).relative_to(out_dir)
        lines += [f"![{name}]({rel})", "", f"*{captions.get(name, name)}*", ""]
    lines += ["## Conditions", "", "Each condition is named by what sets it apart from the most common settings; "
              "the full settings:", "",
              _md_table(["condition", "settings", "variants", "runs"],
                        [[_short_cell(a, c), ", ".join(f"{k}={v}" for k, v in a.cell_factors[c].items() if v != "-"),
                          ", ".join(a.variants[c]), str(sum(s.n for s in a.summaries if s.cell == c))]
                         for c in a.cells]), ""]
    lines += ["## Summary table", "",
              _md_table(["condition", "variant", "n", "final [95% CI]", "std", "steps to thr. (reached)",
                         "collapsed", "NaN upd.", "clip low/high", "KL (median)", "s/step"],
                        [[_short_cell(a, s.cell), s.variant, str(s.n),
                          f"{_fmt(s.final_mean)} [{_fmt(s.final_lo)}, {_fmt(s.final_hi)}]", _fmt(s.final_std),
                          (f"{_fmt(s.steps_to_threshold_median)} ({s.reached}/{s.n})" if math.isfinite(s.threshold)
                           else "n/a (no threshold)"), str(s.collapsed),
                          _fmt(s.nan_steps), f"{_fmt(s.clip_low, 2)}/{_fmt(s.clip_high, 2)}", _fmt(s.kl, 2),
                          _fmt(s.sec_per_step, 2)] for s in a.summaries]),
              "", "Full tables: [summary.csv](summary.csv), [runs.csv](runs.csv), "
              "[comparisons.csv](comparisons.csv); verdicts: [findings.json](findings.json).", ""]
    sep = [c for c in a.comparisons if c.verdict in ("better", "worse")]
    if sep:
        lines += ["## Separated comparisons", "",
                  _md_table(["condition", "variant", "metric", "variant", "baseline", "effect", "test", "p", "Holm p", "verdict"],
                            [[_short_cell(a, c.cell), c.variant, c.metric, _fmt(c.mean_x), _fmt(c.mean_y),
                              _fmt(c.hedges_g if math.isfinite(c.hedges_g) else c.cliffs_delta, 2), c.test,
                              _pfmt(c.p_value), _pfmt(c.p_adjusted), c.verdict] for c in sep]), ""]
    lines += ["## Method", "",
              f"- Per run: final value = mean of the last 10% of steps (at least 3); area under the curve = mean "
              f"over all steps; steps to threshold = first step where the 5-step trailing mean reaches the "
              f"threshold ({'given: ' + _fmt(spec.threshold) if spec.threshold is not None else 'per condition: 80% of the way from the mean start (first 3 steps) to the best variant mean final value; none if no variant ends above the start'}); "
              "collapsed = the 5-step mean ended at least max(0.1, half the run's gain) below its best, or the run "
              "ended non-finite; grad-norm spike = a step "
              "above 10 x the run's median norm; NaN updates = updates skipped by the trainer's non-finite guard.",
              "- Across seeds: mean with a 95% percentile bootstrap interval (2000 resamples, fixed seed); with "
              "5 seeds such intervals are rough.",
              f"- Against the baseline {spec.baseline}: exact permutation test of the mean difference (final, "
              "area), Mann-Whitney U (steps to threshold, censored at the budget), Brown-Forsythe (spread), "
              "Fisher's exact test (collapses); effect sizes Hedges' g and Cliff's delta; Holm's correction "
              f"within each condition and metric; alpha = {alpha}. With 5 vs 5 runs the smallest exact "
              "permutation p-value is 2/252 = 0.008, so at most about 6 comparisons per family can separate.",
              "", "## Reproduce", "", "```bash", command or f"hmpo study {spec.name} --out {study_dir}", "```", "",
              "Same seeds, same numbers: every run is deterministic on CPU with one thread per run.", "",
              "## Provenance", ""]
    git = prov.get("git") or {}
    lines += [f"- git commit: `{git.get('commit')}`" + (" (with uncommitted changes)" if git.get("dirty") else ""),
              f"- packages: {', '.join(f'{k} {v}' for k, v in (prov.get('packages') or {}).items())}",
              f"- python {prov.get('python')}, {prov.get('platform')}, executor {prov.get('executor')}",
              f"- manifest: `{mpath}` (config hash of every run)", ""]
    (out_dir / "README.md").write_text("\n".join(lines))
    headline = next((ln for ln in lines if ln.startswith("- **[")), "")
    return {"readme": out_dir / "README.md", "findings": out_dir / "findings.json", "figures": figures,
            "summary_csv": out_dir / "summary.csv", "runs_csv": out_dir / "runs.csv",
            "comparisons_csv": out_dir / "comparisons.csv", "headline": headline,
            "n_runs": len(records), "n_failed": len(a.failed), "claims": claims}


def _claim_evidence(c: dict[str, Any]) -> str:
    fig = f"[figure]({c['figure']})" if c.get("figure") else ""
    if "conditions" in c and c["conditions"] and "p_adjusted" in c["conditions"][0]:
        ps = [d["p_adjusted"] for d in c["conditions"] if isinstance(d.get("p_adjusted"), float)]
        best = f"min Holm p {_pfmt(min(ps))}" if ps else ""
        return f"{len(c['conditions'])} condition(s); {best} {fig}".strip()
    if "levels" in c:
        lv = "; ".join(f"{k}: {v['verdict']} (AUC diff {_fmt(v.get('auc_diff_mean'), 2)})" for k, v in c["levels"].items())
        return f"{c['factor']} levels {lv}; {c.get('interaction_test')} p = {_pfmt(c.get('p_value'))} {fig}"
    return fig or "see table"


# ----------------------------------------------------------------------------- the index

def write_index(reports_dir: str | Path, studies: dict[str, dict[str, Any]] | None = None,
                theory: dict[str, Any] | None = None) -> Path:
    """reports/README.md: links theory.md, claims.md and each study folder (with its headline)."""
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# HMPO reports", "",
             "Generated by `hmpo report`: the theory checked, the claims ledger, and the convergence studies.", ""]
    lines += ["## Theory and claims", ""]
    for fname, what in (("theory.md", "derivations of the power-mean theorems, checked against the code"),
                        ("claims.md", "every claim of the seed documents with its verdict and evidence")):
        if (reports_dir / fname).exists():
            lines.append(f"- [{fname}]({fname}): {what}")
        else:
            lines.append(f"- {fname}: not generated in this run ({what}; needs the proofs package)")
    if theory:
        lines.append(f"- theory check: {theory.get('summary', '')}")
    lines += ["", "## Studies", ""]
    found = sorted(p.parent.name for p in reports_dir.glob("*/README.md"))
    studies = studies or {}
    for name in found:
        info = studies.get(name, {})
        f = reports_dir / name / "findings.json"
        verdicts = ""
        if f.exists():
            try:
                fj = json.loads(f.read_text())
                cl = [c for c in fj.get("claims", []) if c.get("verdict") not in ("measured",)]
                if cl:
                    verdicts = "; ".join(f"{c['id']}: {c['verdict']}" for c in cl[:4])
                n = fj.get("n_runs")
                verdicts = (f"{n} runs. " if n else "") + verdicts
            except (OSError, json.JSONDecodeError):
                pass
        lines.append(f"- [{name}]({name}/README.md): {verdicts or info.get('headline', '')}")
    if not found:
        lines.append("- none yet: run `hmpo report`")
    lines.append("")
    path = reports_dir / "README.md"
    path.write_text("\n".join(lines))
    return path


# ----------------------------------------------------------------------------- the claims ledger

# The claims ledger (proofs.claims) names its study evidence "study: <name>"; these are the
# measured claims of findings.json that answer each of those names.
LEDGER_STUDIES: dict[str, tuple[str, ...]] = {
    "stability": ("hmpo-more-stable-than-gspo", "arithmetic-less-stable-than-gspo", "grpo-token-less-stable-than-gspo"),
    "sample-efficiency": ("hmpo-sample-efficiency-vs-gspo",),
    "mean-sweep": ("hmpo-final-reward-vs-gspo", "hmpo-sample-efficiency-vs-gspo", "arithmetic-less-stable-than-gspo"),
    "off-policy-degree": ("off-policy-degree-effect", "policy-lag-effect"),
    "sequence-length": ("sequence-length-effect",),
    "adaptive-mean": ("adaptive-mean-vs-gspo",),
    "learnable-p": ("learnable-p-vs-gspo", "learnable-p-where-it-goes"),
    "multiscale": ("multiscale-vs-gspo",),
    "cost-of-means": ("cost-of-the-means",),
    "clipping": ("clip-side-shift-with-p", "clip-window-effect"),
    "reward-noise": ("reward-noise-robustness",),
}


def _parse_condition(cond: str) -> dict[str, str]:
    out = {}
    for part in str(cond).split(", "):
        k, _, v = part.partition("=")
        out[k] = v
    return out


def _varying(conds: Sequence[dict[str, Any]]) -> dict[str, str | None]:
    """Condition keys whose value differs across ``conds`` (the only ones worth naming), each
    with its most common value (the grid's reference level)."""
    from collections import Counter

    parsed = [_parse_condition(d.get("condition", "")) for d in conds]
    keys = sorted({k for p in parsed for k in p})
    out: dict[str, str | None] = {}
    for k in keys:
        top = Counter(p.get(k) for p in parsed).most_common(2)
        if len(top) > 1:  # a tie has no reference level: always name that factor
            out[k] = top[0][0] if top[0][1] > top[1][1] else None
    return out


def _label(cond: str, keys: dict[str, str | None]) -> str:
    """The factors where ``cond`` leaves the reference level; "the reference condition" if none."""
    parsed = _parse_condition(cond)
    off = [f"{k}={parsed[k]}" for k, ref in keys.items() if k in parsed and parsed[k] != ref]
    return ", ".join(off) if off else ("the reference condition" if keys else "")


def _float(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _effect(d: dict[str, Any]) -> str:
    """The effect size of one comparison, in the measure its test uses."""
    m, vx, vy = d.get("metric"), _float(d.get("variant_value")), _float(d.get("baseline_value"))
    if m == "final_spread":
        return f"spread (std) {_fmt(vx)} vs {_fmt(vy)}" + (f", ratio {_fmt(vx / vy, 2)}" if vx is not None and vy else "")
    if m == "collapsed":
        return f"collapse rate {_fmt(vx, 2)} vs {_fmt(vy, 2)}"
    if m == "steps_to_threshold":
        return f"median steps {_fmt(vx)} vs {_fmt(vy)}, Cliff's delta {_fmt(_float(d.get('cliffs_delta')), 2)}"
    return f"{_fmt(vx)} vs {_fmt(vy)}, Hedges' g {_fmt(_float(d.get('hedges_g')), 2)}"


def _finding_summary(c: dict[str, Any]) -> tuple[str, list[float], str]:
    """(one-line summary, the p-values it quotes, the effect size) of one finding of findings.json."""
    conds = c.get("conditions") or []
    base = c.get("baseline", "the baseline")
    if c.get("levels"):
        lv = c["levels"]
        # a level's verdict is that of "p=-1 beats p=0" there: say which way it went
        words = {"supported": "p=-1 better", "refuted": "p=-1 worse"}
        eff = "; ".join(f"{k}: {_fmt(_float(v.get('auc_diff_mean')), 2)} ({words.get(v.get('verdict'), v.get('verdict'))})"
                        for k, v in lv.items())
        p = _float(c.get("p_value"))
        held = f"; held fixed: {c['held_fixed']}" if c.get("held_fixed") else ""
        return (f"{c.get('interaction_test')} test across {c.get('factor')} levels, p = {_pfmt(p)}; per-seed AUC "
                f"difference p=-1 minus p=0 by level: {eff}{held}"), [p] if p is not None else [], eff
    if conds and "p_adjusted" in conds[0] and "metric" in conds[0]:
        keys = _varying(conds)
        sep = [d for d in conds if d.get("verdict") in ("better", "worse")]
        if all(d.get("verdict") == "identical" for d in conds):
            return f"all {len(conds)} comparisons identical seed for seed", [], "none (identical)"
        tested = [d for d in conds if _float(d.get("p_adjusted")) is not None and d.get("verdict") != "identical"]
        pool = sep or tested
        if not pool:
            return f"{len(conds)} comparisons, none tested", [], "n/a"
        key = min(pool, key=lambda d: _float(d.get("p_adjusted")))
        nb = sum(d["verdict"] == "better" for d in sep)
        where = _label(key.get("condition", ""), keys)
        eff = _effect(key)
        ps = [x for x in (_float(key.get("p_adjusted")), _float(key.get("p_value"))) if x is not None]
        return (f"{len(sep)} of {len(conds)} comparisons with {base} separated"
                + (f" ({nb} better, {len(sep) - nb} worse)" if sep else "") + "; "
                f"{'strongest' if sep else 'smallest'}: {key.get('metric')}"
                + (f" at {where}" if where else "")
                + f", Holm p = {_pfmt(_float(key.get('p_adjusted')))} ({key.get('test')}, raw p = "
                f"{_pfmt(_float(key.get('p_value')))}, n = {'/'.join(str(n) for n in key.get('n', []))}), {eff}"), ps, eff
    if conds and "spearman_rho" in conds[0]:
        keys = _varying(conds)
        sig = [d for d in conds if (_float(d.get("p_adjusted")) or 1.0) <= float(c.get("alpha", 0.05))]
        rhos = [_float(d.get("spearman_rho")) for d in sig]
        rhos = [r for r in rhos if r is not None]
        ps = [_float(d.get("p_adjusted")) for d in sig]
        eff = (f"Spearman rho {_fmt(min(rhos), 2)} to {_fmt(max(rhos), 2)}" if rhos else "no separated condition")
        return (f"{len(sig)} of {len(conds)} conditions separated (Holm); {eff}"
                + (f" (conditions differ in {', '.join(keys)})" if keys else "")), [p for p in ps if p is not None], eff
    if conds and "final_p_mean" in conds[0]:
        eff = "; ".join(f"final p mean {_fmt(_float(d.get('final_p_mean')))} (n = {d.get('n')})" for d in conds)
        return f"learned p: {eff}", [], eff
    if conds and "ratio_to_baseline" in conds[0]:
        by_v: dict[str, list[float]] = {}
        for d in conds:
            r = _float(d.get("ratio_to_baseline"))
            if r is not None and d.get("variant") != c.get("baseline", "p=0"):
                by_v.setdefault(str(d.get("variant")), []).append(r)
        eff = ", ".join(f"{v} {_fmt(min(r), 2)}" + (f"-{_fmt(max(r), 2)}" if len(r) > 1 else "")
                        for v, r in by_v.items())
        note = f" ({c['note']})" if c.get("note") else ""
        return (f"seconds per training step relative to p=0 over {len({d.get('condition') for d in conds})} "
                f"condition(s): {eff}; no test{note}"), [], eff
    return "see the study report", [], "n/a"


def ledger_evidence(findings: dict[str, dict[str, Any]], reports_dir: str | Path = "reports") -> dict[str, dict[str, Any]]:
    """Ledger study name -> its evidence, from the studies' findings.json contents
    (``findings``: study name -> parsed findings.json), for ``proofs.run_all(studies=...)``.

    Each value: ``{"findings": [entry, ...], "verdict", "claims", "figures", "reports_dir"}``.
    An entry is one finding of one study: ``{"id", "study", "claim", "verdict" (the finding's:
    supported | refuted | mixed | not separated | identical | measured), "figure" (relative to
    ``reports_dir``, or None), "link" (the figure, else the study's README.md), "p_values"
    (the ones the summary quotes), "effect", "summary"}``. ``verdict`` is that of the first
    finding found (the primary one), ``figures`` every figure. Findings whose verdict is "not
    measured" are left out, and so are ledger studies with none (they stay open).
    """
    out: dict[str, dict[str, Any]] = {}
    for ledger_name, ids in LEDGER_STUDIES.items():
        found = []
        for cid in ids:
            for study, fj in findings.items():
                for c in fj.get("claims", []):
                    if c.get("id") == cid and c.get("verdict") not in (None, "not measured"):
                        fig = c.get("figure")
                        summary, ps, eff = _finding_summary(c)
                        found.append({"id": cid, "study": study, "verdict": c["verdict"], "claim": c.get("claim"),
                                      "figure": f"{study}/{fig}" if fig else None,
                                      "link": f"{study}/{fig}" if fig else f"{study}/README.md",
                                      "p_values": ps, "effect": eff, "summary": summary})
        if found:
            out[ledger_name] = {"verdict": found[0]["verdict"], "findings": found, "claims": found,
                                "figures": [f["figure"] for f in found if f["figure"]],
                                "reports_dir": str(reports_dir)}
    return out

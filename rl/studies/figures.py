"""A study's figures, drawn from an Analysis (rl.studies.analysis); matplotlib's Agg backend.

Conventions every figure follows: panels that are compared share their y-axis; the power
means are told apart by a diverging palette centred on p = 0 (GSPO in black, p > 0 red,
p < 0 blue, darker further from 0) and by markers; every estimate carries its 95% interval;
axes say what a step is (one batch of samples, E x M optimizer updates) and what a KL is
measured in (nats per token).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rl.studies.analysis import Analysis, Cell, bands
from rl.studies.plan import matches
from rl.studies.spec import variant_p

__all__ = ["write_figures", "variant_style", "short_label", "FIGURE_CAPTIONS"]

_MARKERS = "os^vD<>phX*P"
_NAMED_COLORS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#ff7f0e"]
_VERDICT_COLORS = {"better": "#1a9850", "worse": "#d73027", "equivalent": "#4d4d4d", "inconclusive": "#fdae61",
                   "identical": "#92c5de", "optimum": "#1a9850", "increasing": "#542788", "decreasing": "#b35806",
                   "flat": "#4d4d4d"}

FIGURE_CAPTIONS = {
    "curves": "The study's metric against the samples consumed, mean over seeds with a 95% bootstrap band, one "
              "panel per condition (shared y-axis). Each step consumes one batch and makes E x M optimizer updates.",
    "differences": "Every variant against the baseline, per condition: the mean per-seed difference with its 95% "
                   "bootstrap-t interval; the grey band is the declared margin (differences inside it are too small "
                   "to matter). Colour = verdict after Holm's correction.",
    "sweep": "Each endpoint against p (plain power means), mean over seeds with its 95% interval, one line per "
             "condition.",
    "clip_fractions": "Fraction of clipped sequence ratios on the low and the high side (mean of the run means, 95% "
                      "interval over seeds), per condition (shared y-axis).",
    "kl": "KL between the behaviour and the updated policy after each step (k3 estimate, nats per token), mean over "
          "seeds with a 95% band (shared log y-axis).",
    "ess": "Token-weight effective sample size (1 = uniform weights: every mean gives nearly the same gradient), "
           "mean of the run means with its 95% interval, per condition and variant.",
    "learned_p": "The exponent p in force at each step: trained by gradient (learnable-p) or chosen from the ratio "
                 "spread (adaptive); mean over seeds with a 95% band.",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def variant_style(variants: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Colour, marker and line style per variant: the diverging palette for power means (p = 0 black),
    distinct colours and dashed lines for the named variants."""
    plt = _plt()
    ps = [variant_p(v) for v in variants if variant_p(v) is not None]
    top = max([abs(p) for p in ps] + [1e-12])
    cmap = plt.get_cmap("RdBu_r")
    out: dict[str, dict[str, Any]] = {}
    named = 0
    for i, v in enumerate(variants):
        p = variant_p(v)
        if p is None:
            color, ls = _NAMED_COLORS[named % len(_NAMED_COLORS)], "--"
            named += 1
        elif p == 0:
            color, ls = "black", "-"
        else:
            # away from the palette's pale centre and its near-black ends, so that every p is visible
            t = 0.5 + math.copysign(0.25 + 0.2 * abs(p) / top, p)
            color, ls = cmap(t), "-"
        out[v] = {"color": color, "marker": _MARKERS[i % len(_MARKERS)], "ls": ls}
    return out


def short_label(a: Analysis, cell: str) -> str:
    """The condition's short label (rl.studies.analysis.short_labels)."""
    return a.data.cell(cell).short


def _wrap(text: str, width: int = 46) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _grid(n: int, *, sharey: bool, width: float = 5.0, height: float = 3.6):
    plt = _plt()
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, sharey=sharey)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _step_note(a: Analysis, cell: Cell) -> str:
    """What one step is in this condition: samples per batch and optimizer updates."""
    rs = next(iter(next(iter(a.data.records[cell.label].values())).values()))
    cfg = rs[0].get("config", {})
    batch = cfg.get("prompts_per_step", 0) * cfg.get("group_size", 0)
    updates = cfg.get("epochs", 1) * cfg.get("minibatches", 1)
    return f"1 step = {batch} samples, {updates} update{'s' if updates != 1 else ''}" if batch else ""


def _curves(a: Analysis, column: str, ylabel: str, path: Path, title: str, *, logy: bool = False,
            only: Sequence[str] | None = None) -> Path | None:
    b = bands(a.data, column)
    if only is not None:
        b = {k: v for k, v in b.items() if k[1] in only}
    cells = [c for c in a.data.cells if any((c.label, v) in b for v in c.variants)]
    if not cells:
        return None
    fig, axes = _grid(len(cells), sharey=True)
    for ax, cell in zip(axes, cells):
        style = variant_style(cell.variants)
        for v in cell.variants:
            band = b.get((cell.label, v))
            if band is None:
                continue
            st = style[v]
            x = band["x"]
            ax.plot(x, band["mean"], st["ls"], color=st["color"], marker=st["marker"], ms=3.5, lw=1.3,
                    markevery=max(1, len(x) // 8), label=v)
            ok = np.isfinite(band["lo"]) & np.isfinite(band["hi"])
            if logy:
                ok &= (band["lo"] > 0)
            if ok.any():
                ax.fill_between(x[ok], band["lo"][ok], band["hi"][ok], color=st["color"], alpha=0.15, lw=0)
        if logy:
            ax.set_yscale("log")
            ax.set_ylim(bottom=1e-5)  # saturated runs stop updating: KL ~ 0 there carries no information
        note = _step_note(a, cell)
        ax.set_title(_wrap(short_label(a, cell.label) + (f"  ({note})" if note else "")), fontsize=8)
        ax.set_xlabel("samples consumed")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2 if len(cell.variants) > 4 else 1)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _differences(a: Analysis, path: Path) -> Path | None:
    """Forest plot of the exploratory comparisons, one panel per outcome endpoint."""
    tests = [t for t in a.exploratory if t.verdict != "descriptive"]
    eps = [e for e in a.data.spec.plan.endpoints if any(t.endpoint == e for t in tests)]
    if not eps:
        return None
    plt = _plt()
    rows = list(dict.fromkeys((t.cell, t.variant) for t in tests))
    fig, axes = plt.subplots(1, len(eps), figsize=(3.3 * len(eps) + 2.6, 0.27 * len(rows) + 1.7), squeeze=False,
                             sharey=True)
    y_of = {r: len(rows) - 1 - i for i, r in enumerate(rows)}
    for ax, e in zip(axes[0], eps):
        ep = a.data.spec.plan.endpoints[e]
        for t in (t for t in tests if t.endpoint == e):
            scale = abs(t.baseline_mean) if ep.relative and t.baseline_mean else 1.0
            est, lo, hi = t.estimate / scale, t.ci_low / scale, t.ci_high / scale
            xerr = [[max(0.0, est - lo)], [max(0.0, hi - est)]] if math.isfinite(lo) and math.isfinite(hi) else None
            ax.errorbar([est], [y_of[(t.cell, t.variant)]], xerr=xerr, fmt="o", color=_VERDICT_COLORS.get(t.verdict, "k"),
                        ms=4, capsize=2, lw=1.2)
        ax.axvspan(-ep.margin, ep.margin, color="0.88", zorder=0)
        ax.axvline(0, color="0.4", lw=0.8)
        ax.set_xlabel(f"{'relative difference' if ep.relative else 'difference'}\n"
                      f"({'higher' if ep.higher_is_better else 'lower'} is better)", fontsize=8)
        ax.set_title(f"{e}: margin ±{ep.margin:.0%}" if ep.relative else f"{e}: margin ±{ep.margin:g}", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
        ax.tick_params(axis="x", labelsize=7)
    axes[0][0].set_yticks([y_of[r] for r in rows], [f"{v}  |  {short_label(a, c)}" for c, v in rows], fontsize=7)
    axes[0][0].set_ylim(-0.8, len(rows) - 0.2)
    from matplotlib.lines import Line2D

    used = sorted({t.verdict for t in tests}, key=list(_VERDICT_COLORS).index)
    fig.legend([Line2D([], [], marker="o", ls="", color=_VERDICT_COLORS[v]) for v in used], used, loc="lower center",
               ncol=len(used), fontsize=8, frameon=False)
    fig.suptitle(f"Each variant minus {a.data.spec.baseline}, per condition: mean per-seed difference with its 95% "
                 "interval; grey band = the declared margin; colour = verdict (Holm within condition and endpoint)",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)  # not _save: its tight_layout would drop the room kept for the legend
    plt.close(fig)
    return path


def _ess(a: Analysis, path: Path) -> Path | None:
    """One panel: each condition's token-weight ESS per variant (run means, 95% interval over seeds)."""
    from rl.studies.stats import mean_ci

    rows = a.data.runs
    if not any(math.isfinite(r.get("ess_mean", math.nan)) for r in rows):
        return None
    plt = _plt()
    cells = a.data.cells
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(cells) + 2), 4.2))
    allv = list(dict.fromkeys(v for c in cells for v in c.variants))
    style = variant_style(allv)
    lowest = 1.0
    for i, c in enumerate(cells):
        for j, v in enumerate(c.variants):
            vals = np.array([r["ess_mean"] for r in rows if r["cell"] == c.label and r["variant"] == v])
            vals = vals[np.isfinite(vals)]
            if not vals.size:
                continue
            m = float(vals.mean())
            lo, hi = mean_ci(vals) if vals.size >= 3 else (m, m)
            x = i + 0.8 * (j - (len(c.variants) - 1) / 2) / max(1, len(c.variants))
            ax.errorbar([x], [m], yerr=[[max(0.0, m - lo)], [max(0.0, hi - m)]], fmt=style[v]["marker"],
                        color=style[v]["color"], ms=4, capsize=2, label=v if i == 0 or v not in cells[0].variants else None)
            lowest = min(lowest, lo if math.isfinite(lo) else m)
    coincide = a.data.spec.plan.regime.coincide_above
    if coincide is not None:
        ax.axhline(coincide, color="0.5", ls="--", lw=0.8)
    ax.set_ylim(min(0.9, lowest - 0.02), 1.005)
    ax.set_xticks(range(len(cells)), [_wrap(c.short, 18) for c in cells], fontsize=7)
    ax.set_ylabel("token-weight ESS (1 = uniform weights)", fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=6, ncol=4)
    ax.set_title("Regime: token-weight ESS per condition and variant (mean of run means, 95% interval)", fontsize=9)
    return _save(fig, path)


def _sweep(a: Analysis, path: Path) -> Path | None:
    cells = [c for c in a.data.cells if c.control is None and sum(variant_p(v) is not None for v in c.variants) >= 3]
    # where sweep claims are declared, the conditions they judge (a study with many axes would crowd the panel)
    sweeps = [cl for cl in a.data.spec.plan.claims if cl.kind == "sweep" and cl.where]
    if sweeps:
        cells = [c for c in cells if any(matches(c.factors, cl.where) for cl in sweeps)] or cells
    eps = [e for e, ep in a.data.spec.plan.endpoints.items() if ep.kind != "median" and e != "final_p"]
    if not cells or not eps:
        return None
    summ = {(s.cell, s.variant): s for s in a.summaries}
    fig, axes = _grid(len(eps), sharey=False, width=4.8, height=3.5)
    markers = {c.label: _MARKERS[i % len(_MARKERS)] for i, c in enumerate(cells)}
    for ax, e in zip(axes, eps):
        for i, c in enumerate(cells):
            vs = sorted((v for v in c.variants if variant_p(v) is not None), key=variant_p)
            x = np.array([variant_p(v) for v in vs]) + 0.03 * (i - (len(cells) - 1) / 2)  # dodge overlapping CIs
            m = np.array([summ[(c.label, v)].endpoints[e][0] for v in vs])
            lo = np.array([summ[(c.label, v)].endpoints[e][1] for v in vs])
            hi = np.array([summ[(c.label, v)].endpoints[e][2] for v in vs])
            err = np.clip(np.vstack([np.nan_to_num(m - lo), np.nan_to_num(hi - m)]), 0.0, None)  # a skewed bootstrap-t interval may sit beside the mean
            ax.errorbar(x, m, yerr=err, marker=markers[c.label], ms=4, capsize=2, lw=1.1,
                        label=short_label(a, c.label))
        ax.axvline(0, color="0.5", lw=0.8, ls=":")
        ep = a.data.spec.plan.endpoints[e]
        ax.set_title(_wrap(f"{e} ({'higher' if ep.higher_is_better else 'lower'} is better)", 44), fontsize=9)
        ax.set_xlabel("p  (1 arithmetic, 0 GSPO, -1 HMPO)", fontsize=8)
        ax.set_ylabel(e, fontsize=8)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(cells)), fontsize=7, frameon=False)
    fig.suptitle("Endpoints against p (mean over seeds, 95% interval)", fontsize=11)
    fig.tight_layout(rect=(0, 0.07 + 0.03 * ((len(cells) - 1) // 4), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _per_variant_bars(a: Analysis, path: Path, keys: Sequence[tuple[str, str, str]], ylabel: str, title: str,
                      ylim: tuple[float, float] | None = None) -> Path | None:
    """Per condition: one bar group per variant, one bar per (run column, label, colour) with a 95% CI."""
    from rl.studies.stats import mean_ci

    rows = a.data.runs
    if not any(math.isfinite(r.get(k, math.nan)) for r in rows for k, _, _ in keys):
        return None
    cells = [c for c in a.data.cells if c.control is None] or a.data.cells
    fig, axes = _grid(len(cells), sharey=True)
    width = 0.8 / len(keys)
    for ax, c in zip(axes, cells):
        for j, (k, label, color) in enumerate(keys):
            ms, errs = [], []
            for v in c.variants:
                vals = np.array([r[k] for r in rows if r["cell"] == c.label and r["variant"] == v])
                vals = vals[np.isfinite(vals)]
                m = float(vals.mean()) if vals.size else math.nan
                lo, hi = mean_ci(vals) if vals.size >= 3 else (m, m)
                ms.append(m)
                errs.append((max(0.0, m - lo) if math.isfinite(lo) else 0.0, max(0.0, hi - m) if math.isfinite(hi) else 0.0))
            x = np.arange(len(c.variants)) + (j - (len(keys) - 1) / 2) * width
            ax.bar(x, np.nan_to_num(ms), width, yerr=np.array(errs).T, capsize=2, color=color, label=label)
        ax.set_xticks(range(len(c.variants)), c.variants, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_title(_wrap(short_label(a, c.label)), fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        if ylim:
            ax.set_ylim(*ylim)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def write_figures(a: Analysis, fig_dir: Path) -> dict[str, Path]:
    """Every figure the data support: name -> path (names as in FIGURE_CAPTIONS)."""
    metric = a.data.spec.metric
    learned = [v for c in a.data.cells for v in c.variants if v in ("learnable-p", "adaptive")]
    makers = {
        "curves": lambda p: _curves(a, metric, metric, p, f"{metric}: mean over seeds with a 95% bootstrap band"),
        "differences": lambda p: _differences(a, p),
        "sweep": lambda p: _sweep(a, p),
        "clip_fractions": lambda p: _per_variant_bars(
            a, p, [("clip_low", "low side (ratio < 1 - eps_low)", "tab:blue"),
                   ("clip_high", "high side (ratio > 1 + eps_high)", "tab:orange")],
            "clip fraction (run mean)", "Clip fractions, low and high side (95% CI over seeds)"),
        "kl": lambda p: _curves(a, "kl_old_new", "KL(behaviour || updated), nats per token", p,
                                "KL between the behaviour and the updated policy after each step", logy=True),
        "ess": lambda p: _ess(a, p),
        "learned_p": lambda p: (_curves(a, "p", "p in force", p, "The p in force: learned (learnable-p) or chosen "
                                        "(adaptive)", only=learned) if learned else None),
    }
    out: dict[str, Path] = {}
    for name, make in makers.items():
        path = make(fig_dir / f"{name}.png")
        if path is not None:
            out[name] = path
    return out

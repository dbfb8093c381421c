"""PNG figures for reports/theory.md (matplotlib, Agg backend; no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mpmath  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from meantheory import log_power_mean, mean_weights, weighted_cumulants  # noqa: E402

__all__ = ["write_figures", "FIGURES"]

FIGURES = {
    "power_mean_vs_p": "M_p against p for a few inputs",
    "iteration_convergence": "convergence of the arithmetic-harmonic iteration and Gauss's AGM",
    "gap_vs_skew": "the gap log(sqrt(A H)/G) against the third cumulant of log x",
    "sensitivity_weights": "sensitivity weights softmax(p log r) for p in {-2, -1, 0, 1, 2}",
}


def _power_mean_vs_p(path: Path) -> None:
    ps = np.concatenate([-np.logspace(1, -3, 120), [0.0], np.logspace(-3, 1, 120)])
    inputs = {"(1, 2, 4, 8)": [1, 2, 4, 8], "(1, 1, 4)": [1, 1, 4], "(1, 4, 4)": [1, 4, 4], "(0.5, 1, 1, 1, 3)": [0.5, 1, 1, 1, 3]}
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for k, (label, xs) in enumerate(inputs.items()):
        u = torch.log(torch.tensor(xs, dtype=torch.float64))
        vals = np.exp(np.array([float(log_power_mean(u, float(q))) for q in ps]))
        line, = ax.plot(ps, vals, label=label, lw=1.8)
        ax.axhline(max(xs), color=line.get_color(), ls=":", lw=0.8)
        ax.axhline(min(xs), color=line.get_color(), ls=":", lw=0.8)
        for q, mk in ((-1, "v"), (0, "o"), (1, "^")):
            ax.plot([q], [math.exp(float(log_power_mean(u, float(q))))], mk, color=line.get_color(), ms=5)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_yscale("log")
    ax.set_xlabel("p   (markers: v harmonic, o geometric, ^ arithmetic; dotted: min and max)")
    ax.set_ylabel("M_p(x)")
    ax.set_title("Power means are non-decreasing in p (T2) and tend to min / max (T1)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _iteration_convergence(path: Path) -> None:
    with mpmath.workdps(80):
        x = [mpmath.mpf(1), mpmath.mpf(1), mpmath.mpf(4)]
        A = mpmath.fsum(x) / 3
        H = 3 / mpmath.fsum(1 / v for v in x)
        G = mpmath.cbrt(4)
        starts = {"pair (1, 100)": (mpmath.mpf(1), mpmath.mpf(100)), "(A, H) of (1, 1, 4)": (A, H)}
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        for label, (a0, b0) in starts.items():
            for name, step in (("arith.-harmonic", lambda a, b: ((a + b) / 2, 2 * a * b / (a + b))),
                               ("Gauss AGM", lambda a, b: ((a + b) / 2, mpmath.sqrt(a * b)))):
                a, b = max(a0, b0), min(a0, b0)
                gaps, errs = [], []
                for _ in range(8):
                    gaps.append(float((a - b) / a))
                    if label.startswith("(A, H)"):
                        errs.append(float(abs(a - G) / G))
                    a, b = step(a, b)
                ls = "-" if name.startswith("arith") else "--"
                axes[0].semilogy(range(len(gaps)), np.maximum(gaps, 1e-70), ls, marker="o", ms=3, label=f"{name}, {label}")
                if errs:
                    axes[1].semilogy(range(len(errs)), errs, ls, marker="o", ms=3, label=name)
        axes[0].set_xlabel("step k")
        axes[0].set_ylabel("relative gap (a_k - b_k)/a_k")
        axes[0].set_title("Quadratic convergence (T6): the gap squares each step")
        axes[0].legend(fontsize=7)
        axes[0].grid(alpha=0.3)
        axes[1].axhline(float((mpmath.sqrt(A * H) - G) / G), color="k", lw=0.8, ls=":", label="|sqrt(AH) - G|/G")
        axes[1].set_xlabel("step k")
        axes[1].set_ylabel("|a_k - G(x)| / G(x)")
        axes[1].set_title("From (A, H) of (1, 1, 4): converges, but not to G (T7)")
        axes[1].legend(fontsize=7)
        axes[1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _gap_vs_skew(path: Path) -> None:
    rng = np.random.default_rng(3)
    fig, ax = plt.subplots(figsize=(7, 4.6))
    for nn, color in ((3, "C0"), (5, "C1"), (8, "C2")):
        k3s, gaps = [], []
        for _ in range(250):
            u = rng.gamma(rng.uniform(0.3, 4.0), 0.4, nn) * rng.choice([-1.0, 1.0])
            u = u - u.mean()
            ut = torch.tensor(u, dtype=torch.float64)
            k = weighted_cumulants(ut, 3)
            la = float(log_power_mean(ut, 1.0))
            lh = float(log_power_mean(ut, -1.0))
            k3s.append(float(k[2]))
            gaps.append(0.5 * (la + lh) - float(k[0]))
        ax.scatter(k3s, gaps, s=7, alpha=0.6, color=color, label=f"n = {nn}")
    lim = np.linspace(-1.2, 1.2, 50)
    ax.plot(lim, lim / 6, "k--", lw=1, label="kappa_3 / 6 (leading term)")
    ax.axhline(0, color="gray", lw=0.6)
    ax.set_xlim(-1.2, 1.2)
    ax.set_ylim(-0.4, 0.4)
    ax.set_xlabel("kappa_3 of log x (third cumulant: skew)")
    ax.set_ylabel("log( sqrt(A H) / G )")
    ax.set_title("The (A, H) iteration's limit misses G by the odd cumulants of log x (T7)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _sensitivity_weights(path: Path) -> None:
    r = np.array([0.3, 0.7, 0.9, 1.0, 1.05, 1.2, 1.6, 2.5])
    u = torch.tensor(np.log(r), dtype=torch.float64)
    ps = [-2.0, -1.0, 0.0, 1.0, 2.0]
    names = {-2.0: "p = -2", -1.0: "p = -1 (harmonic)", 0.0: "p = 0 (geometric)", 1.0: "p = 1 (arithmetic)", 2.0: "p = 2"}
    fig, ax = plt.subplots(figsize=(8, 4.4))
    width = 0.16
    xs = np.arange(len(r))
    for k, q in enumerate(ps):
        wts = np.asarray(mean_weights(u, q), dtype=np.float64)
        ax.bar(xs + (k - 2) * width, wts, width, label=names[q])
    ax.set_xticks(xs, [f"r = {v:g}" for v in r], fontsize=8)
    ax.set_ylabel("weight of token t in grad log s")
    ax.set_title("Token weights softmax(p log r) (T3, T9): p < 0 favours small ratios, p > 0 large ones")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_figures(out_dir: str | Path) -> dict[str, Path]:
    """Write the four PNGs into ``out_dir``; returns name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    makers = {"power_mean_vs_p": _power_mean_vs_p, "iteration_convergence": _iteration_convergence,
              "gap_vs_skew": _gap_vs_skew, "sensitivity_weights": _sensitivity_weights}
    paths = {}
    for name, fn in makers.items():
        path = out / f"{name}.png"
        fn(path)
        paths[name] = path
    return paths

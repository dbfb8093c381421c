"""Accuracy of power means on hard inputs: meantheory vs scipy.stats.pmean vs the naive
formula vs the plain log-sum-exp form, all against mpmath at 60 digits.

Inputs (n = 4096 per row, float64): log-values u at three scales, evaluated at tiny p
(1e-300 ... 1e-7), moderate p, and large |p| log x (up to 1000 * 700), plus rows with an
exact zero. Reported: the maximum relative error of M_p (relative error of M = absolute
error of log M), inf where a method returns inf/NaN/0 for a finite positive truth.

Peers:
* scipy.stats.pmean(x, p) of the installed scipy (scipy.stats.gmean at p = 0);
* naive: mean(x**p) ** (1/p) in float64 numpy;
* logsumexp: exp((logsumexp(p u) - log n) / p) (torch), the usual "stable" form, which
  still divides a rounded logarithm by a tiny p.

    python benchmarks/bench_means_accuracy.py [--n 4096]
"""

from __future__ import annotations

import argparse
import math
import warnings

import mpmath
import numpy as np
import scipy
import scipy.stats
import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table

from meantheory import log_power_mean
from meantheory import reference as ref

PS = [1e-300, 1e-16, 1e-7, 1e-3, -1e-7, 0.5, -1.0, 2.0, 30.0, -30.0, 1000.0, -1000.0]


def _rows(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    zero = 0.3 * rng.normal(size=n)
    zero[5] = -np.inf  # an exact zero of x
    return {
        "log-ratios, sd 0.3": 0.3 * rng.normal(size=n),
        "wide, sd 3": 3.0 * rng.normal(size=n),
        "large |u| (x near 1e+-300)": np.clip(rng.choice([-1, 1], n) * 690 + rng.normal(size=n), -700, 700),
        "one exact zero": zero,
    }


def _rel(got: float, exact: mpmath.mpf) -> float:
    if exact == 0:
        return 0.0 if got == 0 else math.inf
    if not math.isfinite(got) or got <= 0:
        return math.inf
    # relative error of M = |log(got) - log(exact)| (valid also beyond float64's range)
    return float(abs(mpmath.log(mpmath.mpf(got)) - mpmath.log(exact)))


def _rel_log(log_got: float, log_exact: mpmath.mpf) -> float:
    if mpmath.isinf(log_exact):
        return 0.0 if log_got == float(log_exact) else math.inf
    if not math.isfinite(log_got):
        return math.inf
    return float(abs(mpmath.mpf(log_got) - log_exact))


REGIMES = {
    "tiny p (|p| <= 1e-3)": lambda name, p: "zero" not in name and abs(p) <= 1e-3,
    "moderate p (0.5 <= |p| <= 2)": lambda name, p: "zero" not in name and 0.5 <= abs(p) <= 2,
    "large |p log x| (|p| = 30, 1000)": lambda name, p: "zero" not in name and abs(p) >= 30,
    "an exact zero, every p": lambda name, p: "zero" in name,
}


def _err(log_got: float, log_exact: mpmath.mpf) -> float:
    """Relative error of M (= absolute error of log M); where M is beyond float64's range
    (|log M| > 700, e.g. log(1 - 1/n)/p for p = 1e-300) the relative error of log M."""
    if mpmath.isinf(log_exact):
        return 0.0 if log_got == float(log_exact) else math.inf
    if not math.isfinite(log_got):
        return math.inf
    e = abs(mpmath.mpf(log_got) - log_exact)
    return float(e / abs(log_exact)) if abs(log_exact) > 700 else float(e)


def _log_or_nan(v: float) -> float:
    if not math.isfinite(v) or v < 0:
        return math.nan
    return math.log(v) if v > 0 else -math.inf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4096)
    args = ap.parse_args()
    rows = _rows(args.n)
    methods = ["meantheory", "scipy.stats.pmean", "naive mean(x**p)**(1/p)", "logsumexp / p"]
    errs: dict[tuple[str, str], list[float]] = {(r, m): [] for r in REGIMES for m in methods}
    jobs = [(name, u, p) for name, u in rows.items() for p in PS]
    for name, u, p in track(jobs, description="mpmath oracle (60 digits)"):
        log_exact = ref.mp_log_power_mean(u.tolist(), p)
        x = np.exp(u)  # may underflow/overflow: part of what the peers must cope with
        got = {"meantheory": log_power_mean(torch.from_numpy(u), p).item()}
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                got["scipy.stats.pmean"] = _log_or_nan(float(scipy.stats.pmean(x, p)))
            except Exception:  # noqa: BLE001 - a failure counts as an infinite error
                got["scipy.stats.pmean"] = math.nan
            got["naive mean(x**p)**(1/p)"] = _log_or_nan(float(np.mean(x**p) ** (1 / p)))
        got["logsumexp / p"] = ((torch.logsumexp(p * torch.from_numpy(u), 0) - math.log(len(u))) / p).item()
        for regime, sel in REGIMES.items():
            if sel(name, p):
                for m in methods:
                    errs[(regime, m)].append(_err(got[m], log_exact))
    con = Console()
    t = Table(title=f"max relative error of M_p against mpmath (60 digits), n = {args.n}; "
                    "failed = inf/NaN/0 returned for a finite positive truth")
    t.add_column("regime")
    for m in methods:
        t.add_column(m, justify="right")
    for regime in REGIMES:
        cells = []
        for m in methods:
            e = np.asarray(errs[(regime, m)])
            fin = e[np.isfinite(e)]
            worst = f"{fin.max():.1e}" if fin.size else "-"
            cells.append(f"{worst}  ({int((~np.isfinite(e)).sum())}/{e.size} failed)")
        t.add_row(regime, *cells)
    con.print(t)
    con.print(f"inputs: {', '.join(rows)}; p in {PS}")
    con.print(f"float64 eps = {2.0**-52:.1e}; the issue's bound is 64 eps max(1, max|u|) = 1.4e-14 (|u| <= 1) "
              f"to 1e-11 (|u| = 700); scipy {scipy.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()

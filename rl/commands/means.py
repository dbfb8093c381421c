"""``hmpo means``: the seeds' demonstration done right.

For the given values: the power means across p (monotone in p, as theorem says), the
min/max limits, the arithmetic-harmonic iteration of the pair (A, H) with its limit
sqrt(A H) beside the true geometric mean, and Gauss's AGM of the same pair for contrast.
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from meantheory import arithmetic_harmonic_iteration, gauss_agm, power_mean
from rl._json import jsonable

DEFAULT_PS = [-math.inf, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, math.inf]


def _float(s: str) -> float:
    try:
        return float(s)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from exc


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("values", nargs="+", type=_float, help="positive values, e.g. 1 2 4 8")
    parser.add_argument("--p", nargs="+", type=_float, default=None, metavar="P",
                        help="exponents (default: -inf -2 -1 -0.5 0 0.5 1 2 inf); 'inf' and '-inf' accepted")
    parser.add_argument("--weights", nargs="+", type=_float, default=None, metavar="W",
                        help="non-negative weights, one per value (normalised)")
    parser.add_argument("--steps", type=int, default=None,
                        help="iteration steps (default: until the pair stops changing)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def compute(values: list[float], ps: list[float] | None = None, weights: list[float] | None = None,
            steps: int | None = None) -> dict:
    """Everything ``hmpo means`` prints, as a dict (the JSON output)."""
    if weights is not None and len(weights) != len(values):
        raise ValueError(f"--weights: got {len(weights)} weights for {len(values)} values")
    ps = sorted(DEFAULT_PS if ps is None else ps)
    x = torch.tensor(values, dtype=torch.float64)
    w = None if weights is None else torch.tensor(weights, dtype=torch.float64)
    rows = [{"p": p, "mean": float(power_mean(x, p, weights=w))} for p in ps]
    a = float(power_mean(x, 1.0, weights=w))
    h = float(power_mean(x, -1.0, weights=w))
    g = float(power_mean(x, 0.0, weights=w))
    out = {
        "values": values,
        "weights": weights,
        "power_means": rows,
        "min": float(power_mean(x, -math.inf, weights=w)),
        "max": float(power_mean(x, math.inf, weights=w)),
        "arithmetic": a,
        "geometric": g,
        "harmonic": h,
        "monotone_in_p": all(r1["mean"] <= r2["mean"] for r1, r2 in zip(rows, rows[1:])),
    }
    if h > 0:
        ah = arithmetic_harmonic_iteration(a, h, steps=steps)
        agm = gauss_agm(a, h, steps=steps)
        out["arithmetic_harmonic_iteration"] = ah.as_dict()
        out["sqrt_AH"] = ah.limit
        out["gap_sqrt_AH_minus_G"] = ah.limit - g
        out["relative_gap"] = (ah.limit - g) / g
        out["gauss_agm"] = agm.as_dict()
    return out


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.12g}"


def run(args: argparse.Namespace) -> int:
    res = compute(args.values, args.p, args.weights, args.steps)  # bad values raise ValueError: rl.cli answers it
    if args.json:
        print(json.dumps(jsonable(res), allow_nan=False))
        return 0
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title=f"Power means M_p of {', '.join(_fmt(v) for v in res['values'])}")
    t.add_column("p", justify="right")
    t.add_column("name")
    t.add_column("M_p", justify="right")
    names = {-math.inf: "min", -1.0: "harmonic (HMPO)", 0.0: "geometric (GSPO)", 1.0: "arithmetic (GRPO)", math.inf: "max"}
    for r in res["power_means"]:
        t.add_row(_fmt(r["p"]), names.get(r["p"], ""), _fmt(r["mean"]))
    con.print(t)
    con.print(f"monotone non-decreasing in p: {res['monotone_in_p']}   (min {_fmt(res['min'])}, max {_fmt(res['max'])})")
    if "arithmetic_harmonic_iteration" in res:
        ah, agm = res["arithmetic_harmonic_iteration"], res["gauss_agm"]
        it = Table(title="Arithmetic-harmonic iteration from (A, H), and Gauss's AGM from the same pair")
        for col in ("step", "a_k (arith.)", "h_k (harm.)", "gap", "AGM a_k", "AGM g_k"):
            it.add_column(col, justify="right")
        n = max(len(ah["upper"]), len(agm["upper"]))
        for k in range(n):
            cells = [str(k)]
            cells += [_fmt(ah[key][k]) if k < len(ah["upper"]) else "" for key in ("upper", "lower", "gaps")]
            cells += [_fmt(agm[key][k]) if k < len(agm["upper"]) else "" for key in ("upper", "lower")]
            it.add_row(*cells)
        con.print(it)
        con.print(f"limit of the A-H iteration: sqrt(A*H) = {_fmt(res['sqrt_AH'])}")
        con.print(f"true geometric mean G      = {_fmt(res['geometric'])}")
        con.print(f"gap sqrt(A*H) - G          = {res['gap_sqrt_AH_minus_G']:.6g}  (relative {res['relative_gap']:.3g}); "
                  "zero only when sum sinh(log x - mean log x) = 0")
        con.print(f"Gauss AGM(A, H)            = {_fmt(agm['limit'])}  (a different iteration: neither sqrt(A*H) nor G)")
    return 0

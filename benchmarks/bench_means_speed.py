"""Speed of log_power_mean forward+backward against the log-sum-exp floor and scipy.

Workload (issue 2): a [256, 4096] float32 tensor of log-ratios with a padding mask (about
10% False), reduced along the last dimension, forward and backward. Peers measured in the
same run, interleaved with ours so that machine load hits both alike:

* ``torch.logsumexp`` forward+backward on the same masked tensor (masked_fill to -inf
  first): the floor for one reduction pass;
* ``scipy.stats.pmean`` row by row on the same data (forward only, float64, no mask
  support, so each row is sliced to its unmasked entries first).

Each timing is the median of ``--reps`` interleaved repetitions. Ratios are ours / peer.
Nothing is asserted: this prints a table.

    python benchmarks/bench_means_speed.py [--device cuda] [--reps 15] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import scipy.stats
import torch
from rich.console import Console
from rich.table import Table

from meantheory import log_power_mean

PS = [1.0, 0.0, -1.0, 1e-6, 0.5, -2.0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timer(fn, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--scipy-rows", type=int, default=32, help="rows timed for scipy (scaled to all rows)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    # Log-ratios of the size seen in off-policy RL (sd 0.3), with 10% padding holding NaN.
    u = (0.3 * torch.randn(args.rows, args.cols, generator=gen)).to(device)
    mask = (torch.rand(args.rows, args.cols, generator=gen) > 0.1).to(device)
    u = u.masked_fill(~mask, float("nan"))
    neg_inf = float("-inf")

    def floor() -> None:
        x = u.detach().requires_grad_()
        torch.logsumexp(x.masked_fill(~mask, neg_inf), dim=-1).sum().backward()

    def floor_nomask() -> None:
        x = torch.nan_to_num(u).requires_grad_()
        torch.logsumexp(x, dim=-1).sum().backward()

    def ours(p, check: bool, p_grad: bool = False):
        def f() -> None:
            x = u.detach().requires_grad_()
            pp = torch.tensor(p, device=device, requires_grad=True) if p_grad else p
            log_power_mean(x, pp, mask=mask, check=check).sum().backward()
        return f

    rows = [(f"p={p:g} check={c}", ours(p, c)) for p in PS for c in (True, False)]
    rows += [("p=1 tensor, learnable (check=False)", ours(1.0, False, True)),
             ("p=-1 tensor, learnable (check=False)", ours(-1.0, False, True))]
    fns = [("logsumexp floor", floor), ("logsumexp, no mask", floor_nomask), *rows]
    for _, f in fns:  # warm-up
        f()
    times: dict[str, list[float]] = {name: [] for name, _ in fns}
    for _ in range(args.reps):
        for name, f in fns:
            times[name].append(_timer(f, device))
    med = {k: statistics.median(v) for k, v in times.items()}

    # scipy.stats.pmean, forward only, row by row on the unmasked entries (float64).
    x_np = torch.exp(u).double().cpu().numpy()
    m_np = mask.cpu().numpy()
    r = min(args.scipy_rows, args.rows)
    sc: dict[float, float] = {}
    for p in (1.0, -1.0, 0.5, -2.0):
        t0 = time.perf_counter()
        for i in range(r):
            scipy.stats.pmean(x_np[i][m_np[i]], p)
        sc[p] = (time.perf_counter() - t0) * args.rows / r
    t0 = time.perf_counter()
    for i in range(r):
        scipy.stats.gmean(x_np[i][m_np[i]])
    sc[0.0] = (time.perf_counter() - t0) * args.rows / r

    con = Console()
    title = (f"log_power_mean forward+backward, [{args.rows}, {args.cols}] float32 with mask, "
             f"device {device}, threads {torch.get_num_threads()}, median of {args.reps}")
    t = Table(title=title)
    for c in ("case", "ms", "/ logsumexp floor", "scipy per row (fwd only) ms", "scipy / ours"):
        t.add_column(c, justify="right" if c != "case" else "left")
    fl = med["logsumexp floor"]
    for name, _ in fns:
        ms = med[name] * 1e3
        sc_cell, ratio_cell = "", ""
        for p, v in sc.items():
            if name.startswith(f"p={p:g} check=True"):
                sc_cell, ratio_cell = f"{v * 1e3:.1f}", f"{v / med[name]:.1f}x"
        t.add_row(name, f"{ms:.2f}", f"{med[name] / fl:.2f}", sc_cell, ratio_cell)
    con.print(t)
    con.print("scipy.stats.pmean of scipy", scipy.__version__, "(p=0: scipy.stats.gmean), float64, numpy",
              np.__version__, "; timed on", r, "rows and scaled to", args.rows)


if __name__ == "__main__":
    main()

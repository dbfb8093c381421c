"""``hmpo verify``: run every sympy derivation and numeric check, print the theorems and the claims ledger.

Exit status 0 when every theorem earned the status it claims (with its key steps verified
by sympy), every numeric check passed and every ledger verdict that cites a theorem or a
check is backed by a passing one; 1 otherwise. The ledger's checks of rl code
(``rl.ledger_checks.CHECKS``, e.g. MuonClip's QK cap) run here too. ``--json`` prints one
JSON object instead of tables; ``--write-reports [DIR]`` also writes DIR/theory.md,
DIR/claims.md and DIR/figures/theory/*.png (DIR defaults to reports). A bad argument
(``--cases-scale 0``, an ``--only`` prefix no theorem has) raises ValueError, which ``rl.cli``
answers with one line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--write-reports", nargs="?", const="reports", default=None, metavar="DIR",
                        help="write theory.md, claims.md and figures under DIR (default: reports)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random numeric cases (default 0)")
    parser.add_argument("--cases-scale", type=float, default=1.0, metavar="X",
                        help="multiply every theorem's number of numeric cases by X (default 1)")
    parser.add_argument("--only", nargs="+", default=None, metavar="ID",
                        help="run only theorems whose id starts with one of these prefixes (e.g. T2 T7), and not the "
                             "ledger's checks of rl code")
    parser.add_argument("--no-ledger", action="store_true", help="do not print the claims ledger table")


def run(args: argparse.Namespace) -> int:
    from proofs import THEOREMS, run_all, summary
    from rl.ledger_checks import CHECKS

    if args.cases_scale <= 0 or not math.isfinite(args.cases_scale):
        raise ValueError(f"--cases-scale: expected a positive number, got {args.cases_scale}")
    ths = None
    if args.only:
        ths = [th for th in THEOREMS if any(th.id.startswith(o) for o in args.only)]
        if not ths:
            raise ValueError(f"--only: no theorem id starts with any of {args.only}; ids: {[t.id for t in THEOREMS]}")
    checks = None if args.only else CHECKS  # --only runs theorems only: the claims resting on checks stay open

    if args.json:
        from rl._json import jsonable  # strict JSON: +-inf as strings, NaN as null

        res = run_all(args.seed, theorems=ths, cases_scale=args.cases_scale, checks=checks)
        out = res.as_dict()
        if args.write_reports is not None:
            from proofs import write_reports

            out["reports"] = [str(p) for p in write_reports(res, args.write_reports)]
        print(json.dumps(jsonable(out), indent=1))
        return 0 if res.ok else 1

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    # wide enough for the tables when the output is a pipe or a file (rich defaults to 80 columns there)
    console = Console(width=None if sys.stdout.isatty() else 150)
    total = len(ths if ths is not None else THEOREMS)
    with Progress(console=console, transient=True) as prog:
        task = prog.add_task("deriving and checking", total=total)

        def tick(r: Any) -> None:
            prog.update(task, advance=1, description=f"{r.theorem.id}")

        res = run_all(args.seed, theorems=ths, cases_scale=args.cases_scale, checks=checks, progress=tick)

    table = Table(title=f"hmpo verify: theorems (seed {res.seed})", show_lines=False)
    for col in ("theorem", "status", "sympy steps", "cases", "max error", "err/tol", "time (s)", ""):
        table.add_column(col, overflow="fold")
    for r in res.theorems:
        d = r.as_dict()
        chk = r.check
        table.add_row(
            f"{r.theorem.id}\n[dim]{r.theorem.title}[/dim]",
            d["status_text"],
            f"{len(r.verified_steps)} of {len(d['steps'])}",
            str(chk.cases) if chk else "-",
            f"{chk.max_error:.2e}" if chk and math.isfinite(chk.max_error) else ("inf" if chk else "-"),
            f"{chk.max_ratio:.2e}" if chk and math.isfinite(chk.max_ratio) else ("inf" if chk else "-"),
            f"{r.derive_s + r.check_s:.2f}",
            "[green]ok[/green]" if r.passed else "[red]FAIL[/red]",
        )
    console.print(table)

    if not args.no_ledger:
        lt = Table(title="claims ledger", show_lines=False)
        for col in ("id", "claim", "verdict", "evidence"):
            lt.add_column(col, overflow="fold")
        colors = {"proved": "green", "refuted": "red", "conditional": "yellow", "measured": "cyan", "open": "white"}
        for c in res.ledger:
            v = c["verdict"] + ("" if c["ok"] else " (evidence failed)")
            lt.add_row(c["id"], c["claim"], f"[{colors[c['verdict']]}]{v}[/]", ", ".join(c["evidence"]) or "-")
        console.print(lt)
    for c in res.checks:
        mark = "[green]passed[/green]" if c.passed else "[red]FAILED[/red]"
        console.print(f"check {c.name}: {mark} ({c.seconds:.1f} s): {c.detail}")
    summ = summary(res.ledger)
    console.print("ledger: " + ", ".join(f"{k} {v}" for k, v in summ.items()) + f" (total {len(res.ledger)})")
    if args.write_reports is not None:
        from proofs import write_reports

        paths = write_reports(res, args.write_reports)
        console.print("wrote " + ", ".join(str(p) for p in paths))
    n_ok = sum(r.passed for r in res.theorems)
    console.print(f"{n_ok}/{len(res.theorems)} theorems passed in {res.wall_s:.1f} s")
    if not res.ok:
        for f in res.failures():
            console.print(f"[red]FAIL[/red] {f}")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(argparse.Namespace(json=False, write_reports=None, seed=0, cases_scale=1.0, only=None, no_ledger=False)))

"""``hmpo report``: verify the theory, run the default study (resuming), write reports/.

    hmpo report [--out reports/] [--study-dir studies/] [--studies bandit tiny-lm]

1. the default study (rl.studies.presets.DEFAULT_STUDIES), each preset into
   ``<study-dir>/<name>``, skipping runs already finished there, then the studies with their own
   runner (rl.studies.presets.EXACT_STUDIES: the exact estimator study), reusing stored results of
   the same design;
2. one report folder per study, ``<out>/<name>/`` (README.md, figures, CSV, findings.json);
3. the theory: ``proofs.run_all(studies=...)`` (given the studies' measured evidence for the
   claims ledger) then ``proofs.write_reports(results, out)`` (theory.md, claims.md); skipped
   with a message when the proofs package does not offer them;
4. ``<out>/README.md`` linking everything. Prints where it wrote.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    from rl.studies.presets import DEFAULT_STUDIES
    from rl.studies.spec import EXECUTORS

    parser.add_argument("--out", default="reports", help="reports folder (default: reports/)")
    parser.add_argument("--study-dir", default="studies",
                        help="where study runs are kept and resumed (default: studies/)")
    parser.add_argument("--studies", nargs="+", default=None, metavar="PRESET_OR_TOML",
                        help=f"studies to run and report (default: {' '.join(DEFAULT_STUDIES)})")
    parser.add_argument("--executor", choices=EXECUTORS, default="local")
    parser.add_argument("--address", default=None, help="Ray cluster address (with --executor ray)")
    parser.add_argument("--workers", type=int, default=None, help="parallel runs (default: the machine's cores)")
    parser.add_argument("--run-fn", default=None, metavar="MODULE:FUNCTION", help=argparse.SUPPRESS)
    parser.add_argument("--skip-theory", action="store_true", help="do not run the proofs")
    parser.add_argument("--no-run", action="store_true",
                        help="report only the runs that exist; start no new runs")
    parser.add_argument("--fresh", action="store_true",
                        help="rerun every study from scratch (deletes their earlier results in --study-dir; resume "
                             "matches runs by config, not by code version)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _theory(out: Path, studies: dict[str, Any] | None) -> dict[str, Any]:
    """Run the proofs API if it exists (passing the studies' measured evidence to the claims
    ledger when run_all accepts it); a summary dict. Never raises for a missing API."""
    try:
        import proofs
    except ImportError as exc:
        return {"ran": False, "summary": f"skipped: proofs package not importable ({exc})"}
    run_all = getattr(proofs, "run_all", None)
    write = getattr(proofs, "write_reports", None)
    if not callable(run_all) or not callable(write):
        return {"ran": False, "summary": "skipped: proofs.run_all / proofs.write_reports not available yet"}
    t0 = time.perf_counter()
    try:
        accepts = "studies" in inspect.signature(run_all).parameters
    except (TypeError, ValueError):
        accepts = False
    results = run_all(studies=studies) if accepts and studies else run_all()
    write(results, out)
    if hasattr(results, "failures"):
        fails = list(results.failures())
        n = len(getattr(results, "theorems", []) or [])
    else:
        items = list(results.values()) if isinstance(results, dict) else list(results)
        fails = [r for r in items if (r.get("passed") if isinstance(r, dict) else getattr(r, "passed", True)) is False]
        n = len(items)
    dt = time.perf_counter() - t0
    summary = f"{n} theorems derived and checked, {len(fails)} failures ({dt:.0f} s)"
    ledger = getattr(results, "ledger", None)
    if ledger:
        measured = sum(c.get("verdict") == "measured" for c in ledger)
        waiting = sum(c.get("verdict") == "open" and c.get("declared") == "measured" for c in ledger)
        summary += f"; claims ledger: {measured} measured by the studies, {waiting} waiting for a study"
    if fails:
        summary += ": " + "; ".join(str(f) for f in fails[:5])
    return {"ran": True, "failed": len(fails), "n": n, "seconds": dt, "summary": summary}


def _exact_study(name: str, args: argparse.Namespace, out: Path) -> dict[str, Any] | None:
    """Run (or reuse) one of EXACT_STUDIES and write its report; None when --no-run finds nothing stored."""
    from rl.studies.presets import EXACT_STUDIES

    mod = importlib.import_module(EXACT_STUDIES[name])
    try:
        info = mod.run(Path(args.study_dir) / name, out / name, workers=args.workers, reuse=not args.fresh,
                       run_missing=not args.no_run, progress=not args.no_progress)
    except ValueError as exc:
        print(f"study {name}: not reported ({exc})")
        return None
    print(f"study {name}: {info['rows']} evaluations ({'computed' if info['ran'] else 'reused'}, "
          f"{info['seconds']:.0f} s); report {info['readme']}")
    return info


def run(args: argparse.Namespace) -> int:
    from rl.studies.presets import DEFAULT_STUDIES, EXACT_STUDIES
    from rl.studies.report import write_index, write_study_report
    from rl.studies.runner import run_study
    from rl.studies.spec import load_spec

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    status = 0

    infos: dict[str, dict[str, Any]] = {}
    for name in args.studies or [*DEFAULT_STUDIES, *EXACT_STUDIES]:
        if name in EXACT_STUDIES:
            info = _exact_study(name, args, out)
            if info is not None:
                infos[name] = info
            continue
        try:
            spec = load_spec(name)
        except ValueError as exc:
            print(f"hmpo report: {exc}", file=sys.stderr)
            return 2
        sdir = Path(args.study_dir) / spec.name
        if args.fresh and not args.no_run and (sdir / "manifest.json").exists():
            import shutil

            shutil.rmtree(sdir)
        if not args.no_run:
            print(f"study {spec.name}: {len(spec.runs())} runs in {sdir} (finished runs are kept and skipped)")
            try:
                res = run_study(spec, sdir, executor=args.executor, workers=args.workers, address=args.address,
                                run_fn=args.run_fn, progress=not args.no_progress)
            except ValueError as exc:
                print(f"hmpo report: study {spec.name}: {exc}", file=sys.stderr)
                return 2
            print(f"study {spec.name}: {res.ran} ran, {res.skipped} reused, {res.failed} failed, {res.wall_s:.0f} s")
            if res.interrupted:
                print("interrupted: rerun `hmpo report` to resume", file=sys.stderr)
                return 130
            if res.failed:
                status = 1
        try:
            info = write_study_report(sdir, out / spec.name,
                                      command=f"hmpo study {name} --out {sdir} --report {out / spec.name}")
        except ValueError as exc:
            print(f"hmpo report: study {spec.name}: {exc}", file=sys.stderr)
            status = 1
            continue
        infos[spec.name] = info
        print(f"study {spec.name}: report {info['readme']}")
        for c in info["claims"]:
            if c.get("verdict") not in ("measured",):
                print(f"  {c['id']}: {c['verdict']}")
    # the theory last, so that the claims ledger it writes can cite the studies just reported
    from rl.studies.report import ledger_evidence

    findings = {}
    for name in (n for n in infos if n not in EXACT_STUDIES):
        try:
            findings[name] = json.loads((out / name / "findings.json").read_text())
        except (OSError, ValueError):
            pass
    if args.skip_theory:
        theory = {"ran": False, "summary": "skipped (--skip-theory)"}
    else:
        print("theory: deriving and checking every theorem, resolving the claims ledger ...")
        try:
            evidence = ledger_evidence(findings, out)
            for name in (n for n in infos if n in EXACT_STUDIES):
                evidence.update(importlib.import_module(EXACT_STUDIES[name]).ledger_evidence(out))
            theory = _theory(out, evidence)
        except ValueError as exc:  # malformed study evidence: the ledger refuses it rather than guess
            theory = {"ran": False, "failed": 1, "summary": f"failed: {exc}"}
        if theory.get("failed"):
            status = 1
    print(f"theory: {theory['summary']}")
    index = write_index(out, infos, theory)
    print(f"reports written to {out}/ (index {index}) in {time.perf_counter() - t0:.0f} s")
    return status

"""``hmpo report``: verify the theory, run the default study (resuming), write reports/.

    hmpo report [--out reports/] [--study-dir studies/] [--studies bandit tiny-lm]

1. the default study (rl.studies.presets.DEFAULT_STUDIES), each preset into
   ``<study-dir>/<name>``, skipping runs already finished there, then the studies with their own
   runner (rl.studies.presets.EXACT_STUDIES: the exact estimator study), reusing stored results of
   the same design;
2. one report folder per study, ``<out>/<name>/`` (README.md, figures, CSV, findings.json);
3. the theory: ``proofs.run_all(studies=..., checks=rl.ledger_checks.CHECKS)`` (given each study's findings.json, read by the
   ledger as proofs.claims.StudyFindings) then ``proofs.write_reports(results, out)``
   (theory.md, claims.md);
4. ``<out>/README.md`` linking everything. Prints where it wrote.
"""

from __future__ import annotations

import argparse
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
                        help="rerun every study from scratch (deletes their earlier results in --study-dir; without "
                             "it, results of another code version are rerun anyway)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _theory(out: Path, studies: dict[str, Any]) -> dict[str, Any]:
    """Derive and check every theorem, resolve the claims ledger with the studies' findings, write
    theory.md and claims.md; a summary dict."""
    import proofs
    from rl.ledger_checks import CHECKS

    t0 = time.perf_counter()
    results = proofs.run_all(studies=studies, checks=CHECKS)
    proofs.write_reports(results, str(out))
    fails = results.failures()
    measured = sum(c["verdict"] == "measured" for c in results.ledger)
    waiting = sum(c["verdict"] == "open" and c["declared"] == "measured" for c in results.ledger)
    dt = time.perf_counter() - t0
    summary = (f"{len(results.theorems)} theorems derived and checked, {len(fails)} failures ({dt:.0f} s); claims "
               f"ledger: {measured} measured by the studies, {waiting} waiting for a study")
    if fails:
        summary += ": " + "; ".join(fails[:5])
    return {"ran": True, "failed": len(fails), "summary": summary}


def _exact_study(name: str, args: argparse.Namespace, out: Path) -> bool:
    """Run (or reuse) one of EXACT_STUDIES and write its report; False when --no-run finds nothing stored."""
    import importlib

    from rl.studies.presets import EXACT_STUDIES

    mod = importlib.import_module(EXACT_STUDIES[name])
    try:
        info = mod.run(Path(args.study_dir) / name, out / name, workers=args.workers, reuse=not args.fresh,
                       run_missing=not args.no_run, progress=not args.no_progress)
    except ValueError as exc:
        print(f"study {name}: not reported ({exc})")
        return False
    print(f"study {name}: {info['rows']} evaluations ({'computed' if info['ran'] else 'reused'}, "
          f"{info['seconds']:.0f} s); report {info['readme']}")
    return True


def run(args: argparse.Namespace) -> int:
    from rl.studies.presets import DEFAULT_STUDIES, EXACT_STUDIES
    from rl.studies.report import write_index, write_study_report
    from rl.studies.runner import run_study
    from rl.studies.spec import load_spec

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    status = 0

    reported: list[str] = []
    for name in args.studies or [*DEFAULT_STUDIES, *EXACT_STUDIES]:
        if name in EXACT_STUDIES:
            if _exact_study(name, args, out):
                reported.append(name)
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
            if res.stale:
                print(f"study {spec.name}: reran {len(res.stale)} stale results (made by another code version than "
                      f"{res.code_version}): {', '.join(res.stale)}")
            if res.interrupted:
                print("interrupted: rerun `hmpo report` to resume", file=sys.stderr)
                return 130
            if res.failed:
                status = 1
        try:
            info = write_study_report(sdir, out / spec.name, spec=spec,
                                      command=f"hmpo study {name} --out {sdir} --report {out / spec.name}")
        except ValueError as exc:
            print(f"hmpo report: study {spec.name}: {exc}", file=sys.stderr)
            status = 1
            continue
        reported.append(spec.name)
        print(f"study {spec.name}: report {info.readme}")
        for f in info.findings:
            print(f"  {f.id}: {f.verdict} ({f.outcome})")
    # the theory last, so that the claims ledger it writes can cite the studies just reported
    if args.skip_theory:
        theory = {"ran": False, "summary": "skipped (--skip-theory)"}
    else:
        from proofs.claims import StudyFindings
        from rl.studies.report import findings_of

        print("theory: deriving and checking every theorem, resolving the claims ledger ...")
        try:
            evidence = {name: StudyFindings.from_document(doc, str(out))
                        for name, doc in findings_of(out, reported).items()}
            theory = _theory(out, evidence)
        except ValueError as exc:  # malformed study evidence: the ledger refuses it rather than guess
            theory = {"ran": False, "failed": 1, "summary": f"failed: {exc}"}
        if theory.get("failed"):
            status = 1
    print(f"theory: {theory['summary']}")
    index = write_index(out, theory["summary"])
    print(f"reports written to {out}/ (index {index}) in {time.perf_counter() - t0:.0f} s")
    return status

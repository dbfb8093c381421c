"""``hmpo study``: run a convergence study (a TOML spec or a preset), resumable.

    hmpo study SPEC_OR_PRESET --out DIR [--executor local|ray|inline] [--address ADDR] [--workers N]

Each run writes one results file (DIR/runs/<run_id>.json) atomically; rerunning the same
command skips finished runs of the same code version, so an interrupted study resumes where it
stopped, and results made by another code version are rerun (and named). The study's report
is written into DIR/report when the runs are done (``--report REPORT_DIR`` elsewhere,
``--no-report`` not at all).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    from rl.studies.presets import PRESETS
    from rl.studies.spec import EXECUTORS

    parser.add_argument("spec", metavar="SPEC_OR_PRESET",
                        help=f"a study TOML file or a preset: {', '.join(PRESETS)}")
    parser.add_argument("--out", default=None, help="study directory (default: studies/<name>)")
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="local processes (default), a Ray cluster or local Ray instance, or inline "
                             "(this process, one run at a time)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (e.g. auto or ray://head:10001); default: start a local Ray")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel runs (default: the machine's cores)")
    parser.add_argument("--max-runs", type=int, default=None, help="start at most this many runs, then stop")
    parser.add_argument("--run-fn", default=None, metavar="MODULE:FUNCTION",
                        help="run function instead of the trainer (e.g. rl.studies.synthetic:run for a dry run)")
    parser.add_argument("--report", default=None, metavar="DIR",
                        help="write the study report into DIR (default: the study directory's report/)")
    parser.add_argument("--no-report", action="store_true", help="write no report")
    parser.add_argument("--list", action="store_true", help="list the planned runs and which are done; run nothing")
    parser.add_argument("--fresh", action="store_true",
                        help="delete the study directory's earlier results first (results of another code version "
                             "are rerun without it)")
    parser.add_argument("--keep-work", action="store_true", help="keep each run's trainer folder (checkpoints)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from rl.studies.runner import code_version, load_results, run_study
    from rl.studies.spec import load_spec

    try:
        spec = load_spec(args.spec)
    except ValueError as exc:
        print(f"hmpo study: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path("studies") / spec.name
    runs = spec.runs()
    if args.list:
        done = load_results(out)
        try:
            version = code_version(args.run_fn or spec.run_fn or "rl.studies.training:run")
        except ValueError as exc:
            print(f"hmpo study: {exc}", file=sys.stderr)
            return 2
        for r in runs:
            rec = done.get(r.run_id)
            ok = rec is not None and rec.get("config_hash") == r.config_hash and rec.get("status") != "failed"
            state = ("done" if rec.get("code_version") == version else "stale") if ok else (
                "failed" if rec and rec.get("status") == "failed" else "todo")
            print(f"{state:6s} {r.run_id:28s} {r.cell_label}")
        print(f"{len(runs)} runs planned in {out} (code version {version})")
        return 0
    if args.fresh and out.exists():
        import shutil

        if not (out / "manifest.json").exists():
            print(f"hmpo study: --fresh: {out} is not a study directory (no manifest.json); not deleting it",
                  file=sys.stderr)
            return 2
        shutil.rmtree(out)
    print(f"study {spec.name}: {len(runs)} runs -> {out} (executor {args.executor})")
    try:
        res = run_study(spec, out, executor=args.executor, workers=args.workers, address=args.address,
                        run_fn=args.run_fn, progress=not args.no_progress, keep_work=args.keep_work,
                        max_runs=args.max_runs)
    except ValueError as exc:
        print(f"hmpo study: {exc}", file=sys.stderr)
        return 2
    print(f"{res.ran} runs done now, {res.skipped} already done, {res.failed} failed; "
          f"{res.wall_s:.1f} s; results in {out / 'runs'}")
    if res.stale:
        print(f"reran {len(res.stale)} stale results (made by another code version than {res.code_version}): "
              + ", ".join(res.stale))
    if res.interrupted:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    if not args.no_report:
        from rl.studies.report import write_study_report

        try:
            info = write_study_report(out, args.report or out / "report", spec=spec,
                                      command=f"hmpo study {args.spec} --out {out}")
        except ValueError as exc:
            print(f"hmpo study: no report: {exc}", file=sys.stderr)
            return 1
        print(f"report: {info.readme}")
    return 0 if res.failed == 0 else 1

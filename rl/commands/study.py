"""``hmpo study``: run a convergence study (a TOML spec or a preset), resumable.

    hmpo study SPEC_OR_PRESET --out DIR [--executor local|ray|inline] [--address ADDR] [--workers N]

Each run writes one results file (DIR/runs/<run_id>.json) atomically; rerunning the same
command skips finished runs, so an interrupted study resumes where it stopped. ``--report
REPORT_DIR`` writes the study's report when the runs are done.
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
    parser.add_argument("--report", default=None, metavar="DIR", help="write the study report into DIR afterwards")
    parser.add_argument("--list", action="store_true", help="list the planned runs and which are done; run nothing")
    parser.add_argument("--fresh", action="store_true",
                        help="delete the study directory's earlier results first (after code changes: resume "
                             "matches runs by config, not by code version)")
    parser.add_argument("--keep-work", action="store_true", help="keep each run's trainer folder (checkpoints)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from rl.studies.runner import load_results, run_study
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
        for r in runs:
            rec = done.get(r.run_id)
            state = "done" if rec and rec.get("config_hash") == r.config_hash and rec.get("status") != "failed" \
                else ("failed" if rec and rec.get("status") == "failed" else "todo")
            print(f"{state:6s} {r.run_id:28s} {r.cell_label}")
        print(f"{len(runs)} runs planned in {out}")
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
    if res.interrupted:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    if args.report:
        from rl.studies.report import write_study_report

        info = write_study_report(out, args.report, command=f"hmpo study {args.spec} --out {out}")
        print(f"report: {info['readme']}")
    return 0 if res.failed == 0 else 1

"""Run a study: every run once, one results file each, resumable, on local processes or Ray.

Layout of a study directory::

    DIR/manifest.json          study spec, planned runs (id -> config hash), provenance
                               (git commit, package versions, host) of every invocation
    DIR/runs/<run_id>.json     one results file per finished run (config, metrics per step,
                               status, timing), written atomically: temp file + os.replace
    DIR/work/<run_id>/         the trainer's scratch space (metrics.jsonl, checkpoints) while a
                               run is in flight; removed when its results file is written

Resume rule: a run whose results file exists, parses, carries the same config hash *and* the
same code version (:func:`code_version`: a hash of the source that makes the run's numbers)
and has a status other than "failed" is done and skipped; everything else is (re)run, and the
outcome lists the *stale* results (same config, other code version) that were rerun. Because a results
file appears only by an atomic rename, a study killed at any instant leaves each run either
complete or absent, never half written and never twice. Leftover temp files are removed.

Executors (all return results to this process, which alone writes the results files, so a
cluster's workers need no shared file system):
- "local" (default): ``concurrent.futures.ProcessPoolExecutor`` with the spawn start method,
  ``workers`` processes (default: the machine's cores), torch limited to one thread each so
  that the same seed gives the same numbers whatever the number of workers;
- "ray": one Ray task per run (``--address`` to join a cluster, else a local instance);
- "inline": in this process, one run after another (debugging, tiny tests).

A run function maps ``(config: dict, work_dir: Path) -> dict`` with keys ``metrics`` (a list of
per-step dicts), optional ``status`` ("ok" or "stopped", e.g. after the NaN guard) and ``info``.
The default, ``rl.studies.training:run``, calls the trainer (``rl.trainer``); tests inject
another one by its import path ``"module:function"``. A run function's module may define
``prepare(configs)`` (one-time work before runs are dispatched, e.g. a cached warm start) and
``CODE_PATHS``/``CODE_EXCLUDE`` (the source its numbers depend on; default: its own file).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as _dt
import importlib
import inspect
import json
import hashlib
import multiprocessing as mp
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rl._io import atomic_write_json, remove_stale_temps
from rl.studies.spec import EXECUTORS, RunSpec, StudySpec

__all__ = [
    "RESULT_FORMAT",
    "DEFAULT_RUN_FN",
    "StudyOutcome",
    "run_study",
    "execute_task",
    "code_version",
    "stale_results",
    "load_results",
    "read_metrics_jsonl",
    "atomic_write_json",
    "provenance",
]

RESULT_FORMAT = "hmpo-run/1"
DEFAULT_RUN_FN = "rl.studies.training:run"


# ----------------------------------------------------------------------------- files

def read_metrics_jsonl(path: Path) -> list[dict[str, Any]]:
    """Per-step rows of a trainer's metrics.jsonl, one per step.

    A trainer resumed from a checkpoint may append steps it had already logged before the
    interruption; the last row of each step wins, so no step is counted twice. A torn last
    line (the process died mid-write) is dropped.
    """
    rows: dict[Any, dict[str, Any]] = {}
    order: list[Any] = []
    with open(path) as f:
        for i, line in enumerate(f):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            key = row.get("step", i)
            if key not in rows:
                order.append(key)
            rows[key] = row
    return [rows[k] for k in sorted(order, key=lambda k: (not isinstance(k, (int, float)), k))]


def columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows of per-step dicts -> columns (missing entries are None); nested dicts flattened a.b."""
    flat = [_flatten(r) for r in rows]
    keys: list[str] = []
    for r in flat:
        for k in r:
            if k not in keys:
                keys.append(k)
    return {k: [r.get(k) for r in flat] for k in keys}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v):
            out[key] = list(v)
        else:
            out[key] = str(v)
    return out


# ----------------------------------------------------------------------------- provenance

def _git_commit(cwd: Path | None = None) -> dict[str, Any]:
    root = Path(cwd or Path(__file__).resolve().parents[2])
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def _version(mod: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001 - a missing package is simply reported as None
        return None


def provenance(executor: str | None = None) -> dict[str, Any]:
    """Git commit (and whether the tree had uncommitted changes), package versions, host."""
    pkgs = ["hmpo", "torch", "numpy", "scipy", "matplotlib", "rich"]
    if executor == "ray":
        pkgs.append("ray")
    return {
        "git": _git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "packages": {p: _version(p) for p in pkgs},
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "executor": executor,
    }


# ----------------------------------------------------------------------------- one run

def resolve_run_fn(path: str) -> Callable[[dict[str, Any], Path], dict[str, Any]]:
    """'package.module:function' -> the function (ValueError if it cannot be found)."""
    mod, sep, name = path.partition(":")
    if not sep or not mod or not name:
        raise ValueError(f"run function {path!r}: expected 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"run function {path!r} cannot be loaded: {exc}") from exc
    if not callable(fn):
        raise ValueError(f"run function {path!r} is not callable")
    return fn


def _source_root() -> Path:
    return Path(__file__).resolve().parents[2]


def code_version(fn_path: str) -> str:
    """SHA-256 (first 16 hex digits) of the source files a run function's numbers depend on.

    The files are those under the module's ``CODE_PATHS`` (paths relative to the source root,
    folders meaning every ``*.py`` below them) minus those under ``CODE_EXCLUDE``; without
    ``CODE_PATHS``, the module's own file. Each file enters as its relative path and its bytes,
    in sorted order, so the version is the same on every machine with the same source, and
    changes with any edit that could change a run (not with edits of reports or statistics).
    """
    mod = importlib.import_module(fn_path.partition(":")[0])
    root = _source_root()
    own = Path(mod.__file__).resolve()
    include = getattr(mod, "CODE_PATHS", None)
    exclude = tuple(getattr(mod, "CODE_EXCLUDE", ()))
    files: set[Path] = set()
    if include is None:
        files.add(own)
    else:
        for rel in include:
            target = root / rel
            if target.is_dir():
                files.update(f for f in target.rglob("*.py")
                             if not any(f.relative_to(root).as_posix().startswith(e) for e in exclude))
            elif target.is_file():
                files.add(target)  # named explicitly: kept even inside an excluded folder
            else:
                raise ValueError(f"run function {fn_path!r}: CODE_PATHS entry {rel!r} does not exist under {root}")
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.as_posix()):
        name = f.relative_to(root).as_posix() if f.is_relative_to(root) else f.name
        h.update(name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def execute_task(task: dict[str, Any]) -> dict[str, Any]:
    """Run one study run and return its results record (never raises for a failing run).

    ``task``: {"run_id", "config", "variant", "cell", "seed", "config_hash", "code_version",
    "run_fn", "work_dir" (str or None: a fresh temp dir)}. The record is what the results file holds.
    """
    _limit_threads()
    t0 = time.perf_counter()
    record: dict[str, Any] = {
        "format": RESULT_FORMAT,
        "run_id": task["run_id"],
        "config_hash": task["config_hash"],
        "code_version": task.get("code_version"),
        "config": task["config"],
        "variant": task["variant"],
        "cell": task["cell"],
        "seed": task["seed"],
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "git": task.get("git"),  # the commit of the invocation that ran it (a study may span several)
    }
    tmp_ctx = None
    try:
        if task.get("work_dir"):
            work = Path(task["work_dir"])
            work.mkdir(parents=True, exist_ok=True)
        else:
            tmp_ctx = tempfile.TemporaryDirectory(prefix=f"hmpo-{task['run_id']}-")
            work = Path(tmp_ctx.name)
        fn = resolve_run_fn(task["run_fn"])
        _limit_threads()  # again: resolving the run function may have imported torch
        out = fn(dict(task["config"]), work)
        if not isinstance(out, dict) or "metrics" not in out:
            raise ValueError(f"run function {task['run_fn']} returned {type(out).__name__} without 'metrics'")
        rows = list(out["metrics"])
        record["metrics"] = columns(rows)
        record["n_steps"] = len(rows)
        record["status"] = str(out.get("status", "ok"))
        record["info"] = _flatten(out.get("info", {}) or {})
        record["error"] = None
    except Exception as exc:  # noqa: BLE001 - a failing run is data, the study goes on
        record.update(status="failed", metrics={}, n_steps=0, info={},
                      error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}")
    finally:
        if tmp_ctx is not None:
            tmp_ctx.cleanup()
    record["wall_s"] = time.perf_counter() - t0
    record["finished_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return record


def _limit_threads() -> None:
    # One intra-op thread per run: runs of a study are the parallelism, and a fixed thread count
    # keeps float reduction order, hence the numbers, independent of the executor. torch reads
    # OMP_NUM_THREADS when it is first imported; if it is imported already, set it directly.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


# ----------------------------------------------------------------------------- executors

def _iter_inline(tasks: list[dict[str, Any]], workers: int, address: str | None) -> Iterator[dict[str, Any]]:
    # runs in this process: restore its thread settings afterwards
    env_before = os.environ.get("OMP_NUM_THREADS")
    torch = sys.modules.get("torch")
    threads_before = torch.get_num_threads() if torch is not None else None
    try:
        for t in tasks:
            yield execute_task(t)
    finally:
        if env_before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_before
        torch = sys.modules.get("torch")
        if torch is not None and threads_before is not None and torch.get_num_threads() != threads_before:
            torch.set_num_threads(threads_before)


def _worker_init() -> None:
    _limit_threads()


def _iter_local(tasks: list[dict[str, Any]], workers: int, address: str | None) -> Iterator[dict[str, Any]]:
    ctx = mp.get_context("spawn")  # fork after torch/OpenMP initialised can deadlock
    ex = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init)
    procs: list = []
    try:
        futures = [ex.submit(execute_task, t) for t in tasks]
        procs = list((getattr(ex, "_processes", None) or {}).values())
        for fut in cf.as_completed(futures):
            yield fut.result()
    finally:
        procs += list((getattr(ex, "_processes", None) or {}).values())
        ex.shutdown(wait=False, cancel_futures=True)
        # spawned workers of an interrupted study still hold runs in flight; end them (only
        # ours) so the next invocation does not race them for the same results files
        for proc in procs:
            if proc.is_alive():
                proc.terminate()


def _iter_ray(tasks: list[dict[str, Any]], workers: int, address: str | None) -> Iterator[dict[str, Any]]:
    try:
        import ray
    except ImportError as exc:
        raise ValueError("--executor ray needs Ray: pip install 'hmpo[ray]'") from exc
    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            kw["address"] = address
        else:
            kw["num_cpus"] = workers
        ray.init(**kw)
        started = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=1)(execute_task)
        pending = [remote.remote(t) for t in tasks]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    yield ray.get(ref)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
    finally:
        if started:
            ray.shutdown()


_EXECUTORS = {"inline": _iter_inline, "local": _iter_local, "ray": _iter_ray}


# ----------------------------------------------------------------------------- the study

@dataclasses.dataclass
class StudyOutcome:
    """What ``run_study`` did: the study dir, how many runs were skipped, run, failed; the code
    version the runs were made with and the stale results (same config, another code version)
    it reran."""

    study_dir: Path
    total: int
    skipped: int
    ran: int
    failed: int
    interrupted: bool = False
    wall_s: float = 0.0
    code_version: str = ""
    stale: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.failed == 0


def load_results(study_dir: Path) -> dict[str, dict[str, Any]]:
    """run_id -> results record for every readable results file in ``study_dir/runs``."""
    out: dict[str, dict[str, Any]] = {}
    runs = Path(study_dir) / "runs"
    if not runs.is_dir():
        return out
    for path in sorted(runs.glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(rec, dict) and rec.get("format") == RESULT_FORMAT and rec.get("run_id") == path.stem:
            out[path.stem] = rec
    return out


def _current(rec: dict[str, Any] | None, run: RunSpec) -> bool:
    """A finished result of this run's config (whatever code version made it)."""
    return rec is not None and rec.get("config_hash") == run.config_hash and rec.get("status") != "failed"


def _done(rec: dict[str, Any] | None, run: RunSpec, version: str) -> bool:
    """A finished result of this run's config made by this code version: resume skips it."""
    return _current(rec, run) and rec.get("code_version") == version


def stale_results(study_dir: Path, spec: StudySpec, version: str) -> list[str]:
    """Run ids whose finished result matches the config but was made by another code version."""
    recs = load_results(study_dir)
    return [r.run_id for r in spec.runs() if _current(recs.get(r.run_id), r)
            and recs[r.run_id].get("code_version") != version]


def _prepare(fn_path: str, configs: list[dict[str, Any]], executor: str, workers: int = 1) -> None:
    """Call the run function's companion ``prepare(configs)`` if its module defines one:
    one-time work such as a cached warm start. A hook that takes ``workers`` gets the study's
    worker count (1 for the inline executor), so it may do independent pieces in parallel."""
    if not configs:
        return
    hook = getattr(importlib.import_module(fn_path.partition(":")[0]), "prepare", None)
    if callable(hook) and executor != "ray":  # on a cluster every node prepares for itself
        if "workers" in inspect.signature(hook).parameters:
            hook(configs, workers=1 if executor == "inline" else workers)
        else:
            hook(configs)


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS/Windows
        return max(1, os.cpu_count() or 1)


def run_study(
    spec: StudySpec,
    out_dir: str | Path,
    *,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    run_fn: str | None = None,
    progress: bool = True,
    keep_work: bool = False,
    max_runs: int | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> StudyOutcome:
    """Run every run of ``spec`` not already finished in ``out_dir``; write results and manifest.

    ``run_fn``: "module:function" of the run function (default: the spec's, else the trainer).
    ``max_runs``: stop after starting this many runs (a partial study; resumable).
    KeyboardInterrupt stops the study cleanly: finished runs are kept, the outcome says
    ``interrupted`` and the same call resumes it.
    """
    if executor not in _EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    t_start = time.perf_counter()
    study_dir = Path(out_dir)
    runs_dir = study_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(runs_dir)  # left by a process killed inside atomic_write_json
    fn_path = run_fn or spec.run_fn or DEFAULT_RUN_FN
    resolve_run_fn(fn_path)  # fail fast, before any process starts
    version = code_version(fn_path)

    manifest_path = study_dir / "manifest.json"
    manifest: dict[str, Any] = {}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("study") not in (None, spec.name):
            raise ValueError(f"{study_dir} holds study {manifest['study']!r}, not {spec.name!r}; "
                             "use another --out")
    planned = spec.runs()
    prov = provenance(executor)
    manifest.update({
        "format": "hmpo-study/1",
        "study": spec.name,
        "spec": spec.to_dict(),
        "run_fn": fn_path,
        "code_version": version,
        "runs": {r.run_id: {"config_hash": r.config_hash, "variant": r.variant, "cell": r.cell,
                            "seed": r.seed, "config": r.config} for r in planned},
    })
    manifest.setdefault("invocations", []).append(prov)
    atomic_write_json(manifest_path, manifest)

    existing = load_results(study_dir)
    todo = [r for r in planned if not _done(existing.get(r.run_id), r, version)]
    skipped = len(planned) - len(todo)
    if max_runs is not None:
        todo = todo[:max_runs]
    stale = tuple(r.run_id for r in todo if _current(existing.get(r.run_id), r))
    for rid in stale:  # a stale run's checkpoint was made by the old code: start it afresh
        shutil.rmtree(study_dir / "work" / rid, ignore_errors=True)
    workers = workers or _default_workers()
    workers = min(workers, max(1, len(todo)))
    tasks = [{
        "run_id": r.run_id, "config": r.config, "variant": r.variant, "cell": r.cell, "seed": r.seed,
        "config_hash": r.config_hash, "code_version": version, "run_fn": fn_path,
        "work_dir": None if executor == "ray" else str(study_dir / "work" / r.run_id),
        "git": prov["git"],
    } for r in todo]

    _prepare(fn_path, [t["config"] for t in tasks], executor, workers)
    ran = failed = 0
    interrupted = False
    bar = _Progress(spec.name, total=len(planned), done=skipped, enabled=progress)
    try:
        with bar:
            for rec in _EXECUTORS[executor](tasks, workers, address):
                atomic_write_json(runs_dir / f"{rec['run_id']}.json", rec)
                ran += 1
                if rec["status"] == "failed":
                    failed += 1
                    bar.log(f"[red]run {rec['run_id']} failed:[/red] {rec['error'].splitlines()[0]}")
                elif not keep_work:
                    shutil.rmtree(study_dir / "work" / rec["run_id"], ignore_errors=True)
                if on_result is not None:
                    on_result(rec)
                bar.advance(rec)
    except KeyboardInterrupt:
        interrupted = True
    except cf.process.BrokenProcessPool as exc:
        # a worker died (killed, out of memory, Ctrl-C reached it first): what finished is kept
        interrupted = True
        bar.log(f"[red]a worker process died ({exc}); rerun the same command to resume[/red]")
    wall = time.perf_counter() - t_start
    finished = load_results(study_dir)
    manifest["status"] = {
        "planned": len(planned),
        "finished": sum(_done(finished.get(r.run_id), r, version) for r in planned),
        "failed": sum(1 for r in planned if (finished.get(r.run_id) or {}).get("status") == "failed"),
        "interrupted": interrupted,
        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(manifest_path, manifest)
    if not keep_work and not interrupted:
        work = study_dir / "work"
        if work.is_dir() and not any(work.iterdir()):
            work.rmdir()
    return StudyOutcome(study_dir, len(planned), skipped, ran, failed, interrupted, wall, version, stale)


class _Progress:
    """A rich progress bar over a study's runs (quiet when disabled)."""

    def __init__(self, name: str, total: int, done: int, enabled: bool):
        self.enabled = enabled
        self.total, self.done = total, done
        if enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                               TextColumn("{task.fields[last]}"))
            self._task = self._p.add_task(f"study {name}", total=total, completed=done, last="")

    def __enter__(self):
        if self.enabled:
            self._p.__enter__()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self._p.__exit__(*exc)

    def advance(self, rec: dict[str, Any]) -> None:
        self.done += 1
        if self.enabled:
            self._p.update(self._task, advance=1, last=f"{rec['run_id']} ({rec['wall_s']:.1f}s)")

    def log(self, msg: str) -> None:
        if self.enabled:
            self._p.console.print(msg)
        else:
            print(msg, file=sys.stderr)

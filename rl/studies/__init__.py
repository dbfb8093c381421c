"""Convergence studies: declarative specs, a resumable runner (local processes or Ray),
statistics with bootstrap bands and corrected tests, and the report writer.

    from rl.studies import load_spec, run_study, write_study_report
    spec = load_spec("smoke")                       # a preset name or a TOML file
    run_study(spec, "studies/smoke")                # resumable; one results file per run
    write_study_report("studies/smoke", "reports/smoke")

Names are imported lazily, so that a worker process that only runs ``rl.studies.runner``
does not pay for scipy and matplotlib.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DEFAULT_STUDIES": "rl.studies.presets", "PRESETS": "rl.studies.presets",
    "write_index": "rl.studies.report", "write_study_report": "rl.studies.report",
    "StudyOutcome": "rl.studies.runner", "load_results": "rl.studies.runner", "run_study": "rl.studies.runner",
    "RunSpec": "rl.studies.spec", "StudySpec": "rl.studies.spec", "load_spec": "rl.studies.spec",
    "parse_spec": "rl.studies.spec",
    "analyze": "rl.studies.stats", "bootstrap_ci": "rl.studies.stats", "compare": "rl.studies.stats",
    "holm": "rl.studies.stats", "steps_to_threshold": "rl.studies.stats",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rl.studies' has no attribute {name!r}")

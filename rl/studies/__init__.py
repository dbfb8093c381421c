"""Convergence studies: declarative specs with a declared analysis plan, a resumable runner
(local processes or Ray), paired statistics, typed findings and the report writer.

    from rl.studies import load_spec, run_study, write_study_report
    spec = load_spec("smoke")                       # a preset name or a TOML file
    run_study(spec, "studies/smoke")                # resumable; one results file per run
    write_study_report("studies/smoke", "reports/smoke", spec=spec)

Modules: spec (grids) and plan (endpoints, margins, claims, controls, regime), runner (runs,
resume by config hash and code version), training (the trainer as a run function), synthetic
(a run function with a known truth), endpoints (one run -> one number), stats (the tests),
analysis (findings from runs), findings (the typed records), figures and report (rendering).

Names are imported lazily, so that a worker process that only runs ``rl.studies.runner``
does not pay for scipy and matplotlib.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DEFAULT_STUDIES": "rl.studies.presets", "PRESETS": "rl.studies.presets",
    "write_index": "rl.studies.report", "write_study_report": "rl.studies.report",
    "StudyOutcome": "rl.studies.runner", "load_results": "rl.studies.runner", "run_study": "rl.studies.runner",
    "code_version": "rl.studies.runner",
    "RunSpec": "rl.studies.spec", "StudySpec": "rl.studies.spec", "load_spec": "rl.studies.spec",
    "parse_spec": "rl.studies.spec",
    "Plan": "rl.studies.plan", "Endpoint": "rl.studies.plan", "Claim": "rl.studies.plan",
    "analyze": "rl.studies.analysis",
    "Finding": "rl.studies.findings", "StatTest": "rl.studies.findings", "read_findings": "rl.studies.findings",
    "FINDINGS_FORMAT": "rl.studies.findings",
    "sign_flip_test": "rl.studies.stats", "mean_ci": "rl.studies.stats", "tost": "rl.studies.stats",
    "holm": "rl.studies.stats", "bootstrap_ci": "rl.studies.stats",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rl.studies' has no attribute {name!r}")

"""Write a study's report: it renders an Analysis (rl.studies.analysis) and decides nothing.

``write_study_report(study_dir, out_dir)`` reads the results of one study (rl.studies.runner),
analyses them under the study's declared plan and writes into ``out_dir``:

    README.md        the findings in words first (verdict, effect with its interval, margin,
                     family, power), the controls, the regime, the figures, the tables, the
                     method (generated from the actual counts), how to reproduce, provenance
    findings.json    the typed findings (rl.studies.findings, schema FINDINGS_FORMAT): what the
                     claims ledger reads
    summary.csv      one row per (condition, variant): every endpoint's mean and 95% interval
    runs.csv         one row per run: its endpoint values and regime columns (ESS, clip, KL)
    comparisons.csv  every test: the findings' and the exploratory ones, with their family
    figures/*.png    see rl.studies.figures

``write_index(reports_dir)`` writes reports/README.md linking theory.md, claims.md and every
study folder with its findings' verdicts.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rl._io import atomic_write_json, atomic_write_text
from rl.studies.analysis import Analysis, analyze
from rl.studies.figures import FIGURE_CAPTIONS, short_label, write_figures
from rl.studies.findings import Finding, StatTest, findings_document, read_findings
from rl.studies.runner import code_version, load_results
from rl.studies.spec import VARIANT_NAMES, StudySpec, parse_spec

__all__ = ["StudyReport", "write_study_report", "write_index", "findings_of"]


@dataclass(frozen=True)
class StudyReport:
    """What write_study_report wrote."""

    readme: Path
    findings_path: Path
    figures: dict[str, Path]
    findings: tuple[Finding, ...]
    n_runs: int
    n_planned: int
    n_failed: int


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"


def _p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "-"
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def _name(v: str) -> str:
    return f"{v} ({VARIANT_NAMES[v]})" if v in VARIANT_NAMES else v


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    return v


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(r.get(k)) for k in keys})
    atomic_write_text(path, buf.getvalue())


# ----------------------------------------------------------------------------- sentences

def _effect(t: StatTest) -> str:
    """The effect of one test in words: estimate [CI], relative, margin."""
    rel = f" ({t.relative:+.1%})" if math.isfinite(t.relative) else ""
    return f"{t.estimate:+.3g} [{_fmt(t.ci_low)}, {_fmt(t.ci_high)}]{rel}, margin ±{_fmt(t.margin)}"


def _test_row(a: Analysis, t: StatTest) -> list[str]:
    power = _fmt(t.power, 2) if t.verdict == "inconclusive" else ""
    return [short_label(a, t.cell) if t.cell in {c.label for c in a.data.cells} else t.cell, t.endpoint,
            t.variant or "-", _fmt(t.variant_mean), _fmt(t.baseline_mean), _effect(t),
            t.test + ("" if t.paired else ", unpaired"), f"{t.n}", _p(t.p), _p(t.p_adjusted), _p(t.p_tost_adjusted),
            power, f"**{t.verdict}**", t.note]


_TEST_HEADER = ["condition", "endpoint", "variant", "variant mean", "baseline mean", "difference [95% CI], margin",
                "test", "n", "p", "Holm p", "TOST Holm p", "power", "verdict", "note"]


def _finding_lines(a: Analysis, f: Finding) -> list[str]:
    lines = [f"### {f.claim}", "",
             f"`{f.id}`: **{f.verdict}** ({f.outcome}"
             + (f"; the claim is supported by *{f.supports}*" if f.supports else "") + f"). {f.summary}.", ""]
    lines += [f"- Endpoint: {f.endpoint}.", f"- Margin: {f.margin}. Family: {f.family}."]
    lines += [f"- {n}." for n in f.notes]
    shown = [t for t in f.tests if t.role in ("primary", "secondary", "outside regime")]
    if shown and f.verdict != "descriptive":
        lines += ["", _md_table(_TEST_HEADER + ["role"], [_test_row(a, t) + [t.role] for t in shown])]
    elif shown:
        lines += ["", _md_table(["condition", "variant", "endpoint", "value [95% CI]", "n", "note"],
                                [[short_label(a, t.cell), t.variant, t.endpoint,
                                  f"{_fmt(t.estimate)} [{_fmt(t.ci_low)}, {_fmt(t.ci_high)}]", str(t.n), t.note]
                                 for t in shown])]
    return lines + [""]


def _method(a: Analysis, spec: StudySpec) -> list[str]:
    """The method, with every count taken from the tests actually made."""
    plan = spec.plan
    tested = [t for f in a.findings for t in f.tests if t.role == "primary" and math.isfinite(t.p)] + \
        [t for t in a.exploratory if math.isfinite(t.p)]
    ns = sorted({t.n for t in tested if t.paired})
    unpaired = sorted({t.n for t in tested if not t.paired})
    n_text = ", ".join(f"{n} seeds (smallest two-sided sign-flip p {2 / 2**n:.2g})" for n in ns) or "none"
    families = sorted({len([t for t in f.tests if t.role == "primary" and math.isfinite(t.p)]) for f in a.findings
                       if f.kind not in ("control", "descriptive")})
    lines = ["## Method", ""]
    if spec.plan_note:
        lines += [f"- Declaration: {spec.plan_note}"]
    lines += [
        f"- One value per seed and endpoint (runs of one seed averaged first). Endpoints, declared in the spec: "
        + "; ".join(f"`{e.name}` = {e.describe()}" for e in plan.endpoints.values()) + ".",
        f"- Paired on seeds (common random numbers: a seed gives every variant the same initialisation and random "
        f"stream): the per-seed differences are tested by an exact sign-flip permutation test (all 2^n sign patterns "
        f"up to n = 16, Monte Carlo with its standard error beyond), with Wilcoxon's signed-rank test as a check, and "
        f"their mean gets a 95% studentized-bootstrap interval. Paired comparisons here have {n_text}"
        + (f"; unpaired ones (different seeds on the two sides: exact permutation or Mann-Whitney tests) "
           f"{', '.join(map(str, unpaired))} values on the smaller side" if unpaired else "") + ".",
        "- Verdicts: *better*/*worse* when the difference test rejects after Holm's correction over the claim's "
        "family and the estimate is at least the margin; *equivalent* when the two one-sided tests (TOST, sign-flip, "
        "Holm over the family) put the difference inside +-margin; *inconclusive* otherwise, with the power of the "
        "paired test at Holm's first-step level to detect the margin; *identical* only for runs equal bit for bit. "
        "No verdict comes from a difference smaller than the margin.",
        "- Families: every test behind one claim's verdict" + (f" ({', '.join(map(str, families))} tests per claim)"
                                                              if families else "")
        + f"; alpha = {plan.alpha:g}. Controls are reported as controls and never pooled. The exploratory table "
        "(every variant against the baseline in every condition) corrects within each condition and endpoint and "
        "decides no claim.",
        "- p-sweeps: Page's trend test (two-sided) on the per-seed values across p, with the per-seed least-squares "
        "slope times the p range as the effect; an interior optimum at p = 0 by the intersection-union of two "
        "one-sided sign-flip tests against its neighbours. Interactions: the change of the per-seed gap (variant "
        "minus baseline) from the first to the last level of the factor, paired on seeds, plus Page's test with 3 "
        "or more levels.",
    ]
    if plan.regime.coincide_above is not None:
        lines.append(f"- Regime: a condition whose median token-weight ESS of {plan.regime.variant} is above "
                     f"{plan.regime.coincide_above:g} is labelled \"the means coincide here\" and kept out of verdicts.")
    return lines + [""]


def _regime_lines(a: Analysis) -> list[str]:
    reg = a.data.spec.plan.regime
    rows = []
    for c in a.data.cells:
        labels = [x for x in ("control" if c.control else "", "the means coincide here" if c.coincide else "",
                              "saturated" if c.saturated else "") if x]
        rows.append([short_label(a, c.label), _fmt(c.ess), ", ".join(labels) or "-"])
    return ["## Regime", "",
            f"Median over the runs of {reg.variant} of the run-mean token-weight ESS (`{reg.ess_metric}`; ESS ~ "
            "exp(-p^2 sigma^2) for within-sequence log-ratio spread sigma: near 1 every mean gives nearly the same "
            "gradient).", "", _md_table(["condition", f"ESS ({reg.variant})", "labels"], rows), ""]


def _summary_rows(a: Analysis) -> list[dict[str, Any]]:
    out = []
    for s in a.summaries:
        row: dict[str, Any] = {"cell": s.cell, "variant": s.variant, "n": s.n, "seeds": list(s.seeds)}
        for name, (m, lo, hi, cens) in s.endpoints.items():
            row.update({f"{name}_mean": m, f"{name}_lo": lo, f"{name}_hi": hi})
            if a.data.spec.plan.endpoints[name].kind == "to_threshold":
                row[f"{name}_censored"] = cens
        row.update({"collapsed": s.collapsed, **s.columns, "stopped": s.stopped})  # columns: means over seeds
        out.append(row)
    return out


def _test_records(a: Analysis) -> list[dict[str, Any]]:
    rows = [{"finding": f.id, **asdict(t)} for f in a.findings for t in f.tests]
    return rows + [{"finding": "", **asdict(t)} for t in a.exploratory]


def _readme(a: Analysis, spec: StudySpec, figures: dict[str, Path], out_dir: Path, n_planned: int,
            versions: dict[str, int], current: str, command: str, manifest: dict[str, Any]) -> str:
    data = a.data
    n_runs = len(data.runs)
    lines = [f"# Study `{spec.name}`", ""]
    if spec.description:
        lines += [spec.description, ""]
    lines += [f"{n_runs} of {n_planned} planned runs finished"
              + (f", {len(data.failed)} failed ({', '.join(data.failed[:5])}{'...' if len(data.failed) > 5 else ''})"
                 if data.failed else "")
              + f"; metric `{spec.metric}`; baseline {_name(spec.baseline) if spec.baseline else 'none'}.", ""]
    claims = [f for f in a.findings if f.kind != "control"]
    lines += ["## Findings", ""]
    lines += [_md_table(["claim", "verdict", "for the claim", "key effect"],
                        [[f"`{f.id}`: {f.claim}", f"**{f.verdict}**", f.outcome, f.summary] for f in claims]), ""]
    for f in claims:
        lines += _finding_lines(a, f)
    controls = [f for f in a.findings if f.kind == "control"]
    if controls:
        lines += ["## Controls", ""]
        lines += [f"- **{f.verdict}**: {f.claim}. {f.summary}." for f in controls] + [""]
    lines += _regime_lines(a)
    lines += ["## Figures", ""]
    for name, path in figures.items():
        lines += [f"![{name}]({Path(path).relative_to(out_dir).as_posix()})", "", f"*{FIGURE_CAPTIONS.get(name, name)}*", ""]
    lines += ["## Conditions", "", _md_table(
        ["condition", "settings", "variants", "runs"],
        [[short_label(a, c.label), ", ".join(f"{k}={v}" for k, v in c.factors.items() if v != "-"),
          ", ".join(c.variants), str(sum(s.n for s in a.summaries if s.cell == c.label))] for c in data.cells]), ""]
    eps = list(spec.plan.endpoints)
    lines += ["## Summary table", "", "Mean over seeds [95% interval]; censored = runs that never reached the threshold.",
              "", _md_table(["condition", "variant", "n"] + eps + ["collapsed", "ESS"],
                            [[short_label(a, s.cell), s.variant, str(s.n)]
                             + [f"{_fmt(s.endpoints[e][0])} [{_fmt(s.endpoints[e][1])}, {_fmt(s.endpoints[e][2])}]"
                                + (f" ({s.endpoints[e][3]} censored)" if s.endpoints[e][3] else "") for e in eps]
                             + [str(s.collapsed), _fmt(s.columns.get("ess_mean", math.nan))] for s in a.summaries]), "",
              "Full tables: [summary.csv](summary.csv), [runs.csv](runs.csv), [comparisons.csv](comparisons.csv) "
              "(every test, exploratory ones included); typed findings: [findings.json](findings.json).", ""]
    lines += _method(a, spec)
    lines += ["## Reproduce", "", "```bash", command, "```", "",
              "Same seeds, same numbers: every run is deterministic on CPU with one thread per run.", "",
              "## Provenance", ""]
    inv = manifest.get("invocations", [])
    prov = inv[-1] if inv else {}
    git = prov.get("git") or {}
    lines += [f"- git commit of the last study invocation: `{git.get('commit')}`"
              + (" (with uncommitted changes)" if git.get("dirty") else ""),
              "- code versions of the results (hash of the source the run function depends on): "
              + ", ".join(f"`{v}` ({n} runs)" for v, n in versions.items()) + f"; the code here is `{current}`"
              + ("" if set(versions) == {current} else
                 " (results of another version are reported as they are; `hmpo study` reruns them)"),
              f"- packages: {', '.join(f'{k} {v}' for k, v in (prov.get('packages') or {}).items())}",
              f"- python {prov.get('python')}, {prov.get('platform')}, executor {prov.get('executor')}", ""]
    return "\n".join(lines)


def write_study_report(study_dir: str | Path, out_dir: str | Path, *, spec: StudySpec | None = None,
                       command: str | None = None) -> StudyReport:
    """Analyse the study in ``study_dir`` under ``spec``'s plan (default: the spec its manifest
    recorded) and write its report into ``out_dir``. ValueError if the directory holds no study."""
    study_dir, out_dir = Path(study_dir), Path(out_dir)
    mpath = study_dir / "manifest.json"
    if not mpath.exists():
        raise ValueError(f"{study_dir} holds no study (no manifest.json); run `hmpo study` first")
    manifest = json.loads(mpath.read_text())
    spec = spec or parse_spec(manifest["spec"])
    planned = spec.runs()
    found = load_results(study_dir)
    records = [found[r.run_id] for r in planned if r.run_id in found and found[r.run_id].get("config_hash") == r.config_hash]
    if not records:
        raise ValueError(f"{study_dir}: no finished runs yet")
    a = analyze(records, spec)
    figures = write_figures(a, out_dir / "figures")
    for old in (out_dir / "figures").glob("*.png"):  # figures an earlier version wrote and this one does not
        if old not in figures.values():
            old.unlink()
    rel = {k: Path(v).relative_to(out_dir).as_posix() for k, v in figures.items()}
    findings = tuple(f if f.figure is None else Finding(**{**f.__dict__, "figure": rel.get(f.figure)})
                     for f in a.findings)
    a = Analysis(a.data, a.summaries, list(findings), a.exploratory)
    versions: dict[str, int] = {}
    for r in records:
        versions[str(r.get("code_version"))] = versions.get(str(r.get("code_version")), 0) + 1
    current = code_version(manifest.get("run_fn") or spec.run_fn or "rl.studies.training:run")
    atomic_write_json(out_dir / "findings.json", findings_document(
        spec.name, list(findings), description=spec.description, metric=spec.metric, baseline=spec.baseline,
        alpha=spec.plan.alpha, n_runs=len(records), n_planned=len(planned), failed=a.data.failed,
        code_versions=versions, current_code_version=current, figures=rel))
    _write_csv(out_dir / "summary.csv", _summary_rows(a))
    _write_csv(out_dir / "runs.csv", a.data.runs)
    _write_csv(out_dir / "comparisons.csv", _test_records(a))
    readme = out_dir / "README.md"
    atomic_write_text(readme, _readme(a, spec, figures, out_dir, len(planned), versions, current,
                                      command or f"hmpo study {spec.name} --out {study_dir}", manifest))
    return StudyReport(readme, out_dir / "findings.json", figures, findings, len(records), len(planned),
                       len(a.data.failed))


# ----------------------------------------------------------------------------- the index

def write_index(reports_dir: str | Path, theory_summary: str = "") -> Path:
    """reports/README.md: links theory.md, claims.md and each study folder with its findings' verdicts."""
    reports_dir = Path(reports_dir)
    lines = ["# HMPO reports", "",
             "Generated by `hmpo report`: the theory checked, the claims ledger, and the convergence studies.", "",
             "## Theory and claims", ""]
    for fname, what in (("theory.md", "derivations of the power-mean theorems, checked against the code"),
                        ("claims.md", "every claim of the seed documents with its verdict and evidence")):
        lines.append(f"- [{fname}]({fname}): {what}" if (reports_dir / fname).exists() else
                     f"- {fname}: not generated in this run ({what})")
    if theory_summary:
        lines.append(f"- theory check: {theory_summary}")
    lines += ["", "## Studies", ""]
    found = sorted(p.parent.name for p in reports_dir.glob("*/findings.json"))
    for name in found:
        doc = json.loads((reports_dir / name / "findings.json").read_text())
        fs = [f for f in read_findings(doc) if f.kind != "control"]
        verdicts = "; ".join(f"{f.id}: {f.verdict}" for f in fs[:6]) + ("; ..." if len(fs) > 6 else "")
        # a training study counts runs; the exact estimator study counts enumerated evaluations
        size = (f"{doc['n_runs']} runs" if doc.get("n_runs") is not None else
                f"{doc['n_rows']} exact evaluations" if doc.get("n_rows") is not None else "size not recorded")
        lines.append(f"- [{name}]({name}/README.md): {size}. {verdicts}")
    if not found:
        lines.append("- none yet: run `hmpo report`")
    path = reports_dir / "README.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def findings_of(reports_dir: str | Path, studies: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Study name -> its findings.json document, for the claims ledger (proofs.run_all(studies=...))."""
    out = {}
    for name in studies:
        path = Path(reports_dir) / name / "findings.json"
        if path.exists():
            out[name] = json.loads(path.read_text())
    return out

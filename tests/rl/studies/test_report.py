"""The report writer renders the analysis: its counts come from the tests made, its files agree."""

from __future__ import annotations

import csv
import json
import re

import pytest

from rl.studies import parse_spec, run_study, write_index, write_study_report
from rl.studies.analysis import analyze
from rl.studies.findings import read_findings
from rl.studies.runner import load_results

SYNTH = "rl.studies.synthetic:run"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    spec = parse_spec({
        "study": {"name": "rep", "metric": "exact_reward", "run_fn": SYNTH, "plan_note": "declared in the test"},
        "base": {"steps": 30, "synthetic_effect": 0.4, "synthetic_noise": 0.0, "synthetic_seed_sd": 0.05,
                 "synthetic_run_noise": 0.004},
        "grid": [{"variant": ["p=1", "p=0", "p=-1"], "off_policy": "4x4", "seeds": 8},
                 {"variant": ["p=1", "p=0", "p=-1"], "off_policy": "1x1", "seeds": 6}],
        "endpoints": {"auc": {"kind": "mean", "margin": 0.01},
                      "samples_to_0.5": {"kind": "to_threshold", "threshold": 0.5, "margin": 0.05, "relative": True}},
        "claims": [{"id": "hmpo-vs-gspo", "kind": "comparison", "variant": "p=-1", "endpoints": ["auc", "samples_to_0.5"],
                    "supports": "better", "where": [{"off_policy": "4x4"}], "figure": "differences"}],
    })
    run_study(spec, tmp / "study", executor="inline", progress=False)
    info = write_study_report(tmp / "study", tmp / "out", spec=spec, command="hmpo study rep")
    return spec, tmp, info


def test_the_method_text_is_generated_from_the_actual_counts(report):
    spec, tmp, info = report
    text = info.readme.read_text()
    method = text[text.index("## Method"):text.index("## Reproduce")]
    # the comparisons have 8 seeds (the claim's condition) and 6 (the other one): the text says so
    assert "8 seeds (smallest two-sided sign-flip p 0.0078)" in method
    assert "6 seeds (smallest two-sided sign-flip p 0.031)" in method
    assert not re.search(r"\b5 seeds|5 vs 5", text)
    assert "2 tests per claim" in method and "declared in the test" in method
    assert "`samples_to_0.5` = samples consumed until `exact_reward` first reaches 0.5" in method


def test_the_files_agree_with_the_analysis(report):
    spec, tmp, info = report
    out = tmp / "out"
    a = analyze(list(load_results(tmp / "study").values()), spec)
    doc = json.loads((out / "findings.json").read_text())
    findings = read_findings(doc)
    assert [f.id for f in findings] == [f.id for f in a.findings] == [f.id for f in info.findings]
    (claim,) = [f for f in findings if f.id == "hmpo-vs-gspo"]
    assert claim.verdict == "worse" and claim.figure == "figures/differences.png" and (out / claim.figure).exists()
    rows = list(csv.DictReader(open(out / "comparisons.csv")))
    assert len(rows) == sum(len(f.tests) for f in a.findings) + len(a.exploratory)
    assert {r["finding"] for r in rows} >= {"hmpo-vs-gspo", ""}
    runs = list(csv.DictReader(open(out / "runs.csv")))
    assert len(runs) == 3 * 8 + 3 * 6 and {"auc", "samples_to_0.5", "samples_to_0.5_censored", "ess_mean", "log_ratio_spread"} <= set(runs[0])
    text = info.readme.read_text()
    assert "`hmpo-vs-gspo`: **worse** (contradicted" in text
    assert text.index("## Findings") < text.index("## Regime") < text.index("## Figures") < text.index("## Method")
    for name in info.figures:
        assert f"figures/{name}.png" in text
    index = write_index(out.parent).read_text()
    assert "[out](out/README.md)" in index and "hmpo-vs-gspo: worse" in index
    assert f"[out](out/README.md): {3 * 8 + 3 * 6} runs." in index


def test_the_index_counts_an_exact_study_by_its_evaluations(tmp_path):
    import json

    (tmp_path / "est").mkdir()
    doc = {"format": "hmpo-findings/2", "study": "est", "n_rows": 120, "findings": []}
    (tmp_path / "est" / "findings.json").write_text(json.dumps(doc))
    index = write_index(tmp_path).read_text()
    assert "[est](est/README.md): 120 exact evaluations." in index and "None" not in index


def test_a_study_without_runs_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no manifest"):
        write_study_report(tmp_path, tmp_path / "r")

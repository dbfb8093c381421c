"""rl/studies/estimator.py: the design, the behaviour draws, the statistics and the findings of the
exact estimator study.

References: scipy.stats (t-tests, Welch), hand-made rows with known differences, closed-form KL
of the factorized policy and exact enumeration, and a tiny run of the real pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from proofs.claims import CLAIMS, MEASURED_BY, StudyFindings
from rl.envs import SequenceBandit
from rl.envs.estimator import kl_per_token, prepare_answers
from rl.studies.estimator import (
    CONTROL, SCHEMA_VERSION, SPEC, VARIANTS, Cell, Finding, UnreachableKL, behaviour_at_kl,
    compare_paired, compare_unpaired, draw_policy, finding_ids, findings, findings_json, load_rows,
    measurable, run, run_cells, solve_scale, variant_kwargs, verdict,
)
from rl.studies.findings import read_findings

#: a design small enough for a test (V = 2, T <= 4, 2 draws) with every kind of cell
TINY = dataclasses.replace(SPEC, vocab=2, draws=2, hidden=2, enum_lengths=(2, 3), mc_lengths=(4,), centre_length=3,
                           kls=(0.0, 0.3), centre_kl=0.3, issue_kl=0.3, taus=(0.0, 1.0), noise_kls=(0.0,),
                           clip_kls=(0.3,), mc_kls=(0.3,), mc_samples=256, mc_min_rewarded=5, noise_draws=2)


def test_the_declared_design():
    cells = SPEC.cells()
    assert len(cells) == len(set(cells))
    # the centre crossings the README describes
    assert {c.kl for c in cells if c.tau == 0 and c.clip == "none" and c.method == "enumeration"} >= set(SPEC.kls)
    assert {c.length for c in cells if c.method == "enumeration"} == set(SPEC.enum_lengths)
    assert {c.length for c in cells if c.method == "monte-carlo"} == {SPEC.centre_length, *SPEC.mc_lengths}
    assert {c.tau for c in cells} == set(SPEC.taus) and {c.clip for c in cells} == set(SPEC.clips)
    assert all(c.policy == "tabular" for c in cells if c.tau > 0 or c.clip != "none" or c.method == "monte-carlo")
    assert SPEC.draws >= 20 and len(SPEC.variants) == 10 and CONTROL in SPEC.variants
    assert SPEC.fingerprint() != TINY.fingerprint()


def test_variant_names_map_to_loss_settings():
    assert variant_kwargs("p=-1") == {"level": "sequence", "p": -1.0}
    assert variant_kwargs("grpo-token") == {"level": "token", "p": 0.0}
    assert variant_kwargs("gmpo") == {"level": "gmpo", "p": 0.0}
    assert variant_kwargs(CONTROL) == {"level": "is-product"}
    for bad in ("rmi", "learnable-p", "luspo"):
        with pytest.raises(ValueError, match="estimator study"):
            variant_kwargs(bad)


# ---- draws ------------------------------------------------------------------------------------------------

def test_solve_scale_finds_the_root_and_reports_unreachable_targets():
    # KL(delta) = 1 - exp(-delta^2): reaches every target below 1, never 1.2
    f = lambda d: 1 - math.exp(-d * d)  # noqa: E731
    for target in (1e-4, 0.3, 0.9):
        d = solve_scale(f, target)
        assert f(d) == pytest.approx(target, rel=1e-4)
    assert solve_scale(f, 0.0) == 0.0
    with pytest.raises(UnreachableKL):
        solve_scale(f, 1.2)


@pytest.mark.parametrize("kind", ["tabular", "autoregressive"])
def test_behaviour_policies_sit_at_the_requested_kl(kind):
    pi = draw_policy(kind, 3, 3, torch.Generator().manual_seed(0), hidden=3)
    env = SequenceBandit(3, 3, "count", target_seed=0)
    base = prepare_answers(env, pi, pi)
    seed = 17
    for kl in (0.5, 0.05):  # the largest first, reusing its direction
        mu, seed = behaviour_at_kl(pi, kl, seed, base)
        # the KL measured by enumeration, independent of the closed form used to solve (tabular)
        assert prepare_answers(env, mu, pi).kl_per_token == pytest.approx(kl, rel=2e-4)
        if kind == "tabular":
            assert kl_per_token(mu, pi) == pytest.approx(kl, rel=2e-4)


def test_draws_are_reproducible():
    a = draw_policy("autoregressive", 3, 4, torch.Generator().manual_seed(5), hidden=4)
    b = draw_policy("autoregressive", 3, 4, torch.Generator().manual_seed(5), hidden=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="policy kind"):
        draw_policy("transformer", 3, 4, torch.Generator())


# ---- statistics -------------------------------------------------------------------------------------------

def _rows(values: dict[str, list[float]], cell: Cell, quantity: str = "cosine") -> list[dict]:
    return [{**dataclasses.asdict(cell), "draw": d, "variant": v, quantity: x, "rel_var": 1.0}
            for v, xs in values.items() for d, x in enumerate(xs)]


def test_paired_comparison_equals_scipy():
    cell = Cell("count", "tabular", 8, 0.2)
    g = np.random.default_rng(0)
    a, b = g.normal(0.9, 0.05, 20), g.normal(0.85, 0.05, 20)
    c = compare_paired(_rows({"p=-1": list(a), "p=0": list(b)}, cell), cell, "p=-1", "p=0")
    ref = stats.ttest_rel(a, b)
    assert c.diff == pytest.approx(float((a - b).mean()), rel=1e-12)
    assert c.p_value == pytest.approx(float(ref.pvalue), rel=1e-9)
    lo, hi = ref.confidence_interval(0.95)
    assert c.ci == pytest.approx((lo, hi), rel=1e-9)
    assert c.n == 20 and c.paired


def test_unpaired_gap_change_equals_welch():
    c8, c2 = Cell("prefix", "tabular", 8, 0.2), Cell("prefix", "tabular", 2, 0.2)
    g = np.random.default_rng(1)
    a8, b8, a2, b2 = (g.normal(m, 0.03, 20) for m in (0.8, 0.9, 0.95, 0.96))
    rows = _rows({"p=-1": list(a8), "p=0": list(b8)}, c8) + _rows({"p=-1": list(a2), "p=0": list(b2)}, c2)
    c = compare_unpaired(rows, c8, c2, "p=-1", "p=0")
    ref = stats.ttest_ind(a8 - b8, a2 - b2, equal_var=False)
    assert c.diff == pytest.approx(float((a8 - b8).mean() - (a2 - b2).mean()), rel=1e-12)
    assert c.p_value == pytest.approx(float(ref.pvalue), rel=1e-9)
    assert c.ci == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-9)


@pytest.mark.parametrize("diffs,adjusted,want", [
    ([0.05] * 20, None, "better"),                   # no spread: an exact difference beyond the margin
    ([0.001] * 20, None, "equivalent"),              # an exact difference inside the margin
    (list(np.linspace(0.03, 0.07, 20)), 0.2, "inconclusive"),  # beyond the margin but not significant after Holm
    (list(np.linspace(-0.07, -0.03, 20)), None, "worse"),
    (list(np.linspace(0.005, 0.015, 20)), None, "equivalent"),  # significant, yet inside the margin
    (list(np.linspace(-0.2, 0.2, 20)), None, "inconclusive"),
])
def test_verdicts_follow_the_declared_rules(diffs, adjusted, want):
    cell = Cell("count", "tabular", 8, 0.2)
    c = compare_paired(_rows({"a": list(np.array(diffs) + 0.5), "b": [0.5] * 20}, cell), cell, "a", "b")
    if adjusted is not None:
        c = dataclasses.replace(c, p_adjusted=adjusted)
    assert verdict(c, margin=0.02, alpha=0.05) == want
    flipped = {"better": "worse", "worse": "better"}.get(want, want)
    assert verdict(c, margin=0.02, alpha=0.05, higher_is_better=False) == flipped


# ---- the pipeline on a tiny design ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_rows():
    return run_cells(TINY, workers=1)


def test_rows_cover_every_cell_draw_and_variant(tiny_rows):
    assert len(tiny_rows) == len(TINY.cells()) * TINY.draws * len(VARIANTS)
    assert {r["policy"] for r in tiny_rows} == {"tabular", "autoregressive"}
    assert {r["method"] for r in tiny_rows} == {"enumeration", "monte-carlo"}
    r = tiny_rows[0]
    assert {"cosine", "scaled_bias", "rel_var", "ess", "mc_error", "rewarded"} <= set(r)
    enum = [r for r in tiny_rows if r["method"] == "enumeration"]
    assert all(r["mc_error"] == 0.0 for r in enum if r["tau"] == 0)
    # the same draw is one pi: grad J does not depend on the variant, the noise, or the clip
    key = lambda r: (r["reward"], r["policy"], r["length"], r["kl"], r["method"], r["draw"])  # noqa: E731
    norms: dict = {}
    for r in tiny_rows:
        norms.setdefault(key(r), set()).add(r["grad_norm"])
    assert all(len(v) == 1 for v in norms.values())


def test_findings_on_the_tiny_design(tiny_rows):
    found = findings(tiny_rows, TINY)
    by = {f.id: f for f in found}
    for fid in ("est-additive-arithmetic-unbiased", "est-control-unbiased", "est-on-policy-length-normalisation"):
        assert by[fid].verdict == "confirmed", by[fid]
    assert by["est-additive-arithmetic-unbiased"].value <= 1e-9
    known = {i for ids in finding_ids(TINY.rewards).values() for i in ids}
    assert {f.id for f in found} <= known
    for f in found:
        assert isinstance(f, Finding)
    doc = findings_json(found, TINY, len(tiny_rows))
    assert doc["design_version"] == SCHEMA_VERSION
    # the document is the general findings schema: it round-trips through rl.studies.findings and the
    # ledger reads it like every study's, with the exact identities as supported findings
    general = {g.id: g for g in read_findings(json.dumps(doc))}
    assert set(general) == set(by)
    assert general["est-control-unbiased"].verdict == "holds" and general["est-control-unbiased"].outcome == "supported"
    ledger = StudyFindings.from_document(doc)
    assert {m.id for m in ledger.findings} == set(by)


def test_monte_carlo_draws_without_rewarded_answers_are_not_measurements(tiny_rows):
    kept = measurable(tiny_rows, TINY)
    gone = [r for r in tiny_rows if r not in kept]
    assert all(r["method"] == "monte-carlo" and r["rewarded"] < TINY.mc_min_rewarded for r in gone)
    assert all(r["rewarded"] >= TINY.mc_min_rewarded for r in kept if r["method"] == "monte-carlo")


def test_run_stores_reuses_and_reports(tmp_path, tiny_rows, monkeypatch):
    import rl.studies.estimator as est

    study, reports = tmp_path / "studies" / "estimator", tmp_path / "reports" / "estimator"
    with pytest.raises(ValueError, match="no stored draws"):
        run(study, reports, spec=TINY, run_missing=False)
    monkeypatch.setattr(est, "run_cells", lambda spec, **kw: tiny_rows)  # computed once, by the fixture
    info = run(study, reports, spec=TINY, workers=1)
    assert info["ran"] and info["rows"] == len(tiny_rows)
    stored = load_rows(study / "draws.csv")
    assert stored == tiny_rows  # floats written with repr: exact round trip, and the run is deterministic
    again = run(study, reports, spec=TINY, run_missing=False)
    assert not again["ran"]
    readme = (reports / "README.md").read_text()
    assert "## What this shows" in readme and "## Where each p is best" in readme
    for fig in ("cosine_vs_kl.png", "variance_vs_p.png", "ess_vs_spread.png", "length.png", "noise.png", "clip.png"):
        assert (reports / "figures" / fig).stat().st_size > 1000
    written = StudyFindings.from_document(json.loads((reports / "findings.json").read_text()))
    assert {m.id for m in written.findings} == {f.id for f in findings(tiny_rows, TINY)}
    assert all(m.outcome in ("supported", "contradicted", "no effect beyond the margin", "inconclusive", "descriptive")
               for m in written.findings)


# ---- the ledger ------------------------------------------------------------------------------------------------

def test_the_ledger_rows_of_the_study_wait_for_its_findings():
    ids = finding_ids()
    claims = {c.id: c for c in CLAIMS}
    for cid, group in (("C000-46", "bias-variance"), ("C000-47", "gradient-flow"), ("C000-48", "sequence-length")):
        c = claims[cid]
        assert c.verdict == "measured" and "estimator" in c.studies()
        assert set(MEASURED_BY[cid]) == set(ids[group])

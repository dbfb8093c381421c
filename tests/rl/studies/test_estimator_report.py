"""rl/studies/estimator_report.py: per-cell summaries and the "where each p is best" table, against
numpy/scipy and hand-made rows whose answer is known."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from rl.studies.estimator import SPEC, Cell
from rl.studies.estimator_report import best_table, summarise

CELL = Cell("prefix", "tabular", SPEC.centre_length, 0.2)


def _rows(cosines: dict[str, list[float]], rel_var: dict[str, list[float]] | None = None, cell: Cell = CELL):
    out = []
    for v, xs in cosines.items():
        for d, x in enumerate(xs):
            out.append({**dataclasses.asdict(cell), "draw": d, "variant": v, "cosine": x,
                        "scaled_bias": math.sqrt(max(0.0, 1 - x * x)), "rel_bias": 0.5,
                        "rel_var": (rel_var or {}).get(v, [1.0] * len(xs))[d], "ess": 0.9, "spread": 0.3,
                        "kl_per_token": 0.2, "mc_error": 0.0})
    return out


def test_summaries_are_means_with_t_intervals_and_geometric_variance():
    g = np.random.default_rng(0)
    cos = g.uniform(0.7, 0.99, 20)
    var = g.lognormal(1.0, 0.5, 20)
    (s,) = summarise(_rows({"p=-1": list(cos)}, {"p=-1": list(var)}))
    assert s.n == 20 and s.cell == CELL and s.variant == "p=-1"
    assert s.cosine == pytest.approx(float(cos.mean()), rel=1e-13)
    ref = stats.t.interval(0.95, 19, loc=cos.mean(), scale=stats.sem(cos))
    assert s.cosine_ci == pytest.approx(ref, rel=1e-12)
    assert s.rel_var == pytest.approx(float(stats.gmean(var)), rel=1e-12)
    lo, hi = stats.t.interval(0.95, 19, loc=np.log(var).mean(), scale=stats.sem(np.log(var)))
    assert s.rel_var_ci == pytest.approx((math.exp(lo), math.exp(hi)), rel=1e-12)


def test_best_table_names_the_highest_cosine_and_joins_identical_estimators():
    n = 20
    base = np.linspace(0.80, 0.90, n)
    rows = _rows({"p=1": list(base + 0.05), "grpo-token": list(base + 0.05), "p=0": list(base),
                  "p=-1": list(base - 0.1), "is-product": [1.0] * n},
                 {"p=1": [5.0] * n, "grpo-token": [5.0] * n, "p=0": [2.0] * n, "p=-1": [1.5] * n,
                  "is-product": [90.0] * n})
    spec = dataclasses.replace(SPEC, policies=("tabular",), rewards=("prefix",), kls=(0.0, 0.2),
                               variants=("p=-1", "p=0", "p=1", "grpo-token", "is-product"))
    (b,) = best_table(rows, summarise(rows), spec)
    assert b["best"] == "p=1 = grpo-token"  # identical on every draw: one estimator
    assert b["runner_up"] == "p=0" and b["diff"] == pytest.approx(0.05, rel=1e-12)
    assert b["verdict"] == "better"          # exactly 0.05 on every draw, above the 0.02 margin
    assert b["lowest_variance"] == "p=-1"    # the control is excluded from "best", not from the data
    assert b["gspo_cosine"] == pytest.approx(float(base.mean()), rel=1e-13)

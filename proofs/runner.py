"""Run every derivation and numeric check; the Python API behind ``hmpo verify`` and ``hmpo report``.

Nothing is cached between runs: each call re-derives every theorem (sympy) and re-draws
the numeric cases (a numpy generator per theorem, spawned from ``seed``, so a theorem's
cases do not depend on which other theorems ran).
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy
import torch

from proofs.catalogue import THEOREMS
from proofs.claims import CLAIMS, resolve, summary
from proofs.core import DEFAULT_IMPL, Impl, RngDrawer, Theorem, TheoremResult, run_theorem

__all__ = ["VerifyResults", "run_all"]


@dataclass
class VerifyResults:
    theorems: list[TheoremResult]
    ledger: list[dict[str, Any]]
    seed: int
    wall_s: float
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.theorems) and all(c["ok"] for c in self.ledger)

    def failures(self) -> list[str]:
        out = [f"{r.theorem.id}: {r.error or 'failed'}" for r in self.theorems if not r.passed]
        out += [f"{c['id']}: evidence {', '.join(c['broken_evidence'])} did not pass" for c in self.ledger if not c["ok"]]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seed": self.seed,
            "wall_s": round(self.wall_s, 3),
            "environment": self.environment,
            "theorems": [r.as_dict() for r in self.theorems],
            "ledger": self.ledger,
            "ledger_summary": summary(self.ledger),
            "failures": self.failures(),
        }


def run_all(
    seed: int = 0,
    *,
    theorems: Sequence[Theorem] | None = None,
    impl: Impl = DEFAULT_IMPL,
    cases_scale: float = 1.0,
    studies: Mapping[str, Any] | None = None,
    tests: Mapping[str, bool] | None = None,
    progress: Callable[[TheoremResult], None] | None = None,
) -> VerifyResults:
    """Derive and check every theorem (or the given ones), then resolve the claims ledger.

    ``cases_scale`` multiplies each theorem's number of numeric cases (at least 1 each).
    ``studies`` maps study names to results, for ledger entries whose evidence is a study;
    ``tests`` maps test files to whether they passed, for ledger entries that cite tests.
    """
    ths = list(THEOREMS if theorems is None else theorems)
    t0 = time.perf_counter()
    seqs = np.random.SeedSequence(seed).spawn(len(THEOREMS))
    index = {th.id: k for k, th in enumerate(THEOREMS)}
    results = []
    for th in ths:
        rng = np.random.default_rng(seqs[index.get(th.id, 0)])
        cases = max(1, int(math.ceil(th.cases * cases_scale)))
        r = run_theorem(th, RngDrawer(rng), impl, cases)
        results.append(r)
        if progress is not None:
            progress(r)
    ledger = resolve(results, studies, CLAIMS, tests) if theorems is None else resolve(results, studies, [
        c for c in CLAIMS if all(t in {th.id for th in ths} for t in c.theorem_ids())], tests)
    env = {"python": platform.python_version(), "sympy": sympy.__version__, "torch": torch.__version__,
           "numpy": np.__version__}
    return VerifyResults(results, ledger, seed, time.perf_counter() - t0, env)

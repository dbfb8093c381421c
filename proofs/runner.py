"""Run every derivation and numeric check; the Python API behind ``hmpo verify`` and ``hmpo report``.

Nothing is cached between runs: each call re-derives every theorem (sympy) and re-draws
the numeric cases (a numpy generator per theorem, spawned from ``seed``, so a theorem's
cases do not depend on which other theorems ran), and runs the ledger's checks of code
outside proofs that the caller supplies (``checks``; ``hmpo verify`` passes
``rl.ledger_checks.CHECKS``).
"""

from __future__ import annotations

import math
import platform
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy
import torch

from proofs.catalogue import THEOREMS
from proofs.claims import CLAIMS, CheckOutcome, Claim, resolve, summary
from proofs.core import DEFAULT_IMPL, Impl, RngDrawer, Theorem, TheoremResult, run_theorem

__all__ = ["VerifyResults", "run_all", "run_checks"]

#: a ledger check: no arguments, returns one line saying what it established, raises when it fails
Check = Callable[[], str]


@dataclass
class VerifyResults:
    theorems: list[TheoremResult]
    ledger: list[dict[str, Any]]
    seed: int
    wall_s: float
    environment: dict[str, str] = field(default_factory=dict)
    checks: list[CheckOutcome] = field(default_factory=list)

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
            "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail, "seconds": round(c.seconds, 3)}
                       for c in self.checks],
            "failures": self.failures(),
        }


def run_checks(checks: Mapping[str, Check], claims: Sequence[Claim]) -> dict[str, CheckOutcome]:
    """Run each supplied check that one of ``claims`` cites; an exception is a failed check."""
    cited = {k for c in claims for k in c.checks()}
    out = {}
    for name in sorted(cited & set(checks)):
        t0 = time.perf_counter()
        try:
            detail, passed = str(checks[name]()), True
        except Exception as exc:
            last = traceback.extract_tb(exc.__traceback__)[-1]
            detail, passed = f"{type(exc).__name__}: {exc} ({last.filename}:{last.lineno})", False
        out[name] = CheckOutcome(name, passed, detail, time.perf_counter() - t0)
    return out


def run_all(
    seed: int = 0,
    *,
    theorems: Sequence[Theorem] | None = None,
    impl: Impl = DEFAULT_IMPL,
    cases_scale: float = 1.0,
    studies: Mapping[str, Any] | None = None,
    checks: Mapping[str, Check] | None = None,
    progress: Callable[[TheoremResult], None] | None = None,
) -> VerifyResults:
    """Derive and check every theorem (or the given ones), run the ledger's checks, then resolve the claims ledger.

    ``cases_scale`` multiplies each theorem's number of numeric cases (at least 1 each).
    ``studies`` maps study names to results, for ledger entries whose evidence is a study;
    ``checks`` maps check names to checks (:data:`Check`), for ledger entries that cite
    ``check: <name>``; a cited check that is not supplied leaves its claim open. With
    ``theorems`` given, only the claims whose theorems all ran are resolved.
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
    ran = {th.id for th in ths}
    claims = [c for c in CLAIMS if all(t in ran for t in c.theorem_ids())]
    outcomes = run_checks(checks or {}, claims)
    ledger = resolve(results, studies, claims, outcomes)
    env = {"python": platform.python_version(), "sympy": sympy.__version__, "torch": torch.__version__,
           "numpy": np.__version__}
    return VerifyResults(results, ledger, seed, time.perf_counter() - t0, env, list(outcomes.values()))

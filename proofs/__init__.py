"""proofs: sympy derivations of the power-mean theorems, checked against the torch code, and the claims ledger.

Public API (used by ``hmpo verify`` and ``hmpo report``)::

    from proofs import run_all, write_reports
    res = run_all(seed=0)          # derive every theorem, run every numeric check, resolve the ledger
    res = run_all(checks=rl.ledger_checks.CHECKS)   # also run the ledger's checks of rl code
    res.ok                          # False if any derivation or check failed
    write_reports(res, "reports")  # theory.md, claims.md, figures/theory/*.png

A theorem is data (:class:`Theorem`); :data:`THEOREMS` is the catalogue and
:data:`CLAIMS` the ledger of every claim in the seed documents. :class:`Impl` names the
project functions the numeric checks certify; substitute one to see a check bite.
"""

from proofs.catalogue import BY_ID, THEOREMS
from proofs.claims import CLAIMS, VERDICTS, CheckOutcome, Claim, resolve, summary
from proofs.core import (
    DEFAULT_IMPL,
    Case,
    CheckResult,
    Derivation,
    DerivationError,
    Drawer,
    Impl,
    RngDrawer,
    Status,
    Step,
    StepKind,
    Theorem,
    TheoremResult,
    check_theorem,
    run_theorem,
)
from proofs.runner import VerifyResults, run_all, run_checks


def write_reports(results: VerifyResults, out_dir: str = "reports") -> list:
    """Write reports/theory.md, reports/claims.md and the PNG figures (imports matplotlib lazily)."""
    from proofs.report import write_reports as _write

    return _write(results, out_dir)


__all__ = [
    "BY_ID",
    "CLAIMS",
    "Case",
    "CheckOutcome",
    "CheckResult",
    "Claim",
    "DEFAULT_IMPL",
    "Derivation",
    "DerivationError",
    "Drawer",
    "Impl",
    "RngDrawer",
    "Status",
    "Step",
    "StepKind",
    "THEOREMS",
    "Theorem",
    "TheoremResult",
    "VERDICTS",
    "VerifyResults",
    "check_theorem",
    "resolve",
    "run_all",
    "run_checks",
    "run_theorem",
    "summary",
    "write_reports",
]

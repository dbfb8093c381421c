"""proofs/report.py: theory.md marks which derivation steps sympy checked; claims.md shows what a check established."""

from __future__ import annotations

import numpy as np

from proofs import BY_ID, CLAIMS, CheckOutcome, RngDrawer, resolve, run_theorem
from proofs.core import TheoremResult
from proofs.report import claims_markdown, theory_markdown
from proofs.runner import VerifyResults


def test_theory_marks_remarks_and_key_steps():
    th = BY_ID["T2-monotone"]
    r = run_theorem(th, RngDrawer(np.random.default_rng(0)), cases=1)
    md = theory_markdown(VerifyResults([r], [], 0, 0.0), fig_rel=None)
    section = md.split("### T2-monotone", 1)[1]
    items = [ln for ln in section.splitlines() if ln[:1].isdigit() and ". " in ln]
    assert len(items) == len(r.derivation.steps)
    key = next(ln for ln in items if "d log M_p/dp = KL(pi_p \\|\\| w) / p^2" in ln)
    assert key.endswith("sympy reduces the difference to 0 **(key step)**")
    remarks = [ln for ln in items if ln.endswith("*(remark)*")]
    assert len(remarks) == sum(not s.verified for s in r.derivation.steps) > 0
    assert not any(ln.endswith("*(remark)*") and "sympy" in ln for ln in items)


def test_claims_markdown_shows_the_check_outcome(derivations):
    results = [TheoremResult(th, derivations[tid], None, 0.0, 0.0) for tid, th in BY_ID.items()]
    for outcome, verdict, shown in ((CheckOutcome("muonclip-qk-cap", True, "every logit <= tau"), "**conditional**",
                                     "check `muonclip-qk-cap` passed: every logit <= tau"),
                                    (CheckOutcome("muonclip-qk-cap", False, "AssertionError: 130 > tau"), "**open**",
                                     "check `muonclip-qk-cap` **FAILED**: AssertionError: 130 > tau")):
        led = resolve(results, checks={"muonclip-qk-cap": outcome})
        md = claims_markdown(VerifyResults([], led, 0, 0.0))
        row = next(ln for ln in md.splitlines() if ln.startswith("| C001-10 "))
        assert verdict in row and shown in row
    led = resolve(results)
    row = next(ln for ln in claims_markdown(VerifyResults([], led, 0, 0.0)).splitlines() if ln.startswith("| C001-10 "))
    assert "**open** (declared conditional)" in row and "check muonclip-qk-cap, which did not run" in row
    assert len(led) == len(CLAIMS)

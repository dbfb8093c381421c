"""The claims ledger: every claim of the three seed documents, with a verdict and its evidence.

Verdicts: ``proved``, ``refuted``, ``conditional`` (true only under a stated condition),
``measured`` (a study figure), ``open``. Evidence is a tuple of theorem ids,
``"study: <name>"`` placeholders that the studies fill, and ``"test: <path>"`` test files
of the suite (for code outside proofs, which proofs does not import). The verdict written
here is a *claim about the evidence*; :func:`resolve` earns it in each run: a ``proved``,
``refuted`` or ``conditional`` verdict stands only if every theorem it cites passed in
this run with a fitting status (``proved`` needs a proved theorem; ``refuted`` and
``conditional`` need a theorem or a test), otherwise it is reported as ``open`` and marked
broken, and ``hmpo verify`` fails. Cited tests count only where their results are supplied
(``tests``: path -> passed); until then the claim is ``open`` but not broken, and a failed
one breaks it. ``measured`` stays ``open`` until a study result is supplied.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from proofs.core import Status, TheoremResult

__all__ = ["Claim", "CLAIMS", "VERDICTS", "REQUIRED", "resolve", "summary"]

VERDICTS = ("proved", "refuted", "conditional", "measured", "open")
#: evidence prefixes that are not theorem ids
EVIDENCE_KINDS = ("study:", "test:")


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    source: str  # seed file and section
    verdict: str
    evidence: tuple[str, ...]
    note: str = ""

    def theorem_ids(self) -> list[str]:
        return [e for e in self.evidence if not e.startswith(EVIDENCE_KINDS)]

    def studies(self) -> list[str]:
        return self._of("study:")

    def tests(self) -> list[str]:
        return self._of("test:")

    def _of(self, kind: str) -> list[str]:
        return [e.split(":", 1)[1].strip() for e in self.evidence if e.startswith(kind)]


Row = tuple[int, str, str, str, tuple[str, ...], str]  # (NN, claim, section, verdict, evidence, note)


def _ledger(seed: str, document: str, rows: list[Row]) -> list[Claim]:
    """Claims ``C<seed>-NN`` of one seed document from rows (NN, claim, section, verdict, evidence, note)."""
    return [Claim(f"C{seed}-{k:02d}", claim, f"{seed} {document} / {where}", verdict, evidence, note)
            for k, claim, where, verdict, evidence, note in rows]


SEED_000: list[Row] = [
    (1, "GRPO uses the arithmetic mean of token-level importance ratios",
     "The Mean Hierarchy / 1. GRPO", "conditional", ("T10-on-policy", "T9-seq-gradient"),
     "True of the unclipped surrogate with per-sequence token-mean aggregation (sum_t A r_t / T = A M_1(r)); GRPO clips "
     "each token separately, so the clipped objective is not a function of M_1(r). On-policy all choices coincide (T10)."),
    (2, "GSPO uses the geometric mean exp(mean log r) = (pi(y|x)/pi_old(y|x))^(1/|y|)",
     "The Mean Hierarchy / 2. GSPO", "proved", ("T1-limits",),
     "M_0 is the geometric mean (T1); exp(mean log r_t) = (prod r_t)^(1/T) and prod r_t is the sequence likelihood ratio."),
    (3, "GRPO weights tokens unequally", "The Mean Hierarchy / 1. GRPO (problem)", "proved",
     ("T9-seq-gradient", "T3-sensitivity"),
     "Token-level GRPO's gradient weights token t by r_t/T (p = 1 sensitivities, T3/T9)."),
    (4, "Unequal token weights cause GRPO's instability", "The Mean Hierarchy / 1. GRPO (problem)", "open",
     ("study: stability",), "A causal claim about training; needs the stability study (loss/gradient variance, reward curves)."),
    (5, "GSPO weights every token equally", "The Mean Hierarchy / 2. GSPO (benefit)", "proved",
     ("T9-seq-gradient",), "At p = 0 the sensitivities are w_t = 1/T whatever the ratios (T9)."),
    (6, "Equal token weighting stabilises training (GSPO)", "The Mean Hierarchy / 2. GSPO (benefit)", "open",
     ("study: stability",), "Needs the stability study."),
    (7, "The harmonic ratio is |y| / sum_t (pi_old/pi)", "The Mean Hierarchy / 3. Missing: Harmonic", "proved",
     ("T5-homogeneity-duality",), "H = 1/A(1/r) by duality (T5): the formula is M_{-1}."),
    (8, "The harmonic mean is dominated by the smallest ratios", "The Mean Hierarchy / 3. Properties", "proved",
     ("T11-breakdown", "T3-sensitivity"),
     "Its sensitivities are softmax(-log r): the smallest ratio gets the largest weight, and weight 1 in the limit r -> 0 (T11)."),
    (9, "The harmonic mean is robust to outliers", "The Mean Hierarchy / 3. Properties", "conditional",
     ("T11-breakdown",),
     "Only to large outliers: one huge ratio leaves H bounded by n / sum of the others' inverses; one vanishing ratio drives "
     "H to 0 and takes all of the gradient. The arithmetic mean is the mirror image."),
    (10, "The geometric mean is the limit of alternately taking arithmetic and harmonic means of two numbers",
     "Key Mathematical Insight", "proved", ("T6-pair-iteration",),
     "For two numbers a, b: the limit is sqrt(ab), quadratically (T6)."),
    (11, "Arithmetic, geometric and harmonic means form a natural progression for optimization algorithms",
     "Key Mathematical Insight", "open", ("T2-monotone", "study: mean-sweep"),
     "The ordering H <= G <= A (M_p increasing in p) is proved (T2); that it is a 'natural progression for optimization' "
     "is a hypothesis for the p-sweep study."),
    (12, "harmonic_importance_ratio (exp, 1/ratios, len/sum) computes the harmonic sequence ratio",
     "1. HMPO / code", "conditional", ("T11-breakdown", "T9-seq-gradient"),
     "Right for one unpadded sequence of moderate log-ratios. With padding, len() counts pad tokens and exp(NaN) leaks; "
     "exp/1/x overflows for |log r| > 709. The log-space, masked log_power_mean is exact there (T9 and T11 checks)."),
    (13, "HMPO is conservative: dominated by the most off-policy tokens", "1. HMPO / Properties",
     "conditional", ("T11-breakdown",),
     "Dominated by the tokens whose probability fell most (smallest r); tokens whose probability rose most are the ones it ignores."),
    (14, "HMPO is less sensitive to extreme outliers than the arithmetic mean", "1. HMPO / Properties",
     "conditional", ("T11-breakdown",), "For large outliers yes (bounded); for vanishing ratios it is more sensitive (-> 0)."),
    (15, "HMPO is more stable than GSPO", "1. HMPO / Properties", "open", ("study: stability",),
     "To be measured: same tasks, seeds and off-policy degree for p = -1 and p = 0."),
    (16, "HMPO has better sample efficiency than GSPO (question)", "1. HMPO / Research Questions", "open",
     ("study: sample-efficiency",), "To be measured."),
    (17, "The mean matters for distribution shift / off-policy corrections", "1. HMPO / Research Questions",
     "conditional", ("T10-on-policy", "study: off-policy-degree"),
     "On-policy every p gives the same gradient (T10), so any difference is an off-policy effect; its size is for the study."),
    (18, "HMPO has convergence guarantees (question)", "1. HMPO / Research Questions", "open", (),
     "No guarantee is derived here."),
    (19, "Adaptive mean selection by a stability metric helps training", "2. Adaptive Mean Selection", "open",
     ("study: adaptive-mean",), "To be measured."),
    (20, "The recursive mean iteration on ratios (RMI-PO) converges to the geometric mean",
     "3. Recursive Mean Iterations", "refuted", ("T7R-rmi-not-geometric", "T7-ah-from-AH"),
     "For n > 2 it converges to sqrt(A H), equal to G iff sum sinh(log r - mean log r) = 0; (1, 1, 4): 1.63299 vs 1.58740."),
    (21, "RMI approaches its limit in a controlled way (num_iterations as a knob)", "3. Recursive Mean Iterations",
     "conditional", ("T6-pair-iteration",),
     "The iterates interpolate between (A, H) and sqrt(AH) but the gap squares each step (T6): after 3-5 steps the knob "
     "does nothing at float precision."),
    (22, "Power-mean unification: p = 1 arithmetic, p -> 0 geometric, p = -1 harmonic", "4. Generalized Power Mean",
     "proved", ("T1-limits",), "The p -> 0 limit is the geometric mean (T1); p = +-1 are the definitions."),
    (23, "p can be a learnable parameter", "4. Generalized Power Mean", "proved", ("T13-learnable-p",),
     "dJ/dp = A s KL/p^2 (0 where clipped), finite at p = 0; on-policy p gets no gradient (T13)."),
    (24, "Learning or scheduling p improves convergence", "4. Generalized Power Mean", "open",
     ("study: learnable-p",), "T13 predicts the drift (sign of A, clip boundaries); the benefit is for the study."),
    (25, "Different p for different sequence positions helps", "4. Generalized Power Mean", "open",
     ("study: multiscale",), "To be measured."),
    (26, "Multi-scale means (token harmonic, phrase geometric, sequence arithmetic) help", "5. Multi-Scale",
     "open", ("study: multiscale",), "To be measured."),
    (27, "The arithmetic mean maximises expected reward", "6. Information Theory", "conditional",
     ("T10-on-policy",),
     "The token-level arithmetic surrogate is the importance-sampling estimate of the expected advantage; but on-policy every "
     "p has the same gradient (T10), so no mean is singled out to first order."),
    (28, "The geometric mean balances exploration and exploitation", "6. Information Theory", "open",
     ("study: entropy",), "No formal content to prove; the entropy curves of the study can speak to it."),
    (29, "The harmonic mean minimises worst-case regret", "6. Information Theory", "open", ("T1-limits",),
     "No theorem: the worst case (minimum) is p = -inf (T1), not p = -1; no regret bound is derived."),
    (30, "The harmonic mean is naturally risk-averse", "7. Risk-Averse RL", "proved", ("T14-risk",),
     "M_{-1} is the certainty equivalent of CRRA utility with relative risk aversion 2 (T14)."),
    (31, "Harmonic means suit safety-critical generation / conservative fine-tuning", "7. Risk-Averse RL",
     "open", ("study: stability",), "Application claim; nothing here measures safety."),
    (32, "How clipping should work with harmonic means (question)", "Specific Technical Questions / 1",
     "proved", ("T12-clipping",),
     "The same [1-eps, 1+eps] clip bites at a p-dependent place: window shifted by -p Var/2 in mean log-ratio (T12)."),
    (33, "Harmonic means are numerically unstable with near-zero ratios", "Specific Technical Questions / 2",
     "conditional", ("T11-breakdown",),
     "The value is exact in log space down to ratios of e^-700 (T11 check); the instability is of the objective: the vanishing "
     "token takes the whole gradient and H -> 0."),
    (34, "Gradients flow differently through the three means", "Specific Technical Questions / 3", "proved",
     ("T9-seq-gradient",), "Token t is weighted by s softmax(p log r)_t (T9)."),
    (35, "Sequence length changes the relative performance of the means", "Specific Technical Questions / 4",
     "open", ("T12-clipping", "study: sequence-length"),
     "Theory: the means separate through Var(log r) (T4, T12); the effect on training is for the study."),
    (36, "Preferences between means change with model size (1B vs 70B)", "Specific Technical Questions / 5",
     "open", (), "Not measurable on this project's machines (tiny models only)."),
    (37, "The AGM iteration is the relevant classical algorithm", "Broader Research Connections / 1",
     "refuted", ("T8-agm-different",),
     "The seeds' iteration is the arithmetic-harmonic one; Gauss's AGM is different and converges above sqrt(ab) (T8)."),
    (38, "Mean inequalities: harmonic <= geometric <= arithmetic", "Broader Research Connections / 1",
     "proved", ("T2-monotone",), "With equality iff all ratios are equal (T2)."),
    (39, "The harmonic mean is a robust estimator (robust statistics)", "Broader Research Connections / 3",
     "conditional", ("T11-breakdown",), "Bounded under large outliers only; one vanishing value breaks it down (T11)."),
    (40, "Different means as ensemble voters / Pareto-optimal combinations", "Broader Research Connections / 2, 4",
     "open", ("study: mean-sweep",), "Programme item."),
]

SEED_001: list[Row] = [
    (1, "GSPO (geometric) is the convergence point, the natural balance between arithmetic and harmonic",
     "preamble", "conditional", ("T6-pair-iteration", "T7-ah-from-AH"),
     "For two numbers the A-H iteration converges to their G (T6); started from A(x), H(x) of n > 2 ratios it converges to "
     "sqrt(AH), which is G(x) only for log-symmetric x (T7)."),
    (2, "Harmonic mean ratios n / sum 1/ratio_i", "What This Is / 1", "proved", ("T5-homogeneity-duality",),
     "Definition of M_{-1}; H = 1/A(1/x) (T5)."),
    (3, "Power means unify all three approaches as special cases", "What This Is / 2; Mathematical Foundation",
     "proved", ("T1-limits",), "p = 1, p -> 0 (T1), p = -1."),
    (4, "The classical arithmetic-geometric mean algorithm relates these approaches", "What This Is / 3",
     "refuted", ("T8-agm-different",), "The iteration meant is arithmetic-harmonic; Gauss's AGM is a different one (T8)."),
    (5, "Harmonic <= Geometric <= Arithmetic", "Mathematical Foundation", "proved", ("T2-monotone",), ""),
    (6, "Arithmetic is risk-seeking, geometric risk-neutral, harmonic risk-averse", "Mathematical Foundation",
     "refuted", ("T14-risk",),
     "As certainty equivalents: arithmetic is risk-neutral, geometric (Kelly) has relative risk aversion 1, harmonic 2; only "
     "p > 1 is risk-seeking (T14). The ordering is right, the labels are shifted by one."),
    (7, "Arithmetic is dominated by the largest values, harmonic by the smallest", "Mathematical Foundation",
     "proved", ("T3-sensitivity", "T11-breakdown"), "Sensitivities softmax(p log x): p = 1 weights by x, p = -1 by 1/x (T3)."),
    (8, "Iterating agm_step(a, h) converges to the geometric mean sqrt(a0 h0)", "Key Insight", "conditional",
     ("T6-pair-iteration", "T7-ah-from-AH"),
     "It converges to sqrt(a0 h0) (T6); that is the geometric mean of the ratios only if a0, h0 are A and H of log-symmetric "
     "ratios (T7)."),
    (9, "GSPO's effectiveness may come from being the balance point between arithmetic and harmonic", "Key Insight",
     "open", ("study: mean-sweep",), "Hypothesis for the p-sweep study."),
    (10, "The MuonClip (QK-clip) wrapper stabilises attention QK scores", "Using MuonClip", "conditional",
     ("test: tests/rl/test_muonclip.py",),
     "rl.optim.MuonClip (rl/optim/muon_clip.py) rescales W_q, W_k per head after each step; its tests check that every head's "
     "max QK logit is then <= tau on the step's inputs (exactly with recheck=True, Kimi K2's recheck=False only up to the "
     "step's own change) and that heads below tau are untouched. It caps the scores; that the cap stabilises RL training is "
     "not measured here. No theorem: the verdict stands only where the test results are supplied."),
    (11, "The harmonic mean's conservatism suits safety-critical systems", "Potential Applications", "open",
     ("study: stability",), "Application claim, not measured."),
    (12, "Computational cost differences between the means are negligible (drop-in replacements)",
     "Limitations ('Computational efficiency not yet optimized'); implicit in 000's code", "open",
     ("study: cost-of-means",), "To be measured by the benchmark of loss cost per mean (all are one log-sum-exp)."),
]

SEED_002: list[Row] = [
    (1, "All core tests passed (6/6); the implementation works correctly", "Test Results Summary; Conclusion",
     "refuted", ("S1-seed002-table",),
     "The same report prints a power-mean table no input can produce (H > G, not monotone); its own to-do list says "
     "'Fix mean inequality test edge case'."),
    (2, "For (1, 2, 4, 8): A = 3.75, G = 2.828427, H = 2.133333 and H <= G <= A", "AGM Convergence Demonstration",
     "proved", ("S2-seed002-agm-demo", "T2-monotone"), "The printed numbers are right (exact check in S2)."),
    (3, "The AGM iteration on (1, 2, 4, 8) converges to the geometric mean", "AGM Iteration Demonstration",
     "conditional", ("S2-seed002-agm-demo", "T7-ah-from-AH", "T7R-rmi-not-geometric"),
     "True there only because 1, 2, 4, 8 is symmetric in log space; (1, 1, 4) converges to 1.63299, not G = 1.58740."),
    (4, "The printed iteration trace (steps 1-4) is correct", "AGM Iteration Demonstration", "proved",
     ("S2-seed002-agm-demo",), "Agrees with exact rational arithmetic to the 6 printed digits."),
    (5, "The printed power-mean table (p = -2 .. 2)", "Power Mean Framework", "refuted", ("S1-seed002-table",),
     "Not monotone in p and H = 11.67 > G = 1.009; see the violations listed by S1."),
    (6, "GRPO is aggressive and unstable, GSPO balanced and stable, HMPO conservative and robust",
     "Mean Hierarchy Confirmed", "open", ("T2-monotone", "study: stability"),
     "The ordering of the ratios (M_p increasing in p) is proved (T2); 'unstable/stable/robust' is for the stability study."),
    (7, "AGM connection proven: iterating arithmetic <-> harmonic converges to sqrt(a0 h0) = geometric mean",
     "AGM Algorithm Connection Proven", "conditional", ("T6-pair-iteration", "T7R-rmi-not-geometric"),
     "sqrt(a0 h0) yes (T6); '= geometric mean' of the ratios only for log-symmetric inputs (T7R)."),
    (8, "p = 1 is GRPO behaviour, p = 0 GSPO, p = -1 HMPO", "Unified Power Mean Framework", "conditional",
     ("T10-on-policy", "T9-seq-gradient"),
     "At the sequence level p = 0 is GSPO and p = -1 HMPO; p = 1 equals GRPO only unclipped (GRPO clips per token). "
     "On-policy all coincide (T10)."),
    (9, "Negative powers are risk-averse, zero is balanced (Kelly), positive is risk-seeking", "Power Mean Unification Working",
     "conditional", ("T14-risk",),
     "p = 0 is Kelly (log utility) indeed, but risk aversion is 1 - p: every p < 1 is risk-averse, only p > 1 risk-seeking."),
    (10, "Free Energy Principle integration validates advantage conservation", "Key Features", "open", (),
     "No definition is given; nothing to verify."),
    (11, "Learnable power parameter enables adaptive mean selection during training", "Key Features", "proved",
     ("T13-learnable-p",), "The gradient in p exists and is derived (T13); whether it helps is C000-24."),
    (12, "Mathematically sound; AGM convergence verified", "Conclusion", "refuted", ("S1-seed002-table", "T7R-rmi-not-geometric"),
     "Its table contradicts H <= G; its AGM conclusion holds only for log-symmetric inputs."),
    (13, "Power mean unification working (implementation)", "Power Mean Unification Working", "refuted",
     ("S1-seed002-table",), "The implementation's printed output is impossible for any power mean."),
    (14, "Ready for production and for safety-critical domains (medical, legal, finance)", "Ready for Production",
     "open", (), "Nothing in the seeds or here supports it; outside the project's scope."),
    (15, "First-ever HMPO implementation; only known harmonic-mean RL algorithm", "Key Innovations", "open", (),
     "A literature claim, not checkable here."),
]

CLAIMS: list[Claim] = [*_ledger("000", "research notes", SEED_000), *_ledger("001", "README", SEED_001),
                       *_ledger("002", "status report", SEED_002)]

#: claims the issue names explicitly (by id), so the tests can check coverage.
REQUIRED = {
    "mean inequality": "C000-38",
    "GRPO arithmetic / GSPO geometric": "C000-02",
    "equal token weighting stabilises": "C000-06",
    "harmonic dominated by smallest ratios": "C000-08",
    "harmonic robust to outliers (one side)": "C000-09",
    "HMPO more stable than GSPO": "C000-15",
    "two-number iteration converges to G": "C000-10",
    "recursive mean iteration converges to G (false n > 2)": "C000-20",
    "power-mean unification": "C000-22",
    "risk reading of the three means": "C001-06",
    "near-zero ratios make harmonic unstable": "C000-33",
    "information-theory hypotheses": "C000-27",
    "learnable-p proposal": "C000-23",
    "cost differences negligible": "C001-12",
    "002 power-mean table": "C002-05",
    "002 AGM demonstration": "C002-03",
}


def _fits(verdict: str, res: TheoremResult) -> bool:
    if not res.passed:
        return False
    if verdict == "proved":
        return res.status in (Status.PROVED, Status.PROVED_N)
    return res.status in (Status.PROVED, Status.PROVED_N, Status.REFUTED, Status.NUMERIC)


def resolve(results: Iterable[TheoremResult], studies: Mapping[str, Any] | None = None,
            claims: list[Claim] = CLAIMS, tests: Mapping[str, bool] | None = None) -> list[dict[str, Any]]:
    """Each claim with the verdict it earned in this run (see module docstring)."""
    by_id = {r.theorem.id: r for r in results}
    studies = studies or {}
    tests = tests or {}
    out = []
    for c in claims:
        broken = []
        verdict = c.verdict
        if c.verdict in ("proved", "refuted", "conditional"):
            for tid in c.theorem_ids():
                r = by_id.get(tid)
                if r is None or not _fits(c.verdict, r):
                    broken.append(tid)
            broken += [f"test: {t}" for t in c.tests() if t in tests and not tests[t]]
            pending = any(t not in tests for t in c.tests())
            backed = bool(c.theorem_ids()) or (c.verdict != "proved" and bool(c.tests()))
            if broken or pending or not backed:
                verdict = "open"
        elif c.verdict == "measured":
            if not all(s in studies for s in c.studies()):
                verdict = "open"
        out.append({
            "id": c.id,
            "claim": c.claim,
            "source": c.source,
            "declared": c.verdict,
            "verdict": verdict,
            "evidence": list(c.evidence),
            "note": c.note,
            "broken_evidence": broken,
            "ok": not broken,
        })
    return out


def summary(resolved: list[dict[str, Any]]) -> dict[str, int]:
    cnt = Counter(r["verdict"] for r in resolved)
    return {v: cnt.get(v, 0) for v in VERDICTS}

"""The claims ledger: every claim of the three seed documents, with a verdict and its evidence.

Verdicts: ``proved``, ``refuted``, ``conditional`` (true only under a stated condition),
``measured`` (a study figure), ``open``. Evidence is a tuple of theorem ids,
``"study: <name>"`` placeholders that the studies fill, and ``"check: <name>"`` checks of
code outside proofs (which proofs does not import: ``rl.ledger_checks``), which ``hmpo
verify`` runs and passes in as :class:`CheckOutcome` records. The verdict written here is a
*claim about the evidence*; :func:`resolve` earns it in each run: a ``proved``, ``refuted``
or ``conditional`` verdict stands only if every theorem it cites passed in this run with a
fitting status (``proved`` needs a proved theorem; ``refuted`` and ``conditional`` need a
theorem or a check) and every check it cites passed, otherwise it is reported as ``open``
and marked broken, and ``hmpo verify`` fails. A check never earns ``proved`` (it runs one
fixed case). A claim whose check did not run in this report is ``open``, not broken, with a
note naming the check.

``measured`` comes only from the studies: a claim declared ``measured`` names the findings
that answer it (:data:`MEASURED_BY`, finding ids of the studies' findings.json) and earns
``measured`` only where ``studies`` (study name -> :class:`StudyFindings`, read from that
study's findings.json by :meth:`StudyFindings.from_document`, which checks the schema version
:data:`FINDINGS_FORMAT` and reads fixed fields, never prose) supplies at least one of them;
each entry keeps the finding's verdict (better / worse / equivalent / inconclusive / ...),
what it means for the claim (its *outcome*: supported, contradicted, no effect beyond the
margin, inconclusive, ...), its Holm-adjusted p-values, its key effect and its figure. Without
them the claim is ``open``, with a note naming the findings that would settle it. A study never
earns ``proved``, ``refuted`` or ``conditional``: for claims declared so, findings are shown
beside the verdict but do not change it. Theorems a measured claim cites must still pass.
``cite: <reference>`` evidence records a published source (a repository file, a paper) that
settles a literature claim; it backs ``refuted`` and ``conditional`` verdicts, never ``proved``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from proofs.core import Status, TheoremResult

__all__ = ["Claim", "CheckOutcome", "CLAIMS", "VERDICTS", "REQUIRED", "MEASURED_BY", "FINDINGS_FORMAT", "OUTCOMES",
           "MeasuredFinding", "StudyFindings", "resolve", "summary"]

VERDICTS = ("proved", "refuted", "conditional", "measured", "open")
#: evidence prefixes that are not theorem ids
EVIDENCE_KINDS = ("study:", "check:", "cite:")
#: the schema of the studies' findings.json this ledger reads (rl.studies.findings writes it;
#: proofs imports nothing of rl, so the tests hold the two spellings equal)
FINDINGS_FORMAT = "hmpo-findings/2"
#: what a finding's verdict means for its claim (rl.studies.findings.OUTCOMES)
OUTCOMES = ("supported", "contradicted", "no effect beyond the margin", "inconclusive", "mixed", "identical",
            "control failed", "descriptive")


@dataclass(frozen=True)
class MeasuredFinding:
    """The part of one study finding the ledger shows: read from findings.json by fixed fields."""

    id: str
    study: str
    claim: str
    verdict: str
    outcome: str
    summary: str
    figure: str | None
    p_values: tuple[float, ...]   # Holm-adjusted p of the finding's primary tests, smallest first

    @property
    def direction(self) -> str:
        """The outcome, with the verdict where it adds to it ("contradicted: worse")."""
        return self.outcome if self.outcome == self.verdict or self.outcome == "descriptive" else \
            f"{self.outcome}: {self.verdict}"


@dataclass(frozen=True)
class StudyFindings:
    """One study's findings as the ledger reads them, and the reports folder its figures are under."""

    study: str
    findings: tuple[MeasuredFinding, ...]
    reports_dir: str | None = None

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], reports_dir: str | None = None) -> StudyFindings:
        """Read a findings.json document; ValueError for another schema or a missing field."""
        if not isinstance(doc, Mapping) or doc.get("format") != FINDINGS_FORMAT:
            got = doc.get("format") if isinstance(doc, Mapping) else type(doc).__name__
            raise ValueError(f"study findings: expected format {FINDINGS_FORMAT!r}, got {got!r}")
        try:
            study = str(doc["study"])
            out = []
            for f in doc["findings"]:
                if f["outcome"] not in OUTCOMES:
                    raise ValueError(f"study {study!r}: finding {f['id']!r} has outcome {f['outcome']!r}; one of {OUTCOMES}")
                ps = sorted(float(t["p_adjusted"]) for t in f["tests"]
                            if t["role"] == "primary" and isinstance(t["p_adjusted"], (int, float)))
                out.append(MeasuredFinding(id=str(f["id"]), study=study, claim=str(f["claim"]), verdict=str(f["verdict"]),
                                           outcome=str(f["outcome"]), summary=str(f["summary"]), figure=f["figure"],
                                           p_values=tuple(ps)))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"study findings: a finding lacks the field {exc}") from exc
        return cls(study, tuple(out), reports_dir)


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    source: str  # seed file and section
    verdict: str
    evidence: tuple[str, ...]
    note: str = ""
    findings: tuple[str, ...] = ()  # ids in the studies' findings.json that answer this claim

    def theorem_ids(self) -> list[str]:
        return [e for e in self.evidence if not e.startswith(EVIDENCE_KINDS)]

    def studies(self) -> list[str]:
        return self._of("study:")

    def checks(self) -> list[str]:
        return self._of("check:")

    def citations(self) -> list[str]:
        return self._of("cite:")

    def _of(self, kind: str) -> list[str]:
        return [e.split(":", 1)[1].strip() for e in self.evidence if e.startswith(kind)]


@dataclass(frozen=True)
class CheckOutcome:
    """What one ledger check (evidence ``check: <name>``) gave in this run: whether it passed,
    and one line saying what it established or why it failed."""

    name: str
    passed: bool
    detail: str
    seconds: float = 0.0


Row = tuple[int, str, str, str, tuple[str, ...], str]  # (NN, claim, section, verdict, evidence, note)


def _ledger(seed: str, document: str, rows: list[Row]) -> list[Claim]:
    """Claims ``C<seed>-NN`` of one seed document from rows (NN, claim, section, verdict, evidence, note)."""
    return [Claim(cid, claim, f"{seed} {document} / {where}", verdict, evidence, note, MEASURED_BY.get(cid, ()))
            for k, claim, where, verdict, evidence, note in rows for cid in [f"C{seed}-{k:02d}"]]


_STABLE_UNEQUAL = ("arithmetic-less-stable-than-gspo", "grpo-token-less-stable-than-gspo")
_FAST_ARITHMETIC = ("arithmetic-sample-efficiency-vs-gspo",)


def _per_reward(stem: str) -> tuple[str, ...]:
    """One finding id per reward structure of the sequence bandit (the estimator and bandit studies judge each)."""
    return tuple(f"{stem}-{r}" for r in ("count", "all-or-nothing", "prefix"))


#: claim id -> the findings (ids in the studies' findings.json, declared by the study specs of
#: rl.studies.presets) that measure it. Each finding states its claim in the ledger claim's
#: direction, so its outcome (supported, contradicted, ...) reads unchanged.
MEASURED_BY: dict[str, tuple[str, ...]] = {
    "C000-04": _STABLE_UNEQUAL,
    "C000-06": _STABLE_UNEQUAL,
    "C000-11": ("monotone-in-p",),
    "C000-15": ("hmpo-more-stable-than-gspo",),
    "C000-16": ("hmpo-sample-efficiency-vs-gspo", *_per_reward("hmpo-vs-gspo"), "hmpo-vs-gspo-autoregressive"),
    "C000-17": ("off-policy-degree-effect", "policy-lag-effect", "mismatch-effect"),
    "C000-19": ("adaptive-vs-gspo",),
    "C000-24": ("learnable-p-vs-gspo", "learnable-p-where-it-goes", "holderpo-vs-gspo"),
    "C000-26": ("multiscale-vs-gspo",),
    "C000-35": ("sequence-length-effect",),
    "C000-41": (*_FAST_ARITHMETIC, *_per_reward("arithmetic-vs-gspo"), "arithmetic-vs-gspo-autoregressive"),
    "C000-42": ("reward-noise-robustness",),
    "C000-43": ("hmpo-robust-to-staleness", "hmpo-robust-to-mismatch"),
    "C000-44": ("hmpo-sample-efficiency-vs-gspo", "arithmetic-sample-efficiency-vs-gspo", "monotone-in-p",
                "optimizer-effect"),
    "C000-45": ("reward-kind-effect", *_per_reward("hmpo-vs-gspo"), *_per_reward("arithmetic-vs-gspo"),
                "hmpo-vs-gspo-autoregressive", "arithmetic-vs-gspo-autoregressive"),
    "C001-09": ("gspo-interior-optimum",),
    "C001-12": ("cost-of-the-means",),
    "C002-06": (*_STABLE_UNEQUAL, "hmpo-more-stable-than-gspo"),
    "C002-11": ("learnable-p-where-it-goes", "learnable-p-vs-gspo"),
    "C002-16": _FAST_ARITHMETIC,
    # the exact estimator study (rl.studies.estimator.finding_ids, ledger study "estimator")
    "C000-46": (*_per_reward("est-variance-hmpo-vs-gspo"), *_per_reward("est-variance-arithmetic-vs-gspo"),
                *_per_reward("est-variance-is-product-vs-gspo"), *_per_reward("est-bias-variance-tradeoff"),
                "est-control-unbiased"),
    "C000-47": (*_per_reward("est-direction-hmpo-vs-gspo"), *_per_reward("est-direction-arithmetic-vs-gspo"),
                "est-additive-arithmetic-unbiased", "est-on-policy-length-normalisation", "est-noise-only-direction",
                *_per_reward("est-gspo-window"), "est-ess-gaussian-limit"),
    "C000-48": (*_per_reward("est-length-gap"), "est-monte-carlo-agrees"),
}


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
    (4, "Unequal token weights cause GRPO's instability", "The Mean Hierarchy / 1. GRPO (problem)", "measured",
     ("study: stability",),
     "A causal claim. Measured: are p = 1 (token weights r_t/T) and token-level GRPO less stable than GSPO (equal "
     "weights): the largest drawdown of the objective below its running best, paired on seeds, margin declared; "
     "a difference would not by itself show the cause."),
    (5, "GSPO weights every token equally", "The Mean Hierarchy / 2. GSPO (benefit)", "proved",
     ("T9-seq-gradient",), "At p = 0 the sensitivities are w_t = 1/T whatever the ratios (T9)."),
    (6, "Equal token weighting stabilises training (GSPO)", "The Mean Hierarchy / 2. GSPO (benefit)", "measured",
     ("study: stability",),
     "Measured as the converse of C000-04: GSPO against p = 1 and token-level GRPO, by drawdown (paired on seeds)."),
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
     "Key Mathematical Insight", "measured", ("T2-monotone", "study: mean-sweep"),
     "The ordering H <= G <= A (M_p increasing in p) is proved (T2). Measured as a p-sweep: does the endpoint change "
     "monotonically with p (Page's trend test on the per-seed values, the change across the sweep against a declared "
     "margin)?"),
    (12, "harmonic_importance_ratio (exp, 1/ratios, len/sum) computes the harmonic sequence ratio",
     "1. HMPO / code", "conditional", ("T11-breakdown", "T9-seq-gradient"),
     "Right for one unpadded sequence of moderate log-ratios. With padding, len() counts pad tokens and exp(NaN) leaks; "
     "exp/1/x overflows for |log r| > 709. The log-space, masked log_power_mean is exact there (T9 and T11 checks)."),
    (13, "HMPO is conservative: dominated by the most off-policy tokens", "1. HMPO / Properties",
     "conditional", ("T11-breakdown",),
     "Dominated by the tokens whose probability fell most (smallest r); tokens whose probability rose most are the ones it ignores."),
    (14, "HMPO is less sensitive to extreme outliers than the arithmetic mean", "1. HMPO / Properties",
     "conditional", ("T11-breakdown",), "For large outliers yes (bounded); for vanishing ratios it is more sensitive (-> 0)."),
    (15, "HMPO is more stable than GSPO", "1. HMPO / Properties", "measured", ("study: stability",),
     "p = -1 vs p = 0 on common seeds: the largest drawdown of the objective (a collapse = a drawdown past a declared "
     "size that sampling noise does not reach), with a margin, Holm over the conditions tested."),
    (16, "HMPO has better sample efficiency than GSPO (question)", "1. HMPO / Research Questions", "measured",
     ("study: sample-efficiency",),
     "p = -1 vs p = 0, paired on seeds: samples to a fixed threshold of the exact objective (margin 5% of GSPO's) and "
     "mean reward over training (margin 0.01), in the conditions the study isolates it (off-policy; stale behaviour "
     "policy); Holm over those tests; better/worse only beyond the margin, equivalent by TOST."),
    (17, "The mean matters for distribution shift / off-policy corrections", "1. HMPO / Research Questions",
     "measured", ("T10-on-policy", "study: off-policy-degree"),
     "On-policy every p gives the same gradient (T10; the on-policy control is identical bit for bit), so any "
     "difference is an off-policy effect. Measured: does the per-seed gap p = -1 minus p = 0 change, by more than the "
     "margin, from 1x1 to 4x4 epochs x minibatches (which also multiplies the optimizer updates 16-fold: confounded) "
     "and from policy lag 0 to 2?"),
    (18, "HMPO has convergence guarantees (question)", "1. HMPO / Research Questions", "open", (),
     "No guarantee is derived here."),
    (19, "Adaptive mean selection by a stability metric helps training", "2. Adaptive Mean Selection", "measured",
     ("study: adaptive-mean",),
     "Mean reward over training and final reward of the adaptive mean (rl.losses mean='adaptive') against GSPO."),
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
    (24, "Learning or scheduling p improves convergence", "4. Generalized Power Mean", "measured",
     ("study: learnable-p",),
     "T13 predicts the drift (sign of A, clip boundaries). Measured: mean and final reward of a learnable p (started at "
     "0) against fixed p = 0, and where p went. Scheduling p is not measured."),
    (25, "Different p for different sequence positions helps", "4. Generalized Power Mean", "open", (),
     "No study varies p by position: the multi-scale variant (C000-26) uses one exponent within chunks and another "
     "across them, which is not this claim."),
    (26, "Multi-scale means (token harmonic, phrase geometric, sequence arithmetic) help", "5. Multi-Scale",
     "measured", ("study: multiscale",),
     "Measured for the two-scale variant only (harmonic within chunks of 2 tokens, geometric across chunks; "
     "rl.losses mean='multiscale'), mean and final reward against GSPO; the three-scale version is not measured."),
    (27, "The arithmetic mean maximises expected reward", "6. Information Theory", "conditional",
     ("T10-on-policy",),
     "The token-level arithmetic surrogate is the importance-sampling estimate of the expected advantage; but on-policy every "
     "p has the same gradient (T10), so no mean is singled out to first order."),
    (28, "The geometric mean balances exploration and exploitation", "6. Information Theory", "open",
     ("study: entropy",), "No formal content to prove; the entropy curves of the study can speak to it."),
    (29, "The harmonic mean minimises worst-case regret", "6. Information Theory", "open", ("T1-limits",),
     "No theorem: the worst case (minimum) is p = -inf (T1), not p = -1; no regret bound is derived."),
    (30, "The harmonic mean is naturally risk-averse", "7. Risk-Averse RL", "conditional", ("T14-risk",),
     "True if the importance ratios are read as payoffs: M_{-1} is the certainty equivalent of CRRA utility with "
     "relative risk aversion 2 (T14). The ratios are likelihood ratios, not payoffs or wealth, so this is a "
     "reinterpretation, not a property of the policy update."),
    (31, "Harmonic means suit safety-critical generation / conservative fine-tuning", "7. Risk-Averse RL",
     "open", (), "Application claim; nothing here measures safety (the stability study, C000-15, does not)."),
    (32, "How clipping should work with harmonic means (question)", "Specific Technical Questions / 1",
     "open", ("T12-clipping",),
     "A design question. T12 says only where a plain [1-eps, 1+eps] window bites: shifted by -p Var/2 in mean log-ratio "
     "(the studies' clip-side finding measures that shift); how the window should be set for p < 0 is not answered "
     "here (the bias-corrected centre, clip_center, is an option; the training-regime issue compares windows "
     "calibrated per p to an equal clip fraction)."),
    (33, "Harmonic means are numerically unstable with near-zero ratios", "Specific Technical Questions / 2",
     "conditional", ("T11-breakdown",),
     "The value is exact in log space down to ratios of e^-700 (T11 check); the instability is of the objective: the vanishing "
     "token takes the whole gradient and H -> 0."),
    (34, "Gradients flow differently through the three means", "Specific Technical Questions / 3", "proved",
     ("T9-seq-gradient",), "Token t is weighted by s softmax(p log r)_t (T9)."),
    (35, "Sequence length changes the relative performance of the means", "Specific Technical Questions / 4",
     "measured", ("T12-clipping", "study: sequence-length"),
     "Theory: the means separate through Var(log r) (T4, T12). Measured: does the per-seed gap p = -1 minus p = 0 "
     "change with the answer length (shortest to longest, and Page's trend test), other factors fixed?"),
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
    (41, "The arithmetic mean makes fast progress (the adaptive rule's choice when training is stable)",
     "2. Adaptive Mean Selection (code comment)", "measured", ("study: sample-efficiency",),
     "p = 1 vs p = 0: samples to a fixed threshold and mean reward over training, paired on seeds, with margins."),
    (42, "The harmonic mean suits noisy reward signals (robust statistics)", "Broader Research Connections / 3",
     "measured", ("study: reward-noise",),
     "Measured: does Gaussian reward noise (sd 0.5) cost p = -1 less than p = 0, i.e. does the per-seed gap p = -1 "
     "minus p = 0 in mean reward over training rise with the noise by more than the margin?"),
    (43, "The means differ in robustness under distribution shift (HMPO the most robust)", "Metrics to Track / 4",
     "measured", ("study: off-policy-degree",),
     "Measured with two shifts: a stale behaviour policy (lag 0 -> 4) and a training-inference mismatch (noise of sd "
     "tau on the behaviour log-probs, tau 0 -> 1; on the tiny LM a bfloat16 sampler's own log-probs): does the shift "
     "cost p = -1 less than p = 0 (the per-seed gap p = -1 minus p = 0 rises by more than the margin)?"),
    (44, "The means affect optimization landscapes and convergence rates", "Broader Research Connections / 1",
     "measured", ("study: sample-efficiency", "study: mean-sweep"),
     "Measured as convergence speed: samples to a fixed exact J and mean J over training for p = -1 and p = 1 against "
     "p = 0 (the bandit study, three reward structures, mismatch, staleness and reuse; the tiny LM), the p-sweep's "
     "trend, and whether the optimiser (AdamW vs SGD) changes the gap. The landscape itself is measured by the "
     "exact estimator study (C000-46/47: the expected gradient's direction and variance)."),
    (45, "Which mean works best depends on the type of task", "Open Research Questions / 2",
     "measured", ("study: reward-structure",),
     "Measured on the sequence bandit with three reward structures (count: additive, where p = 1 is exactly unbiased "
     "in direction; all-or-nothing; longest correct prefix), 16 paired seeds each: does the gap p = -1 minus p = 0 "
     "change with the reward, and does each mean's comparison with GSPO change sign across rewards?"),
    (46, "Bias-variance tradeoffs across mean types", "Implementation Research Program / Phase 2 / 2",
     "measured", ("TE2-is-product-unbiased", "TE3-additive-arithmetic-unbiased", "TE4-nonadditive-biased",
                  "study: estimator"),
     "Measured by the exact estimator study (reports/estimator; T = 8, 20 paired draws, 0.2 KL per token): the unbiased "
     "is-product control (TE2) pays with a single-answer variance 3000 to 9600 times GSPO's; among the means, p = 1 has "
     "3.5 to 4.6 times GSPO's variance (worse in 14 of 24 cells) and HMPO 28% (count) and 19% (prefix) more, worse at "
     "the 10% margin, not separated for all-or-nothing (worse in 9 of 24 cells). The least biased mean depends on the reward: p = 1 for count (exactly, TE3) and "
     "prefix, GSPO for all-or-nothing. No single trade-off: across p the rank correlation of bias and variance runs "
     "from -0.61 to +0.93 by reward and KL."),
    (47, "Gradients flow differently through harmonic, geometric and arithmetic means (the expected gradient's "
         "direction)", "Specific Technical Questions / 3 (the exact estimator study; C000-34 is the weight formula)",
     "measured", ("T9-seq-gradient", "TE1-estimator-on-policy", "TE3-additive-arithmetic-unbiased",
                  "TE4-nonadditive-biased", "TE5-ess-limit", "TE6-noise-exchangeable", "study: estimator"),
     "Exact expected-gradient direction (reports/estimator): on-policy every mean gives grad J / T (TE1); off-policy "
     "HMPO points further from grad J than GSPO in 20 of 24 cells (0.2 KL, tabular, T = 8: cosine -0.19 count, -0.14 "
     "all-or-nothing, -0.16 prefix); p = 1 is exactly aligned for the additive reward with a factorized policy (TE3), "
     "ahead of GSPO for prefix (+0.03) and behind it for all-or-nothing (-0.24). Mismatch noise alone bends no mean "
     "(TE6); GSPO's 3e-4/4e-4 window costs GSPO 0.19 to 0.81 in cosine at 0.05 KL."),
    (48, "Sequence length changes how far each mean's expected gradient is from the policy gradient",
     "Specific Technical Questions / 4 (the exact estimator study; C000-35 is the training study)", "measured",
     ("TE1-estimator-on-policy", "study: estimator"),
     "At 0.2 KL per token the HMPO minus GSPO cosine gap widens with the answer length: from T = 2 to T = 8 by -0.13 "
     "(count), -0.07 (all-or-nothing) and -0.13 (prefix), each separated after Holm; Monte Carlo at T = 16 to 64 "
     "(factorized policy, 4096 answers) puts it at -0.24 to -0.25 (count) and -0.17 to -0.25 (prefix); all-or-nothing "
     "is not measurable by Monte Carlo beyond T = 8. C000-35 is the training study's side of the question."),
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
     "measured", ("study: mean-sweep",),
     "Measured as a p-sweep: is p = 0 an interior optimum (better than both neighbouring p by more than the margin, "
     "an intersection-union of two one-sided paired tests), or does the endpoint change monotonically with p?"),
    (10, "The MuonClip (QK-clip) wrapper stabilises attention QK scores", "Using MuonClip", "conditional",
     ("check: muonclip-qk-cap",),
     "It caps them: rl.optim.MuonClip rescales W_q, W_k per head after each step, and the check muonclip-qk-cap (run by "
     "hmpo verify) finds every head's max QK logit <= tau on each step's batch after 3 Muon steps, with one head forced to "
     "~1000 (multi-head and grouped-key, rotary models), the clipped head at tau and the other heads stepped exactly as by "
     "plain Muon. Condition: recheck=True (the default); Kimi K2's order (recheck=False) caps only up to the step's own "
     "change. That the cap stabilises RL training is not measured here."),
    (11, "The harmonic mean's conservatism suits safety-critical systems", "Potential Applications", "open",
     (), "Application claim, not measured (the stability study, C000-15, does not measure safety)."),
    (12, "Computational cost differences between the means are negligible (drop-in replacements)",
     "Limitations ('Computational efficiency not yet optimized'); implicit in 000's code", "measured",
     ("study: cost-of-means",),
     "Measured as wall-clock seconds per training step of each mean relative to GSPO, without a test; the loss alone "
     "is timed by benchmarks/bench_losses.py (all means are one log-sum-exp)."),
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
     "Mean Hierarchy Confirmed", "measured", ("T2-monotone", "study: stability"),
     "The ordering of the ratios (M_p increasing in p) is proved (T2). Measured: drawdowns of p = 1, token-level GRPO "
     "and p = -1, each against GSPO, paired on seeds."),
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
    (11, "Learnable power parameter enables adaptive mean selection during training", "Key Features", "measured",
     ("T13-learnable-p", "study: learnable-p"),
     "T13 derives p's gradient, A s KL / p^2: a drift produced by the surrogate, not a selection by the task. Measured: "
     "where a learnable p goes (about -1.6 in the bandit, whatever the condition) and whether it beats fixed p = 0."),
    (12, "Mathematically sound; AGM convergence verified", "Conclusion", "refuted", ("S1-seed002-table", "T7R-rmi-not-geometric"),
     "Its table contradicts H <= G; its AGM conclusion holds only for log-symmetric inputs."),
    (13, "Power mean unification working (implementation)", "Power Mean Unification Working", "refuted",
     ("S1-seed002-table",), "The implementation's printed output is impossible for any power mean."),
    (14, "Ready for production and for safety-critical domains (medical, legal, finance)", "Ready for Production",
     "open", (), "Nothing in the seeds or here supports it; outside the project's scope."),
    (15, "First-ever HMPO implementation; only known harmonic-mean RL algorithm", "Key Innovations", "refuted",
     ("cite: github.com/callsys/GMPO train_zero_math_hmpo.py (commit 4498795)",
      "cite: arXiv:2605.12058 (HolderPO); github.com/YihangChen9/HolderPO scripts/qwen2.5-math-7b-holder.sh"),
     "Settled by citation: GMPO's repository ships train_zero_math_hmpo.py, whose loss (critic_type_modify = 'hmpo') is "
     "the harmonic mean of clipped token ratios, mask.sum() / (1 / ratio)[mask].sum(); Hoelder Policy Optimisation "
     "(arXiv:2605.12058, May 2026) aggregates token probabilities by the Hoelder (power) mean M_p and anneals p during "
     "training, its launcher from 2 down to -2 (HOLDER_P_MIN=-2.0, schedule linear_dec), so through the harmonic mean."),
    (16, "GRPO (arithmetic) is best for exploration and fast learning", "Related Work Context (table)", "measured",
     ("study: sample-efficiency",),
     "Fast learning measured as for C000-41 (p = 1 vs p = 0); exploration is not measured."),
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


def _study_entries(c: Claim, studies: Mapping[str, StudyFindings]) -> list[dict[str, Any]]:
    """The findings supplied for ``c`` (its MEASURED_BY ids, from any study), in MEASURED_BY order."""
    out = []
    for name, ev in studies.items():
        if not isinstance(ev, StudyFindings):
            raise ValueError(f"study evidence {name!r}: expected StudyFindings (read from findings.json), got "
                             f"{type(ev).__name__}")
    for fid in c.findings:
        for name, ev in studies.items():
            for f in ev.findings:
                if f.id != fid:
                    continue
                link = f"{f.study}/{f.figure}" if f.figure else f"{f.study}/README.md"
                out.append({"ledger_study": (c.studies() or [name])[0], "id": f.id, "study": f.study,
                            "verdict": f.verdict, "outcome": f.outcome, "direction": f.direction, "claim": f.claim,
                            "figure": f"{f.study}/{f.figure}" if f.figure else None, "link": link,
                            "p_values": list(f.p_values), "effect": f.summary, "summary": f.summary,
                            "reports_dir": ev.reports_dir})
    return out


def _direction(entries: list[dict[str, Any]]) -> str:
    """'contradicted: worse (bandit); no effect beyond the margin: equivalent (tiny-lm)': each finding's
    direction with its studies."""
    by: dict[str, list[str]] = {}
    for e in entries:
        studies = by.setdefault(f"{e['id']}: {e['direction']}" if len({x['id'] for x in entries}) > 1 else e["direction"], [])
        if e["study"] not in studies:
            studies.append(e["study"])
    return "; ".join(f"{d} ({', '.join(s)})" for d, s in by.items())


def resolve(results: Iterable[TheoremResult], studies: Mapping[str, Any] | None = None,
            claims: list[Claim] = CLAIMS, checks: Mapping[str, CheckOutcome] | None = None) -> list[dict[str, Any]]:
    """Each claim with the verdict it earned in this run (see module docstring).

    ``studies``: study name -> :class:`StudyFindings` (ValueError for anything else).
    ``checks`` maps check names to their outcomes in this run (``proofs.runner.run_checks``).
    """
    by_id = {r.theorem.id: r for r in results}
    studies = studies or {}
    checks = checks or {}
    out = []
    for c in claims:
        broken = []
        verdict = c.verdict
        entries = _study_entries(c, studies) if c.findings else []
        pending = ""
        if c.verdict in ("proved", "refuted", "conditional"):
            for tid in c.theorem_ids():
                r = by_id.get(tid)
                if r is None or not _fits(c.verdict, r):
                    broken.append(tid)
            broken += [f"check: {k}" for k in c.checks() if k in checks and not checks[k].passed]
            missing = [k for k in c.checks() if k not in checks]
            # a citation is recorded evidence (no run needed); neither a check nor a citation proves
            backed = bool(c.theorem_ids()) or (c.verdict != "proved" and bool(c.checks() or c.citations()))
            if broken or missing or not backed:
                verdict = "open"
            if missing and not broken:
                pending = (f"Open in this report: rests on the check {', '.join(missing)}, which did not run "
                           "(`hmpo verify` runs it).")
        elif c.verdict == "measured":
            # theory the claim leans on must hold, whatever the studies say
            broken = [tid for tid in c.theorem_ids() if tid not in by_id or not _fits("measured", by_id[tid])]
            if broken or not entries:
                verdict = "open"
            if not entries:
                pending = (f"Open in this report: would be settled by the study findings {', '.join(c.findings)} "
                           f"(ledger study {', '.join(c.studies())}; `hmpo report` runs the studies), " + (
                               "which did not run for this report." if not studies else
                               "which the studies that ran did not produce."))
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
            "findings": list(c.findings),
            "measured": entries,
            "direction": _direction(entries) if entries else "",
            "pending": pending,
            "checks": [{"name": k, "passed": checks[k].passed, "detail": checks[k].detail} for k in c.checks() if k in checks],
        })
    return out


def summary(resolved: list[dict[str, Any]]) -> dict[str, int]:
    cnt = Counter(r["verdict"] for r in resolved)
    return {v: cnt.get(v, 0) for v in VERDICTS}

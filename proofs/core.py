r"""Theorems as data: statuses, derivations, numeric checks and the runner.

A :class:`Theorem` carries its statement (plain text and LaTeX), its assumptions, a
``derive`` function that performs the sympy derivation and returns a :class:`Derivation`
(the status it *earned*, the steps sympy carried out, and the lambdified numeric forms),
and a numeric check: ``make_case`` draws an input from a :class:`Drawer` (a numpy
generator in ``hmpo verify``, hypothesis in the tests) and ``evaluate`` compares the
derived numeric form, evaluated in mpmath at high precision, with the project's torch
function (float64), returning ``(error, tolerance)``.

The project functions a check calls come from an :class:`Impl` namespace, so that a test
can substitute a deliberately wrong implementation and watch the same check fail.

Statuses, weakest last:

* ``proved``: derived symbolically for every n (sympy on symbolic sums, or on one split-off
  term with the rest an arbitrary positive constant, or on moment symbols);
* ``proved-n``: derived for each concrete n = 2..N (N is stated);
* ``numeric``: verified numerically only;
* ``refuted``: false, with a counterexample that sympy or exact arithmetic confirms;
* ``open``: nothing established;
* ``failed``: the derivation raised or did not reduce; ``hmpo verify`` then exits non-zero.

A derivation records its steps as typed :class:`Step` records: each says whether sympy
verified it (a difference reduced to 0, an identical canonical form, a limit, a condition
evaluated to True) or whether it is a connecting remark (``note``). A theorem names the
steps its statement rests on (``key_steps``); :func:`run_theorem` fails the theorem unless
sympy verified every one of them in this run, so a key step silently turned into a remark
cannot keep a status it no longer earns.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import numpy as np
import sympy as sp

import meantheory

__all__ = [
    "Status",
    "StepKind",
    "Step",
    "DerivationError",
    "Derivation",
    "Proof",
    "Case",
    "Drawer",
    "RngDrawer",
    "Impl",
    "DEFAULT_IMPL",
    "Theorem",
    "CheckResult",
    "TheoremResult",
    "run_theorem",
    "EPS",
    "worst",
    "ratio",
    "rel_err",
    "log_tol",
]

EPS = float(np.finfo(np.float64).eps)


# ---------------------------------------------------------------------------------------
# What every ``evaluate`` returns: the (error, tolerance) pair of its worst sub-check.


def ratio(error: float, tolerance: float) -> float:
    """``error / tolerance``, the quantity a numeric check passes on (<= 1): infinite for a
    non-finite error, and for a non-zero error against a zero tolerance; 0 for 0 against 0."""
    if not math.isfinite(error):
        return math.inf
    if tolerance <= 0:
        return 0.0 if error == 0 else math.inf
    r = error / tolerance
    return r if math.isfinite(r) else math.inf


def worst(*checks: tuple[float, float]) -> tuple[float, float]:
    """The ``(error, tolerance)`` pair with the largest :func:`ratio` (the first on ties); a
    non-finite error (NaN included) wins outright, reported as an infinite error, so a NaN or
    an overflow can never hide behind a finite pair."""
    best, best_ratio = (0.0, 1.0), 0.0
    for e, t in checks:
        if not math.isfinite(e):
            return (math.inf, t)
        r = ratio(e, t)
        if r > best_ratio:
            best, best_ratio = (e, t), r
    return best


def rel_err(got: Any, ref: Any, scale: Any = None) -> float:
    """``|got - ref| / scale`` in float64 (``scale`` defaults to ``ref``; mpmath/sympy refs are converted)."""
    return abs(float(got) - float(ref)) / float(ref if scale is None else scale)


def log_tol(u: np.ndarray) -> float:
    """meantheory's stated float64 accuracy for log M_p of log-values ``u``: 64 eps max(1, max|u|)."""
    return 64 * EPS * max(1.0, float(np.abs(u).max()))


class Status(str, Enum):
    PROVED = "proved"
    PROVED_N = "proved-n"
    NUMERIC = "numeric"
    REFUTED = "refuted"
    OPEN = "open"
    FAILED = "failed"

    def describe(self, n_max: int | None = None) -> str:
        return {
            Status.PROVED: "proved symbolically for all n",
            Status.PROVED_N: f"proved for each n = 2..{n_max}",
            Status.NUMERIC: "verified numerically only",
            Status.REFUTED: "refuted (counterexample)",
            Status.OPEN: "open",
            Status.FAILED: "FAILED",
        }[self]


class DerivationError(AssertionError):
    """A derivation step did not reduce to what it should."""


class StepKind(str, Enum):
    """How a derivation step was established."""

    REDUCED = "reduced"          # sympy simplified the difference of the two sides to 0
    IDENTICAL = "identical"      # the two sides are the same expression after sympy's canonicalisation
    LIMIT = "limit"              # sympy.limit returned the expected value
    ESTABLISHED = "established"  # a condition evaluated to True (sympy's assumptions or exact arithmetic)
    NOTE = "note"                # a connecting remark: nothing was checked


@dataclass(frozen=True)
class Step:
    """One recorded derivation step: what it says, how it was established, and an optional
    ``key`` by which a theorem (``Theorem.key_steps``) and the tests name it."""

    text: str
    kind: StepKind
    key: str | None = None

    @property
    def verified(self) -> bool:
        """True unless the step is a remark (``note``): sympy or exact arithmetic checked it."""
        return self.kind is not StepKind.NOTE

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "kind": self.kind.value, "key": self.key, "verified": self.verified}


@dataclass
class Derivation:
    """What a derivation earned: its status, the steps done, and the numeric forms."""

    status: Status
    steps: list[Step]
    n_max: int | None = None
    counterexample: str | None = None
    forms: dict[str, Any] = field(default_factory=dict)
    latex: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return self.status.describe(self.n_max)

    @property
    def verified_steps(self) -> list[Step]:
        """The steps sympy (or exact arithmetic) verified, in order; remarks left out."""
        return [s for s in self.steps if s.verified]

    def verified_keys(self) -> set[str]:
        """The keys of the verified steps."""
        return {s.key for s in self.verified_steps if s.key is not None}


class Proof:
    """Records derivation steps; every ``zero``/``equal``/``same``/``limit``/``true`` check is done by sympy.

    A step that does not reduce raises :class:`DerivationError`, so a derivation can only
    return a status after all of its steps passed. ``key`` names a step (unique within one
    derivation) so that a theorem can require it (``Theorem.key_steps``).
    """

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.latex: dict[str, str] = {}

    def _record(self, text: str, kind: StepKind, key: str | None) -> None:
        if key is not None and any(s.key == key for s in self.steps):
            raise ValueError(f"step key {key!r} used twice in one derivation")
        self.steps.append(Step(text, kind, key))

    def note(self, text: str) -> None:
        """A connecting remark: recorded, not checked (and so never a key step)."""
        self._record(text, StepKind.NOTE, None)

    def zero(self, expr: Any, what: str, *, log_form: bool = False, key: str | None = None) -> None:
        """Require ``expr`` to simplify to 0 (``log_form``: expand logs with positivity first)."""
        e = sp.expand_log(expr, force=True) if log_form else expr
        red = sp.simplify(e)
        if red != 0:
            red = sp.simplify(sp.expand(sp.powsimp(sp.expand_log(red, force=True), force=True)))
        if red != 0:
            raise DerivationError(f"{what}: difference did not reduce to 0 (got {red})")
        self._record(f"{what}: sympy reduces the difference to 0", StepKind.REDUCED, key)

    def equal(self, lhs: Any, rhs: Any, what: str, *, log_form: bool = False, key: str | None = None) -> None:
        self.zero(sp.sympify(lhs) - sp.sympify(rhs), what, log_form=log_form, key=key)

    def same(self, lhs: Any, rhs: Any, what: str, *, key: str | None = None) -> None:
        """Structural identity after sympy's automatic canonicalisation (for symbolic sums)."""
        if sp.sympify(lhs) != sp.sympify(rhs):
            raise DerivationError(f"{what}: {lhs} is not identical to {rhs}")
        self._record(f"{what}: identical expressions", StepKind.IDENTICAL, key)

    def limit(self, expr: Any, var: sp.Symbol, point: Any, expected: Any, what: str, direction: str = "+-",
              *, key: str | None = None) -> Any:
        if point in (sp.oo, -sp.oo):
            got = sp.limit(expr, var, point)
        else:
            got = sp.limit(expr, var, point, dir=direction)
        exp_ = sp.sympify(expected)
        ok = got == exp_ if (got.is_infinite or exp_.is_infinite) else sp.simplify(got - exp_) == 0
        if not ok:
            raise DerivationError(f"{what}: limit is {got}, expected {expected}")
        self._record(f"{what}: sympy.limit gives {sp.sstr(got)}", StepKind.LIMIT, key)
        return got

    def true(self, cond: Any, what: str, *, key: str | None = None) -> None:
        """Require ``cond`` (a sympy relation or a Python bool from exact arithmetic) to be True."""
        c = sp.simplify(cond) if isinstance(cond, sp.Basic) else cond
        if not bool(c is True or c == sp.true):
            raise DerivationError(f"{what}: not established (got {c})")
        self._record(what, StepKind.ESTABLISHED, key)

    def done(self, status: Status, **kw: Any) -> Derivation:
        return Derivation(status=status, steps=list(self.steps), latex=self.latex, **kw)


# ---------------------------------------------------------------------------------------
# Cases and drawers: the same make_case serves numpy (hmpo verify) and hypothesis (tests).


@dataclass
class Case:
    """One numeric input: log-values ``u`` (n,), optional weights (n,), exponent p, extras."""

    u: np.ndarray
    p: float = 1.0
    w: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.u.shape[0])

    def wn(self) -> np.ndarray:
        """Normalised weights (uniform when none were given)."""
        w = np.full(self.n, 1.0 / self.n) if self.w is None else self.w / self.w.sum()
        return w


class Drawer:
    """Source of primitive draws; subclasses wrap numpy or hypothesis."""

    def float(self, lo: float, hi: float) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def int(self, lo: int, hi: int) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def choice(self, options: Sequence[Any]) -> Any:
        return options[self.int(0, len(options) - 1)]

    def floats(self, n: int, lo: float, hi: float) -> np.ndarray:
        return np.array([self.float(lo, hi) for _ in range(n)], dtype=np.float64)

    def bool(self) -> bool:
        return self.int(0, 1) == 1

    def log_values(self, n_lo: int = 1, n_hi: int = 6, lo: float = -5.0, hi: float = 5.0) -> np.ndarray:
        """Log-values u: a length drawn in [n_lo, n_hi], then that many floats in [lo, hi]."""
        return self.floats(self.int(n_lo, n_hi), lo, hi)

    def weights(self, n: int) -> np.ndarray | None:
        """Unnormalised weights in [0.05, 1] half the time, None (uniform) otherwise."""
        return self.floats(n, 0.05, 1.0) if self.bool() else None


class RngDrawer(Drawer):
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def float(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def int(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))


# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Impl:
    """The project functions the numeric checks certify (substitutable in tests)."""

    log_power_mean: Callable[..., Any] = meantheory.log_power_mean
    power_mean: Callable[..., Any] = meantheory.power_mean
    geometric_mean: Callable[..., Any] = meantheory.geometric_mean
    harmonic_mean: Callable[..., Any] = meantheory.harmonic_mean
    arithmetic_mean: Callable[..., Any] = meantheory.arithmetic_mean
    mean_weights: Callable[..., Any] = meantheory.mean_weights
    dlog_power_mean_dp: Callable[..., Any] = meantheory.dlog_power_mean_dp
    cumulant_series: Callable[..., Any] = meantheory.cumulant_series
    weighted_cumulants: Callable[..., Any] = meantheory.weighted_cumulants
    arithmetic_harmonic_iteration: Callable[..., Any] = meantheory.arithmetic_harmonic_iteration
    mean_pair_iteration: Callable[..., Any] = meantheory.mean_pair_iteration
    gauss_agm: Callable[..., Any] = meantheory.gauss_agm

    def with_(self, **kw: Any) -> Impl:
        return replace(self, **kw)


DEFAULT_IMPL = Impl()

Evaluate = Callable[[Derivation, Case, Impl], tuple[float, float]]


@dataclass(frozen=True)
class Theorem:
    """A theorem as data. See the module docstring."""

    id: str
    title: str
    statement: str
    latex: str
    assumptions: tuple[str, ...]
    derive: Callable[[], Derivation]
    certifies: tuple[str, ...]
    expected: Status
    make_case: Callable[[Drawer], Case] | None = None
    evaluate: Evaluate | None = None
    tolerance: str = ""
    cases: int = 40
    refs: str = ""
    #: keys of the derivation steps the statement rests on; each must be verified by sympy
    key_steps: tuple[str, ...] = ()


@dataclass
class CheckResult:
    cases: int
    max_error: float
    max_ratio: float  # max error / tolerance (<= 1 passes)
    passed: bool
    worst: str = ""


@dataclass
class TheoremResult:
    theorem: Theorem
    derivation: Derivation | None
    check: CheckResult | None
    derive_s: float
    check_s: float
    error: str | None = None

    @property
    def status(self) -> Status:
        return Status.FAILED if self.derivation is None else self.derivation.status

    @property
    def verified_steps(self) -> list[Step]:
        """The derivation steps sympy verified in this run (empty when the derivation raised)."""
        return [] if self.derivation is None else self.derivation.verified_steps

    @property
    def passed(self) -> bool:
        """Derivation earned the status the theorem claims, and the numeric check passed."""
        if self.derivation is None or self.error is not None:
            return False
        if self.derivation.status != self.theorem.expected:
            return False
        return self.check is None or self.check.passed

    def as_dict(self) -> dict[str, Any]:
        th = self.theorem
        d = self.derivation
        return {
            "id": th.id,
            "title": th.title,
            "statement": th.statement,
            "latex": th.latex,
            "assumptions": list(th.assumptions),
            "certifies": list(th.certifies),
            "status": self.status.value,
            "status_text": d.describe() if d else "FAILED",
            "n_max": d.n_max if d else None,
            "counterexample": d.counterexample if d else None,
            "steps": [st.as_dict() for st in d.steps] if d else [],
            "key_steps": list(th.key_steps),
            "expected_status": th.expected.value,
            "passed": self.passed,
            "error": self.error,
            "tolerance": th.tolerance,
            "numeric": None
            if self.check is None
            else {
                "cases": self.check.cases,
                "max_error": _finite_or_str(self.check.max_error),
                "max_ratio": _finite_or_str(self.check.max_ratio),
                "passed": self.check.passed,
                "worst": self.check.worst,
            },
            "derive_s": round(self.derive_s, 4),
            "check_s": round(self.check_s, 4),
        }


def _finite_or_str(v: float) -> float | str:
    return v if math.isfinite(v) else str(v)


def check_theorem(th: Theorem, deriv: Derivation, drawer: Drawer, impl: Impl = DEFAULT_IMPL,
                  cases: int | None = None) -> CheckResult | None:
    """Run ``cases`` numeric cases of ``th`` against ``impl``; an exception counts as a failure."""
    if th.make_case is None or th.evaluate is None:
        return None
    n = th.cases if cases is None else cases
    max_err, max_ratio, worst_case = 0.0, 0.0, ""
    for _ in range(n):
        case = th.make_case(drawer)
        try:
            err, tol = th.evaluate(deriv, case, impl)
        except Exception as exc:  # a crash of the implementation is a failed check
            return CheckResult(n, math.inf, math.inf, False, f"{type(exc).__name__}: {exc} on {_case_str(case)}")
        r = ratio(err, tol)
        if r > max_ratio or (r == max_ratio and not worst_case):
            max_ratio, worst_case = r, f"error {err:.3g} vs tolerance {tol:.3g} on {_case_str(case)}"
        max_err = max(max_err, err) if math.isfinite(err) else math.inf
    return CheckResult(n, max_err, max_ratio, max_ratio <= 1.0, worst_case)


def _case_str(case: Case) -> str:
    u = np.array2string(case.u, precision=4, max_line_width=200)
    s = f"u={u}, p={case.p:.6g}"
    if case.w is not None:
        s += f", w={np.array2string(case.w, precision=3)}"
    if case.extra:
        s += ", " + ", ".join(f"{k}={v}" for k, v in case.extra.items() if not isinstance(v, np.ndarray))
    return s


def run_theorem(th: Theorem, drawer: Drawer, impl: Impl = DEFAULT_IMPL, cases: int | None = None) -> TheoremResult:
    """Derive ``th``, require its key steps to be verified, then run its numeric check.

    A derivation that raises, or that leaves one of ``th.key_steps`` unverified (missing, or
    recorded as a remark), is ``failed``; its numeric check is then not run.
    """
    t0 = time.perf_counter()
    try:
        deriv = th.derive()
    except Exception as exc:
        return TheoremResult(th, None, None, time.perf_counter() - t0, 0.0,
                             error=f"derivation: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
    t1 = time.perf_counter()
    unverified = [k for k in th.key_steps if k not in deriv.verified_keys()]
    if unverified:
        return TheoremResult(th, replace(deriv, status=Status.FAILED), None, t1 - t0, 0.0,
                             error=f"derivation: key steps not verified by sympy: {', '.join(unverified)}")
    error = None
    if deriv.status != th.expected:
        error = f"derivation earned '{deriv.status.value}', the theorem claims '{th.expected.value}'"
    chk = check_theorem(th, deriv, drawer, impl, cases)
    if chk is not None and not chk.passed and error is None:
        error = f"numeric check failed: {chk.worst}"
    return TheoremResult(th, deriv, chk, t1 - t0, time.perf_counter() - t1, error)

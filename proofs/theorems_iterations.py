r"""Theorems about the two-number mean iterations, and the seed documents' demonstrations.

Arithmetic-harmonic iteration: ``a' = (a + h)/2, h' = 2 a h/(a + h)`` (Bullen 2003, sec. VI.3;
Borwein and Borwein, *Pi and the AGM*, 1987, ch. 8). Gauss's arithmetic-geometric mean:
``a' = (a + g)/2, g' = sqrt(a g)``, limit ``pi (a + b)/(4 K(((a - b)/(a + b))^2))``.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import sympy as sp

from meantheory.reference import mp_agm_elliptic, mp_gauss_agm
from proofs.core import EPS, Case, Derivation, Drawer, Impl, Proof, Status, Theorem, log_tol, rel_err, worst
from proofs.forms import S_sum, W, i, mp_weighted, n, t64, to_float, weights_t
from proofs.seeds import SEED_002_AGM, SEED_002_TABLE, table_violations

__all__ = ["THEOREMS", "exact_pair_limit"]

a, b = sp.symbols("a b", positive=True)


def _log_uniform(d: Drawer, lo: float, hi: float) -> float:
    return 10 ** d.float(math.log10(lo), math.log10(hi))


def _pair(case: Case) -> tuple[float, float]:
    """The two numbers (a, b) a two-number case holds as log-values."""
    av, bv = (float(v) for v in np.exp(case.u))
    return av, bv


# ------------------------------------------------------------------ T6: two numbers


def derive_pair() -> Derivation:
    pf = Proof()
    a1, h1 = (a + b) / 2, 2 * a * b / (a + b)
    pf.equal(a1 * h1, a * b, "product invariant: a' h' = a h", key="product-invariant")
    pf.equal(a1 - h1, (a - b) ** 2 / (2 * (a + b)), "gap recursion: a' - h' = (a - h)^2 / (2 (a + h))", key="gap")
    pf.true(((a - b) ** 2 / (2 * (a + b))).is_nonnegative is True, "so a' >= h' after one step, and a' <= a, h' >= h")
    P, s, x = sp.symbols("P s x", positive=True)
    pf.equal(a1.subs(b, P / a), (a + P / a) / 2, "with P = a h invariant, a' = (a + P/a)/2: Newton's iteration for sqrt(P)",
             key="newton")
    q = (x - s) / (x + s)
    xn = (x + s**2 / x) / 2
    pf.equal((xn - s) / (xn + s), q**2, "q_k = (a_k - sqrt P)/(a_k + sqrt P) satisfies q_{k+1} = q_k^2", key="q-squares")
    pf.equal((x + s) ** 2 - (x - s) ** 2, 4 * x * s, "(a + s)^2 - (a - s)^2 = 4 a s > 0, so |q_0| < 1")
    k = sp.Symbol("k", integer=True, nonnegative=True)
    Q = sp.Symbol("Q", positive=True)
    ak = s * (1 + Q) / (1 - Q)
    pf.equal(((ak - s) / (ak + s)), Q, "closed form a_k = sqrt(P) (1 + q_0^(2^k)) / (1 - q_0^(2^k)) inverts q_k = q_0^(2^k)")
    r = sp.Symbol("r", positive=True)
    pf.limit(s * (1 + r) / (1 - r), r, 0, s, "q_0^(2^k) -> 0 (|q_0| < 1), so a_k -> sqrt(P) = sqrt(a b) and h_k = P/a_k -> sqrt(a b)",
             key="limit")
    pf.equal((a1 - h1) / (a - b) ** 2, 1 / (2 * (a + b)), "quadratic convergence: gap' / gap^2 = 1/(2 (a + h)) <= 1/(4 sqrt(a h))",
             key="quadratic")
    pf.latex["closed_form"] = r"a_k=\sqrt{ab}\,\frac{1+q^{2^k}}{1-q^{2^k}},\ q=\frac{a-\sqrt{ab}}{a+\sqrt{ab}}"
    return pf.done(Status.PROVED, forms={"upper": sp.lambdify((x, s, k), s * (1 + ((x - s) / (x + s)) ** (2**k))
                                                              / (1 - ((x - s) / (x + s)) ** (2**k)), modules="mpmath")})


def case_pair(d: Drawer) -> Case:
    av, bv = _log_uniform(d, 1e-3, 1e3), _log_uniform(d, 1e-3, 1e3)
    return Case(u=np.log(np.array([av, bv])), extra={"steps": d.int(0, 8)})


def _upper_ref(deriv: Derivation, hi: float, lo: float, k: int) -> float:
    with mpmath.workdps(50):
        s = mpmath.sqrt(mpmath.mpf(hi) * mpmath.mpf(lo))
        if hi == lo:
            return float(s)
        return float(deriv.forms["upper"](mpmath.mpf(hi), s, k))


def eval_pair(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    av, bv = _pair(case)
    steps = case.extra["steps"]
    tr = impl.arithmetic_harmonic_iteration(av, bv, steps=steps)
    hi, lo = max(av, bv), min(av, bv)
    P = mpmath.mpf(hi) * mpmath.mpf(lo)
    checks = []
    for kk in range(min(steps, tr.steps) + 1):
        up = _upper_ref(deriv, hi, lo, kk)
        low = float(P / mpmath.mpf(up))
        # each step adds a few roundings; Newton's iteration does not amplify them
        tol = 8 * EPS * (kk + 1)
        checks.append((rel_err(tr.upper[kk], up), tol))
        checks.append((rel_err(tr.lower[kk], low), tol))
    if tr.steps != steps:
        checks.append((math.inf, 1.0))
    lim = float(mpmath.sqrt(P))
    checks.append((rel_err(tr.limit, lim), 4 * EPS))
    return worst(*checks)


T6 = Theorem(
    id="T6-pair-iteration",
    title="Arithmetic-harmonic iteration of two numbers: invariant product, quadratic convergence, limit sqrt(ab)",
    statement="For a, b > 0 the iteration a' = (a+h)/2, h' = 2ah/(a+h) keeps a h = a b, has gap' = gap^2/(2(a+h)) "
              "(quadratic convergence; it is Newton's iteration for sqrt(ab)), and both sequences converge to sqrt(a b).",
    latex=r"a_{k+1}h_{k+1}=a_kh_k,\quad a_{k+1}-h_{k+1}=\frac{(a_k-h_k)^2}{2(a_k+h_k)},\quad \lim a_k=\lim h_k=\sqrt{ab}",
    assumptions=("a, b > 0",),
    derive=derive_pair,
    key_steps=("product-invariant", "q-squares", "limit", "quadratic"),
    certifies=("meantheory.arithmetic_harmonic_iteration",),
    expected=Status.PROVED,
    make_case=case_pair,
    evaluate=eval_pair,
    tolerance="relative 8 eps (k + 1) on the k-th iterate against the closed form in mpmath; 4 eps on the stated limit",
    refs="Borwein and Borwein (1987) ch. 8; Bullen (2003) VI.3",
)


# ------------------------------------------------------------------ T7: started from (A(x), H(x))


def derive_ah_start() -> Derivation:
    pf = Proof()
    ubar = sp.Symbol("ubar", real=True)  # = sum w u (sum w = 1)
    A_over_G = sp.factor_terms(sp.expand(S_sum(1, shift=-ubar)))
    pf.same(A_over_G, sp.exp(-ubar) * S_sum(1), "A/G = sum w e^{u - ubar} (every n)", key="A/G")
    Hinv_G = sp.factor_terms(sp.expand(S_sum(-1, shift=-ubar)))
    pf.same(Hinv_G, sp.exp(ubar) * S_sum(-1), "G/H = sum w e^{-(u - ubar)} (every n)", key="G/H")
    c = sp.IndexedBase("c", real=True)
    Ec = sp.Sum(W[i] * sp.exp(c[i]), (i, 1, n))
    Emc = sp.Sum(W[i] * sp.exp(-c[i]), (i, 1, n))
    pf.note("so A H / G^2 = sum w e^{c} / sum w e^{-c} with c_i = u_i - ubar, and sum w e^{-c} > 0")
    sinh_sum = sp.Sum(2 * W[i] * sp.sinh(c[i]), (i, 1, n))
    pf.zero(sinh_sum.rewrite(sp.exp).expand() - (Ec.expand() - Emc.expand()),
            "A H/G^2 - 1 = 2 sum w sinh(c) / sum w e^{-c}", key="sinh")
    pf.note("hence sqrt(A H) = G iff sum_i w_i sinh(u_i - ubar) = 0, and sqrt(A H) - G has the sign of that sum")
    pf.note("by T6 (invariant product) the iteration started from (A(x), H(x)) converges to sqrt(A H) = sqrt(sum w x / sum w/x)")
    # equal weights, symmetric log-values: the sinh terms cancel in pairs
    t1, t2 = sp.symbols("t1 t2", real=True)
    pf.equal(sp.sinh(-t1) + sp.sinh(t1) + sp.sinh(-t2) + sp.sinh(t2), 0,
             "log-symmetric inputs (c = (-t1, t1, -t2, t2), equal weights) give sum sinh = 0: sqrt(A H) = G", key="symmetric")
    pf.note("n = 2 with equal weights is always log-symmetric (c_2 = -c_1): T6 is the special case")
    # log(AH/G^2)/2 = (K(1) - K(-1))/2 with K the cumulant generating function of c (kappa_1 = 0)
    from proofs.theorems_means import cumulant_in_moments, series_coefficients
    co = series_coefficients(6)
    ks = cumulant_in_moments(6)
    odd = sum(co[j] * ((1) ** (j + 1) - (-1) ** (j + 1)) / 2 for j in range(6))
    m = sp.symbols("m1:7", real=True)
    pf.equal(odd.subs(m[0], 0), (ks[2] / 6 + ks[4] / 120).subs(m[0], 0),
             "log(sqrt(AH)/G) = (K(1) - K(-1))/2 = kappa_3/6 + kappa_5/120 + ... (odd cumulants of log x)", key="odd-cumulants")
    pf.note("so to leading order the gap has the sign of the skewness of log x")
    return pf.done(Status.PROVED)


def case_ah_start(d: Drawer) -> Case:
    u = d.log_values(2, 7, -3, 3)
    return Case(u=u, w=d.weights(len(u)), extra={"steps": d.int(6, 10)})


def eval_ah_start(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    u, w = case.u, case.wn()
    x = np.exp(u)
    wt = weights_t(case.w)
    r = impl.mean_pair_iteration(t64(x), steps=case.extra["steps"], weights=wt)
    with mpmath.workdps(50):
        us, ws = mp_weighted(u, w)
        A = mpmath.fsum(wi * mpmath.exp(ui) for ui, wi in zip(us, ws))
        Hinv = mpmath.fsum(wi * mpmath.exp(-ui) for ui, wi in zip(us, ws))
        ub = mpmath.fsum(wi * ui for ui, wi in zip(us, ws))
        G = mpmath.exp(ub)
        lim = mpmath.sqrt(A / Hinv)
        sh = mpmath.fsum(wi * mpmath.sinh(ui - ub) for ui, wi in zip(us, ws))
        # the k-th upper iterate from T6's closed form (the iteration need not have converged yet)
        q = (A - lim) / (A + lim)
        qk = q ** (2 ** case.extra["steps"])
        up_k = lim * (1 + qk) / (1 - qk)
    tol = log_tol(u)
    checks = [
        (rel_err(to_float(r.limit), lim), tol),
        (rel_err(to_float(r.geometric), G), tol),
        (rel_err(to_float(impl.geometric_mean(t64(x), weights=wt)), G), tol),
        (rel_err(to_float(r.trace_upper[-1]), up_k), tol),
    ]
    gap_ref = float(lim - G)
    gap = to_float(r.gap)
    checks.append((rel_err(gap, gap_ref, G), 2 * tol))
    if abs(gap_ref) > 4 * tol * float(G) and np.sign(gap) != np.sign(float(sh)):
        checks.append((math.inf, 1.0))
    return worst(*checks)


T7 = Theorem(
    id="T7-ah-from-AH",
    title="Iteration started from (A(x), H(x)), n > 2: limit sqrt(A H), equal to G iff sum w sinh(u - mean u) = 0",
    statement="The arithmetic-harmonic iteration started from (A(x), H(x)) converges to sqrt(A H) = sqrt(sum w x / sum w/x); "
              "A H / G^2 - 1 = 2 sum w sinh(c) / sum w e^{-c} with c = log x - mean(log x), so the limit equals the geometric "
              "mean iff sum w sinh(c) = 0; log(sqrt(AH)/G) = kappa_3/6 + kappa_5/120 + ... (odd cumulants of log x).",
    latex=r"\lim=\sqrt{A(x)H(x)},\qquad \frac{A H}{G^2}-1=\frac{2\sum_i w_i\sinh(u_i-\bar u)}{\sum_i w_i e^{-(u_i-\bar u)}},\qquad \log\frac{\sqrt{AH}}{G}=\frac{\kappa_3}{6}+\frac{\kappa_5}{120}+\dots",
    assumptions=("x_i > 0", "w_i > 0, sum w = 1"),
    derive=derive_ah_start,
    key_steps=("A/G", "G/H", "sinh", "odd-cumulants"),
    certifies=("meantheory.mean_pair_iteration", "meantheory.geometric_mean"),
    expected=Status.PROVED,
    make_case=case_ah_start,
    evaluate=eval_ah_start,
    tolerance="relative 64 eps max(1, max|u|) (A and H come from log-space means with that accuracy); gap sign must match "
              "sum w sinh(c) whenever |gap| exceeds 4 tolerances",
)


def exact_pair_limit(values: list[int]) -> tuple[sp.Expr, sp.Expr]:
    """sqrt(A H) and G of positive integers (equal weights), exactly."""
    nn = len(values)
    A = sp.Rational(sum(values), nn)
    H = sp.Rational(nn) / sum(sp.Rational(1, v) for v in values)
    G = sp.prod([sp.Integer(v) for v in values]) ** sp.Rational(1, nn)
    return sp.sqrt(A * H), G


COUNTEREXAMPLES = [[1, 1, 4], [1, 4, 4]]


def derive_rmi_refuted() -> Derivation:
    pf = Proof()
    parts = []
    for vals in COUNTEREXAMPLES:
        lim, G = exact_pair_limit(vals)
        nn = len(vals)
        # compare the 2n-th powers: both sides are then rational
        lhs, rhs = sp.nsimplify(lim ** (2 * nn)), sp.nsimplify(G ** (2 * nn))
        pf.true(lhs.is_Rational and rhs.is_Rational and lhs != rhs,
                f"x = {tuple(vals)}: sqrt(A H) = {sp.sstr(lim)} = {float(lim):.6f}, G = {sp.sstr(G)} = {float(G):.6f}; "
                f"(sqrt(AH))^{2 * nn} = {lhs} != {rhs} = G^{2 * nn} (exact rationals)", key=f"x={tuple(vals)}")
        parts.append(f"{tuple(vals)}: limit {float(lim):.6f} vs G {float(G):.6f}")
    pf.note("the limit overshoots G for right-skewed log x (1, 1, 4) and undershoots for left-skewed (1, 4, 4), as T7 predicts")
    return pf.done(Status.REFUTED, counterexample="; ".join(parts))


def case_rmi(d: Drawer) -> Case:
    vals = d.choice(COUNTEREXAMPLES + [[1, 2, 4, 8]])
    return Case(u=np.log(np.array(vals, dtype=np.float64)), extra={"values": tuple(vals)})


def _vs_exact(impl: Impl, case: Case, values: list[int], steps: int) -> dict[str, tuple[float, float]]:
    """mean_pair_iteration of exp(case.u) (equal weights) against the exact sympy sqrt(A H) and G of
    the integers ``values``: relative 16 eps on the limit and on G, 32 eps G on the gap."""
    lim, G = exact_pair_limit(values)
    r = impl.mean_pair_iteration(t64(np.exp(case.u)), steps=steps)
    tol = 16 * EPS
    return {"limit": (rel_err(to_float(r.limit), lim), tol),
            "geometric": (rel_err(to_float(r.geometric), G), tol),
            "gap": (rel_err(to_float(r.gap), lim - G, G), 2 * tol)}


def eval_rmi(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    c = _vs_exact(impl, case, list(case.extra["values"]), steps=8)
    return worst(c["limit"], c["geometric"], c["gap"])


T7R = Theorem(
    id="T7R-rmi-not-geometric",
    title="REFUTED: the iteration from (A(x), H(x)) converges to the geometric mean of x (n > 2)",
    statement="Claim (seed 000, RMI-PO): iterating arithmetic and harmonic means starting from (A(x), H(x)) converges to G(x). "
              "False for n > 2: the limit is sqrt(A H).",
    latex=r"\lim_{k\to\infty}(a_k,h_k)\big|_{(a_0,h_0)=(A(x),H(x))}\overset{?}{=}G(x)\quad\text{(false: }x=(1,1,4)\text{)}",
    assumptions=("x_i > 0", "n > 2"),
    derive=derive_rmi_refuted,
    key_steps=("x=(1, 1, 4)", "x=(1, 4, 4)"),
    certifies=("meantheory.mean_pair_iteration",),
    expected=Status.REFUTED,
    make_case=case_rmi,
    evaluate=eval_rmi,
    tolerance="relative 16 eps against the exact sympy values",
    cases=6,
)


# ------------------------------------------------------------------ T8: Gauss's AGM is different


def derive_agm_different() -> Derivation:
    pf = Proof()
    pf.equal((a + b) / 2 - sp.sqrt(a * b), (sp.sqrt(a) - sp.sqrt(b)) ** 2 / 2,
             "AM-GM: (a + g)/2 - sqrt(a g) = (sqrt a - sqrt g)^2/2 >= 0, = 0 iff a = g", key="am-gm")
    pf.note("so g_1 = sqrt(a b) and g_{k+1} = sqrt(a_k g_k) >= g_k; for a != b, a_1 > g_1 gives g_2 > g_1 = sqrt(a b)")
    pf.equal(((a + b) / 2 * sp.sqrt(a * b)) / (a * b), (a + b) / (2 * sp.sqrt(a * b)),
             "the product is not invariant: a_1 g_1 / (a b) = (a + b)/(2 sqrt(a b)) > 1 unless a = b", key="product-grows")
    pf.note("hence agm(a, b) > sqrt(a b), the limit of the arithmetic-harmonic iteration (T6), whenever a != b: "
            "Gauss's AGM and the arithmetic-harmonic iteration are different iterations")
    return pf.done(Status.PROVED)


def case_agm(d: Drawer) -> Case:
    return Case(u=np.log(np.array([_log_uniform(d, 1e-2, 1e2), _log_uniform(d, 1e-2, 1e2)])))


def _mp_agm(av: float, bv: float) -> tuple[float, float]:
    """(mpmath's agm, Gauss's elliptic closed form) at 50 digits: meantheory's oracles, the one copy."""
    return float(mp_gauss_agm(av, bv, dps=50)), mp_agm_elliptic(av, bv, dps=50)


def eval_agm_different(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    av, bv = _pair(case)
    agm_ref, _ = _mp_agm(av, bv)
    sq = float(mpmath.sqrt(mpmath.mpf(av) * mpmath.mpf(bv)))
    got = impl.gauss_agm(av, bv).limit - impl.arithmetic_harmonic_iteration(av, bv).limit
    return rel_err(got, agm_ref - sq, agm_ref), 16 * EPS


T8 = Theorem(
    id="T8-agm-different",
    title="Gauss's arithmetic-geometric mean is a different iteration: agm(a, b) > sqrt(ab) for a != b",
    statement="Gauss's AGM (a' = (a+g)/2, g' = sqrt(ag)) does not keep a g invariant and converges to agm(a,b) > sqrt(ab) "
              "unless a = b; the seeds' 'AGM' is the arithmetic-harmonic iteration.",
    latex=r"\operatorname{agm}(a,b)>\sqrt{ab}\quad(a\ne b)",
    assumptions=("a, b > 0",),
    derive=derive_agm_different,
    key_steps=("am-gm", "product-grows"),
    certifies=("meantheory.gauss_agm", "meantheory.arithmetic_harmonic_iteration"),
    expected=Status.PROVED,
    make_case=case_agm,
    evaluate=eval_agm_different,
    tolerance="relative 16 eps on agm - sqrt(ab) against mpmath.agm",
)


def derive_agm_elliptic() -> Derivation:
    pf = Proof()
    t = sp.Symbol("t", positive=True)
    order = 8
    A, G = 1 + t, 1 - t
    for _ in range(3):  # a_k - g_k = O(t^(2^k)): three steps fix every coefficient below t^8
        A, G = (A + G) / 2, sp.sqrt(A * G)
        A = sp.series(A, t, 0, order).removeO()
        G = sp.series(G, t, 0, order).removeO()
    ell = sp.series(sp.pi / (2 * sp.elliptic_k(t**2)), t, 0, order).removeO()
    pf.equal(sp.expand(A), sp.expand(ell), "power series of agm(1 + t, 1 - t) and pi/(2 K(t^2)) agree through t^7", key="series")
    pf.note("agm(a, b) = pi (a + b)/(4 K(k^2)), k = (a - b)/(a + b), is checked numerically (mpmath.agm, mpmath.ellipk, "
            "meantheory.gauss_agm); the series agreement is evidence, not a proof of the closed form, so the status is numeric")
    return pf.done(Status.NUMERIC)


def eval_agm_elliptic(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    av, bv = _pair(case)
    agm_mp, ell = _mp_agm(av, bv)
    got = impl.gauss_agm(av, bv).limit
    return worst((rel_err(got, ell), 8 * EPS), (rel_err(agm_mp, ell), 8 * EPS))


T8b = Theorem(
    id="T8b-agm-elliptic",
    title="agm(a, b) = pi (a + b) / (4 K(k^2)), k = (a - b)/(a + b)",
    statement="Gauss's AGM equals pi (a + b) / (4 K(k^2)) with K the complete elliptic integral of the first kind "
              "(parameter m = k^2); verified numerically, with the power series agreeing through t^7.",
    latex=r"\operatorname{agm}(a,b)=\frac{\pi(a+b)}{4K(k^2)},\quad k=\frac{a-b}{a+b}",
    assumptions=("a, b > 0",),
    derive=derive_agm_elliptic,
    key_steps=("series",),
    certifies=("meantheory.gauss_agm",),
    expected=Status.NUMERIC,
    make_case=case_agm,
    evaluate=eval_agm_elliptic,
    tolerance="relative 8 eps against the elliptic form in mpmath at 50 digits",
    refs="Borwein and Borwein (1987) thm. 1.1",
)


# ------------------------------------------------------------------ seed 002's numbers


SEED_INPUT = [1.0, 2.0, 4.0, 8.0]


def derive_seed_table() -> Derivation:
    from proofs.theorems_means import derive_monotone

    pf = Proof()
    # the refutation rests on T2; re-derive it here so this status never outlives T2
    pf.true(derive_monotone().status is Status.PROVED,
            "T2 re-derived: every power-mean table must be non-decreasing in p, for every input", key="T2")
    viol = table_violations(SEED_002_TABLE)
    pf.true(bool(viol), f"the printed table breaks it ({len(viol)} violations, listed below)", key="violations")
    for v in viol:
        pf.note("violation: " + v)
    pf.note("the entries at p = -1, -0.5, 0.5, 1 carry the digits 11670505 and those at p = -2, 2 the digits 369054: "
            "decimal shifts of two numbers, not power means")
    pf.note("for the seed's own example (1, 2, 4, 8) the correct values are: " + ", ".join(
        f"M_{pv:g} = {float(mpmath.exp(_mp_lpm(SEED_INPUT, pv))):.6f}" for pv, _, _ in SEED_002_TABLE))
    return pf.done(Status.REFUTED, counterexample="; ".join(viol))


def _mp_lpm(vals: list[float], pv: float):
    from meantheory.reference import mp_log_power_mean

    return mp_log_power_mean([math.log(v) for v in vals], pv)


def case_seed_table(d: Drawer) -> Case:
    pv = d.choice([row[0] for row in SEED_002_TABLE])
    return Case(u=np.log(np.array(SEED_INPUT)), p=pv)


def eval_seed_table(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    ref = float(mpmath.exp(_mp_lpm(SEED_INPUT, case.p)))
    got = to_float(impl.power_mean(t64(np.exp(case.u)), case.p))
    ps = [row[0] for row in SEED_002_TABLE]
    vals = [to_float(impl.power_mean(t64(np.exp(case.u)), q)) for q in ps]
    drop = max(0.0, max(x - y for x, y in zip(vals, vals[1:])))
    return worst((rel_err(got, ref), 64 * EPS * 3), (drop / ref, 64 * EPS * 3))


S1 = Theorem(
    id="S1-seed002-table",
    title="REFUTED: seed 002's printed power-mean table",
    statement="Seed 002 prints M_p for p = -2, -1, -0.5, 0, 0.5, 1, 2 as 3.69, 11.67, 116.7, 1.009, 0.0117, 0.117, 0.369. "
              "No input can produce it: power means are non-decreasing in p (T2).",
    latex=r"M_{-1}=11.67>M_0=1.009\ \text{contradicts}\ H\le G",
    assumptions=("the printed numbers are power means of one positive input",),
    derive=derive_seed_table,
    key_steps=("T2", "violations"),
    certifies=("meantheory.power_mean (the correct table for 1, 2, 4, 8)",),
    expected=Status.REFUTED,
    make_case=case_seed_table,
    evaluate=eval_seed_table,
    tolerance="relative 192 eps against mpmath; the recomputed table must be non-decreasing",
    cases=7,
)


def derive_seed_agm() -> Derivation:
    pf = Proof()
    demo = SEED_002_AGM
    vals = [int(v) for v in demo.values]
    lim, G = exact_pair_limit(vals)
    pf.equal(lim, G, "for (1, 2, 4, 8): sqrt(A H) = sqrt(15/4 * 32/15) = sqrt(8) = G exactly", key="sqrt(AH)=G")
    c = sp.symbols("c", positive=True)
    pf.equal(sum(sp.sinh(k * c) for k in (-sp.Rational(3, 2), -sp.Rational(1, 2), sp.Rational(1, 2), sp.Rational(3, 2))), 0,
             "log2 x = (0, 1, 2, 3) is symmetric about 1.5, so sum sinh(u - mean u) = 0 (T7's condition)", key="symmetric")
    # the printed trace is right (to its 6 printed digits)
    A, H = sp.Rational(15, 4), sp.Rational(32, 15)
    half = 0.5 * 10 ** (-demo.printed_digits) + 1e-12
    rows = [(A, H)]
    for _ in demo.steps:
        A, H = (A + H) / 2, 2 * A * H / (A + H)
        rows.append((A, H))
    bad = [k for k, ((pa, ph), (ea, eh)) in enumerate(zip(demo.steps, rows[1:]), start=1)
           if abs(pa - float(ea)) > half or abs(ph - float(eh)) > half]
    pf.true(not bad and abs(demo.arithmetic - 3.75) <= half and abs(demo.harmonic - 32 / 15) <= half,
            "the printed A, G, H and the four printed steps agree with exact rational arithmetic to the 6 printed digits"
            + (f" (they disagree at steps {bad})" if bad else ""), key="trace")
    lim2, G2 = exact_pair_limit([1, 1, 4])
    pf.true(sp.nsimplify(lim2**6) != sp.nsimplify(G2**6),
            f"the same demonstration on (1, 1, 4) converges to sqrt(8/3) = {float(lim2):.6f}, not G = {float(G2):.6f} (T7R)",
            key="x=(1, 1, 4)")
    return pf.done(Status.PROVED, counterexample=f"(1, 1, 4): limit {float(lim2):.6f} != G {float(G2):.6f}")


def case_seed_agm(d: Drawer) -> Case:
    return Case(u=np.log(np.array(d.choice([[1.0, 2.0, 4.0, 8.0], [1.0, 1.0, 4.0]]))))


def eval_seed_agm(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    c = _vs_exact(impl, case, [int(round(v)) for v in np.exp(case.u)], steps=6)
    return worst(c["gap"], c["geometric"])


S2 = Theorem(
    id="S2-seed002-agm-demo",
    title="Seed 002's AGM demonstration is right only because (1, 2, 4, 8) is symmetric in log space",
    statement="For (1, 2, 4, 8) the iteration from (A, H) = (3.75, 2.1333) converges to sqrt(A H) = sqrt(8) = G exactly, "
              "because log x is symmetric about its mean (sum sinh(c) = 0); the printed trace is arithmetically right. "
              "For (1, 1, 4) the same procedure gives sqrt(8/3) = 1.63299 != G = 1.58740.",
    latex=r"x=(1,2,4,8):\ \sqrt{AH}=\sqrt8=G;\qquad x=(1,1,4):\ \sqrt{8/3}\ne4^{1/3}",
    assumptions=("equal weights",),
    derive=derive_seed_agm,
    key_steps=("sqrt(AH)=G", "symmetric", "trace", "x=(1, 1, 4)"),
    certifies=("meantheory.mean_pair_iteration",),
    expected=Status.PROVED,
    make_case=case_seed_agm,
    evaluate=eval_seed_agm,
    tolerance="gap within 32 eps G of the exact value (0 for 1, 2, 4, 8)",
    cases=4,
)

THEOREMS = [T6, T7, T7R, T8, T8b, S1, S2]

r"""Theorems about the power mean itself: limits, monotonicity, sensitivities, series, symmetries.

Notation: ``u_i = log x_i``, normalised weights ``w_i > 0`` (``sum w = 1``),
``S(p) = sum_i w_i e^{p u_i}``, ``L(p) = log M_p = log S(p) / p``,
``pi_p = softmax(p u + log w)``. References: Hardy, Littlewood and Polya, *Inequalities*
(1934), ch. II-III; Bullen, *Handbook of Means and Their Inequalities* (2003), ch. III.
"""

from __future__ import annotations

import math
from typing import Any

import mpmath
import numpy as np
import sympy as sp
import torch

from proofs.core import EPS, Case, Derivation, Drawer, Impl, Proof, Status, Theorem, log_tol, rel_err, worst
from proofs.forms import (S_sum, PerN, U, W, concrete, normalised, dps_for, grad_or_none, i, mp_eval, mp_floats, mp_moments,
                          mp_weighted, n, p, t64, to_float, weights_t)

__all__ = ["THEOREMS", "log_mean_form", "series_coefficients", "cumulant_in_moments"]

SERIES_ORDER = 6  # through kappa_6: the derivation's depth, independent of meantheory's series branch (order 4)


# ------------------------------------------------------------------ shared numeric forms


def _L_builder(nn: int):
    u, w = concrete(nn)
    wn = normalised(w)
    return (*u, *w, p), sp.log(sum(wi * sp.exp(p * ui) for ui, wi in zip(u, wn))) / p


def log_mean_form() -> PerN:
    """L_n(u, w, p) = log(sum w e^{p u}) / p for concrete n, lambdified in mpmath."""
    return PerN(_L_builder)


def _mean_builder(nn: int):
    u, w = concrete(nn)
    return (*u, *w), sum(wi * ui for ui, wi in zip(u, normalised(w)))


def _log_mean_forms(**extra: PerN) -> dict[str, PerN]:
    """The forms :func:`ref_log_mean` reads (L_n and the p = 0 limit sum w u), plus a derivation's own."""
    return {"L": log_mean_form(), "mean_u": PerN(_mean_builder), **extra}


def ref_log_mean(deriv: Derivation, u: np.ndarray, w: np.ndarray, pv: float) -> Any:
    """The derived reference value of log M_p: the limit forms at 0 and +-inf, L_n elsewhere."""
    nn = len(u)
    if pv == 0:
        return mp_eval(deriv.forms["mean_u"](nn), [*u, *w])
    if math.isinf(pv):
        return mpmath.mpf(float(u.max() if pv > 0 else u.min()))
    return mp_eval(deriv.forms["L"](nn), [*u, *w, pv], dps_for(pv))


# ------------------------------------------------------------------ T1: limits


def derive_limits() -> Derivation:
    pf = Proof()
    S = S_sum()
    sum_w = sp.Sum(W[i], (i, 1, n))
    pf.same(S.subs(p, 0), sum_w, "S(0) = sum_i w_i (= 1 by normalisation)")
    num0 = sp.diff(sp.log(S), p).subs(p, 0)
    pf.same(num0, sp.Sum(W[i] * U[i], (i, 1, n)) / sum_w,
            "L'Hopital at p = 0: d/dp log S(p) at 0 = sum w u / sum w", key="p->0")
    pf.note("so lim_{p->0} log S(p)/p = sum_i w_i u_i (numerator and denominator vanish at 0, derivative of p is 1): "
            "M_0 = prod x_i^{w_i}, the geometric mean, for every n")
    u1, u2 = sp.symbols("u1:3", real=True)
    w1, w2 = sp.symbols("w1 w2", positive=True)
    e2 = sp.log(w1 * sp.exp(p * u1) + (1 - w1) * sp.exp(p * u2)) / p
    pf.limit(e2, p, 0, w1 * u1 + (1 - w1) * u2, "cross-check n = 2 on the explicit expression")

    q = sp.Symbol("q", positive=True)
    d = sp.Symbol("d", nonnegative=True)
    pf.true((-q * d).is_nonpositive is True,
            "p > 0 and u_i = u_max - d_i with d_i >= 0 give e^{p u_i} <= e^{p u_max} (exp increasing)", key="bound")
    pf.note("hence w_max e^{p u_max} <= S(p) <= e^{p u_max} sum w = e^{p u_max}, i.e. "
            "u_max + log(w_max)/p <= L(p) <= u_max")
    um = sp.Symbol("u_max", real=True)
    wm = sp.Symbol("w_max", positive=True)
    pf.limit(um + sp.log(wm) / q, q, sp.oo, um, "lower bound tends to u_max as p -> +inf (squeeze)", key="p->+inf")
    dd = sp.Symbol("d", positive=True)
    pf.limit(sp.log(w1 + w2 * sp.exp(-q * dd)) / q, q, sp.oo, 0,
             "cross-check n = 2 with u = (0, -d), d > 0 (u_max = 0 WLOG by homogeneity, T5)")
    # p -> -inf via duality: L_{-q}(u) = -L_q(-u).
    lhs = sp.log(S_sum(-q)) / (-q)
    rhs = -sp.log(sp.Sum(W[i] * sp.exp(q * (-U[i])), (i, 1, n))) / q
    pf.same(lhs, rhs, "L_{-q}(u) = -L_q(-u) for every n", key="p->-inf")
    pf.note("so lim_{p->-inf} L = -max(-u) = min u: M_{-inf} = min x")
    pf.latex["limits"] = r"\lim_{p\to0}M_p=\prod x_i^{w_i},\ \lim_{p\to\infty}M_p=\max x_i,\ \lim_{p\to-\infty}M_p=\min x_i"
    return pf.done(Status.PROVED, forms=_log_mean_forms())


def case_limits(d: Drawer) -> Case:
    u = d.log_values()
    sign = d.choice([-1.0, 1.0])
    kind = d.int(0, 5)
    mag = [0.0, 1e-300, 1e-12 * d.float(0.5, 2), 1e-8 * d.float(0.5, 2), math.inf, 1e3 * d.float(0.5, 2)][kind]
    return Case(u=u, p=sign * mag, w=d.weights(len(u)))


def eval_limits(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    u, w, pv = case.u, case.wn(), case.p
    ref = ref_log_mean(deriv, u, w, pv)
    tol = log_tol(u)
    got = to_float(impl.log_power_mean(t64(u), pv, weights=weights_t(case.w)))
    checks = [(abs(got - float(ref)), tol)]
    g_ref = float(mpmath.exp(ref_log_mean(deriv, u, w, 0.0)))
    g = to_float(impl.geometric_mean(t64(np.exp(u)), weights=weights_t(case.w)))
    checks.append((rel_err(g, g_ref), tol))
    if math.isinf(pv):
        m = to_float(impl.power_mean(t64(np.exp(u)), pv, weights=weights_t(case.w)))
        m_ref = float(np.exp(u.max() if pv > 0 else u.min()))
        checks.append((rel_err(m, m_ref), tol))
    return worst(*checks)


T1 = Theorem(
    id="T1-limits",
    title="Limits p -> 0, +inf, -inf",
    statement="M_p(x) tends to the geometric mean prod x_i^{w_i} as p -> 0, to max x as p -> +inf and to min x as p -> -inf.",
    latex=r"\lim_{p\to 0} M_p(x)=\prod_i x_i^{w_i},\qquad \lim_{p\to+\infty} M_p(x)=\max_i x_i,\qquad \lim_{p\to-\infty} M_p(x)=\min_i x_i",
    assumptions=("x_i > 0", "w_i > 0, sum w = 1", "n >= 1"),
    derive=derive_limits,
    key_steps=("p->0", "p->+inf", "p->-inf"),
    certifies=("meantheory.log_power_mean (p = 0, |p| tiny, p = +-inf, |p| large)", "meantheory.geometric_mean",
               "meantheory.power_mean (p = +-inf)"),
    expected=Status.PROVED,
    make_case=case_limits,
    evaluate=eval_limits,
    tolerance="64 eps max(1, max|u|) absolute on log M_p and relative on G, M_{+-inf} (meantheory's stated float64 accuracy); "
              "reference: the derived limit forms, and L_n evaluated in mpmath with 40 + log10(1/|p|) digits",
    refs="Hardy, Littlewood, Polya (1934) thm. 3-4",
)


# ------------------------------------------------------------------ T2: monotone in p (KL)


def _kl_builder(nn: int):
    u, w0 = concrete(nn)
    w = normalised(w0)
    S = sum(wi * sp.exp(p * ui) for ui, wi in zip(u, w))
    pis = [wi * sp.exp(p * ui) / S for ui, wi in zip(u, w)]
    # log(pi_i / w_i) written in log coordinates: p u_i - log S.
    kl = sum(pi * (p * ui - sp.log(S)) for pi, ui in zip(pis, u))
    return (*u, *w0, p), kl / p**2


def _var_half_builder(nn: int):
    u, w0 = concrete(nn)
    w = normalised(w0)
    m = sum(wi * ui for ui, wi in zip(u, w))
    return (*u, *w0), sum(wi * (ui - m) ** 2 for ui, wi in zip(u, w)) / 2


def derive_monotone() -> Derivation:
    pf = Proof()
    Ssym, S1sym = sp.symbols("S S1", positive=True)
    S = S_sum()
    S1 = S_sum(k=1)
    pf.same(sp.diff(S, p), S1, "dS/dp = sum w u e^{p u} =: S1 (differentiation of the finite sum, every n)")
    L = sp.log(S) / p
    dL = sp.diff(L, p).subs(S1, S1sym).subs(S, Ssym)
    # KL(pi || w) = sum pi_i log(pi_i / w_i); one generic term in log coordinates:
    wi_, ui_ = sp.Symbol("w_i", positive=True), sp.Symbol("u_i", real=True)
    pi_i = wi_ * sp.exp(p * ui_) / Ssym
    pf.equal(sp.log(pi_i / wi_), p * ui_ - sp.log(Ssym), "log(pi_i / w_i) = p u_i - log S", log_form=True,
             key="log(pi/w)")
    pf.note("summing pi_i (p u_i - log S) over i: sum pi_i u_i = S1/S and sum pi_i = S/S = 1, so KL = p S1/S - log S")
    KL = p * S1sym / Ssym - sp.log(Ssym)
    pf.equal(dL, KL / p**2, "d log M_p/dp = KL(pi_p || w) / p^2", key="dlogM/dp=KL/p^2")
    # Gibbs: f(t) = t - 1 - log t >= 0 on t > 0, zero only at t = 1.
    t = sp.Symbol("t", positive=True)
    f = t - 1 - sp.log(t)
    crit = sp.solve(sp.diff(f, t), t)
    pf.true(crit == [1] and sp.diff(f, t, 2).is_positive is True and f.subs(t, 1) == 0,
            "t - 1 - log t: unique critical point t = 1, second derivative 1/t^2 > 0, value 0: so >= 0, = 0 iff t = 1",
            key="gibbs")
    pi_s, w_s = sp.symbols("pi_i w_i", positive=True)
    pf.equal(pi_s * f.subs(t, w_s / pi_s), w_s - pi_s + pi_s * sp.log(pi_s / w_s),
             "pi_i f(w_i/pi_i) = w_i - pi_i + pi_i log(pi_i/w_i)", log_form=True, key="kl-terms")
    pf.note("summing: KL(pi || w) = sum_i pi_i f(w_i/pi_i) + (sum pi - sum w) = sum_i pi_i f(w_i/pi_i) >= 0, "
            "= 0 iff pi = w iff e^{p u_i} = S for all i iff all u_i are equal (p != 0)")
    # p = 0 by the series (T4): derivative kappa_2/2 = Var_w(u)/2 >= 0.
    m1, m2 = sp.symbols("m1 m2", real=True)
    ser = sp.series(sp.log(1 + m1 * p + m2 * p**2 / 2 + sp.Symbol("m3") * p**3 / 6) / p, p, 0, 2).removeO()
    pf.equal(sp.diff(ser, p), (m2 - m1**2) / 2, "at p = 0: d log M_p/dp = (m2 - m1^2)/2 = Var_w(u)/2 >= 0", key="p=0")
    pf.note("so log M_p is non-decreasing in p on all of R, strictly increasing unless all x_i are equal; "
            "in particular log M_{-1} <= log M_0 <= log M_1: H <= G <= A, with equality iff all x_i are equal")
    return pf.done(Status.PROVED, forms=_log_mean_forms(KLp2=PerN(_kl_builder), var2=PerN(_var_half_builder)))


def case_monotone(d: Drawer) -> Case:
    u = d.log_values()
    kind = d.int(0, 3)
    pv = [d.float(-6, 6), 0.0, d.choice([-1, 1]) * 10 ** d.float(-9, -3), d.choice([-1.0, 1.0])][kind]
    return Case(u=u, p=pv, w=d.weights(len(u)))


_P_GRID = [-math.inf, -30.0, -4.0, -1.0, -0.25, -1e-6, 0.0, 1e-6, 0.25, 1.0, 4.0, 30.0, math.inf]


def _dlogdp_tol(u: np.ndarray, pv: float, ref: float) -> float:
    """Tolerance on d log M_p/dp = KL/p^2 (value ``ref``), from the error model of meantheory's sum.

    meantheory sums KL = sum_i w_i phi(r_i), phi(r) = r e^r - expm1(r) >= 0, r_i = log(pi_i/w_i),
    and divides by p^2. Two sources of error:
    (1) r_i is rounded to ~eps |p| max|u|, which after phi ~ r^2/2 and the division costs
        ~eps max|u| spread absolutely: 64 eps max(1, max|u|) max(1, spread), as for log M_p;
    (2) for |r| >= 1e-3 phi is evaluated directly, and r e^r - expm1(r) cancels 2 eps/|r| relative
        (meantheory's stated bound); |r| is of the order of q = |p| spread, so where q >= 1e-3 the
        relative error is ~2 eps/q (measured: at most 2.4 eps |ref|/q over 3000 draws with q in
        [1e-3, 30]): 8 eps |ref|/q. Below q = 1e-3 phi's series (and at |p| spread <= 1e-6 the
        cumulant series) leave a relative error of a few eps, inside term (1).
    The earlier tolerance multiplied term (1) by 1 + min(1e3 spread, 1/|p|), sized for a series
    threshold of 1e-3 in |p| spread; it allowed up to 1e4 times term (1) where 2.4 times suffices.
    """
    s = float(u.max() - u.min())
    q = abs(pv) * s
    cancel = 8 * EPS * abs(ref) / q if q >= 1e-3 else 0.0
    return 64 * EPS * max(1.0, float(np.abs(u).max())) * max(1.0, s) + cancel


def eval_monotone(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    u, w, pv = case.u, case.wn(), case.p
    nn = len(u)
    ref = mp_eval(deriv.forms["var2"](nn), [*u, *w]) if pv == 0 else mp_eval(deriv.forms["KLp2"](nn), [*u, *w, pv], dps_for(pv, power=2))
    ref = float(ref)
    tol = _dlogdp_tol(u, pv, ref)
    checks = []
    got = to_float(impl.dlog_power_mean_dp(t64(u), pv, weights=weights_t(case.w)))
    checks.append((abs(got - ref), tol))
    pt = torch.tensor(pv, dtype=torch.float64, requires_grad=True)
    val = impl.log_power_mean(t64(u), pt, weights=weights_t(case.w))
    g = grad_or_none(val, pt)
    checks.append((math.inf if g is None else abs(float(g) - ref), tol))
    # monotonicity on a grid, and the chain H <= G <= A
    vals = [to_float(impl.log_power_mean(t64(u), q, weights=weights_t(case.w))) for q in _P_GRID]
    drop = max(0.0, max(a - b for a, b in zip(vals, vals[1:])))
    ltol = log_tol(u)
    checks.append((drop, ltol))
    x = t64(np.exp(u))
    h, g0, a = (to_float(f(x, weights=weights_t(case.w))) for f in (impl.harmonic_mean, impl.geometric_mean, impl.arithmetic_mean))
    checks.append((max(0.0, (h - g0) / g0, (g0 - a) / a), ltol))
    return worst(*checks)


T2 = Theorem(
    id="T2-monotone",
    title="Monotone in p: d log M_p/dp = KL(pi_p || w)/p^2 >= 0; H <= G <= A",
    statement="d log M_p/dp = KL(pi_p || w)/p^2 >= 0 with pi_p = softmax(p u + log w) (Var_w(u)/2 at p = 0), so M_p is "
              "non-decreasing in p, strictly unless all x_i are equal; hence H <= G <= A with equality iff all x_i are equal.",
    latex=r"\frac{d\log M_p}{dp}=\frac{\mathrm{KL}(\pi_p\,\|\,w)}{p^2}\ge 0,\quad \pi_p=\operatorname{softmax}(p u+\log w);\qquad H\le G\le A",
    assumptions=("x_i > 0", "w_i > 0, sum w = 1"),
    derive=derive_monotone,
    key_steps=("dlogM/dp=KL/p^2", "gibbs", "kl-terms", "p=0"),
    certifies=("meantheory.dlog_power_mean_dp", "autograd of meantheory.log_power_mean in p",
               "meantheory.harmonic_mean / geometric_mean / arithmetic_mean (chain)"),
    expected=Status.PROVED,
    make_case=case_monotone,
    evaluate=eval_monotone,
    tolerance="dlog/dp: 64 eps max(1,max|u|) max(1,spread) absolute (rounding of log(pi_i/w_i)), plus 8 eps |dlog/dp| / (|p| spread) "
              "where |p| spread >= 1e-3 (the direct KL terms r e^r - expm1(r) cancel 2 eps/|r| relative); monotone grid and chain: "
              "64 eps max(1,max|u|)",
    refs="Hardy, Littlewood, Polya (1934) thm. 16; Gibbs' inequality",
)


# ------------------------------------------------------------------ T3: sensitivities


def _dLdu_builder(nn: int):
    args, L = _L_builder(nn)
    u = args[:nn]
    return args, [sp.diff(L, uj) for uj in u]


def _dMdx_builder(nn: int):
    x = sp.symbols(f"x1:{nn + 1}", positive=True)
    _, w = concrete(nn)
    M = sum(wi * xi**p for xi, wi in zip(x, normalised(w))) ** (1 / p)
    return (*x, *w, p), [sp.diff(M, xj) for xj in x]


def derive_sensitivity() -> Derivation:
    pf = Proof()
    w1, R, x1 = sp.symbols("w1 R x1", positive=True)
    u1 = sp.Symbol("u1", real=True)
    pf.note("split off one term: S = w_1 e^{p u_1} + R with R = sum_{i>1} w_i e^{p u_i} > 0 not depending on u_1 "
            "(every n >= 1; R = 0 for n = 1 is the trivial case)")
    L = sp.log(w1 * sp.exp(p * u1) + R) / p
    pf.equal(sp.diff(L, u1), w1 * sp.exp(p * u1) / (w1 * sp.exp(p * u1) + R),
             "d log M_p/du_1 = w_1 e^{p u_1} / S = softmax(p u + log w)_1", key="dlogM/du=softmax")
    pf.note("by relabelling, d log M_p/du_i = softmax(p u + log w)_i for every i; the weights sum to 1")
    pn = sp.Symbol("p", real=True, nonzero=True)
    M = (w1 * x1**pn + R) ** (1 / pn)
    dM = sp.diff(M, x1)
    claim = w1 * x1 ** (pn - 1) * M ** (1 - pn)
    pf.zero(sp.log(dM) - sp.log(claim), "dM_p/dx_1 = w_1 x_1^(p-1) M_p^(1-p) (log of the ratio reduces to 0)", log_form=True,
            key="dM/dx")
    # cross-check n = 3 on the explicit expression
    args, L3 = _L_builder(3)
    u, w = args[:3], args[3:6]
    S3 = sum(wi * sp.exp(p * ui) for ui, wi in zip(u, w))
    for j in range(3):
        pf.equal(sp.diff(L3, u[j]), w[j] * sp.exp(p * u[j]) / S3, f"cross-check n = 3, i = {j + 1}")
    return pf.done(Status.PROVED, forms={"dLdu": PerN(_dLdu_builder), "dMdx": PerN(_dMdx_builder)})


def case_sensitivity(d: Drawer) -> Case:
    u = d.log_values(1, 6, -3, 3)
    pv = d.choice([0.0, -1.0, 1.0, d.float(-5, 5), d.float(-5, 5)])
    return Case(u=u, p=pv, w=d.weights(len(u)))


def eval_sensitivity(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    u, w, pv = case.u, case.wn(), case.p
    nn = len(u)
    ref = mp_floats(deriv.forms["dLdu"](nn), [*u, *w, pv], dps_for(pv))
    # softmax is well conditioned: relative error ~ eps |p| spread per entry
    tol = 64 * EPS * max(1.0, abs(pv) * float(u.max() - u.min()))
    checks = []
    mw = impl.mean_weights(t64(u), pv, weights=weights_t(case.w))
    checks.append((float(np.abs(np.asarray(mw.detach(), dtype=np.float64) - ref).max()), tol))
    ut = t64(u, requires_grad=True)
    g = grad_or_none(impl.log_power_mean(ut, pv, weights=weights_t(case.w)), ut)
    checks.append((math.inf if g is None else float(np.abs(g.numpy() - ref).max()), tol))
    if pv != 0:
        x = np.exp(u)
        refx = mp_floats(deriv.forms["dMdx"](nn), [*x, *w, pv], dps_for(pv))
        xt = t64(x, requires_grad=True)
        gx = grad_or_none(impl.power_mean(xt, pv, weights=weights_t(case.w)), xt)
        err = math.inf if gx is None else float(np.abs((gx.numpy() - refx) / refx).max())
        checks.append((err, 64 * EPS * max(1.0, abs(pv)) * max(1.0, float(np.abs(u).max()))))
    return worst(*checks)


T3 = Theorem(
    id="T3-sensitivity",
    title="Sensitivities: d log M_p/d log x_i = softmax(p u + log w)_i; dM_p/dx_i = w_i x_i^(p-1) M_p^(1-p)",
    statement="The gradient of log M_p with respect to u_i = log x_i is softmax(p u + log w)_i, and dM_p/dx_i = w_i x_i^(p-1) M_p^(1-p).",
    latex=r"\frac{\partial\log M_p}{\partial\log x_i}=\operatorname{softmax}(p u+\log w)_i,\qquad \frac{\partial M_p}{\partial x_i}=w_i x_i^{p-1}M_p^{1-p}",
    assumptions=("x_i > 0", "w_i > 0, sum w = 1", "p real (p != 0 for the second form)"),
    derive=derive_sensitivity,
    key_steps=("dlogM/du=softmax", "dM/dx"),
    certifies=("meantheory.mean_weights", "autograd of meantheory.log_power_mean in log_x", "autograd of meantheory.power_mean in x"),
    expected=Status.PROVED,
    make_case=case_sensitivity,
    evaluate=eval_sensitivity,
    tolerance="weights: 64 eps max(1, |p| spread) absolute; dM/dx: 64 eps max(1,|p|) max(1,max|u|) relative",
    refs="Boyd and Vandenberghe (2004) sec. 3.1.5 (log-sum-exp gradient)",
)


# ------------------------------------------------------------------ T4: cumulant series


def cumulant_in_moments(order: int) -> list[sp.Expr]:
    """kappa_1..kappa_order as polynomials in raw moments m1..m_order (via central moments)."""
    m = sp.symbols(f"m1:{order + 1}", real=True)
    raw = {0: sp.Integer(1), **{k: m[k - 1] for k in range(1, order + 1)}}
    mu = {j: sp.expand(sum(sp.binomial(j, r) * raw[r] * (-m[0]) ** (j - r) for r in range(j + 1))) for j in range(1, order + 1)}
    mu[1] = sp.Integer(0)
    ks = [m[0]]
    for nn in range(2, order + 1):
        kn = mu[nn]
        for j in range(2, nn - 1):
            kn = kn - sp.binomial(nn - 1, j - 1) * ks[j - 1] * mu[nn - j]
        ks.append(sp.expand(kn))
    return ks


def series_coefficients(order: int) -> list[sp.Expr]:
    """Coefficients c_0..c_{order-1} of log(S(p))/p = sum c_j p^j, with S(p) = 1 + sum m_k p^k / k!."""
    m = sp.symbols(f"m1:{order + 1}", real=True)
    S = 1 + sum(m[k - 1] * p**k / sp.factorial(k) for k in range(1, order + 1))
    ser = sp.expand(sp.series(sp.log(S), p, 0, order + 1).removeO())
    return [sp.expand(ser.coeff(p, j + 1)) for j in range(order)]


def derive_series() -> Derivation:
    pf = Proof()
    K = SERIES_ORDER
    pf.note("S(p) = sum_i w_i e^{p u_i} = 1 + sum_k m_k p^k / k! with raw moments m_k = sum w u^k (every n; sum w = 1)")
    coefs = series_coefficients(K)
    ks = cumulant_in_moments(K)
    for j in range(K):
        pf.equal(coefs[j], ks[j] / sp.factorial(j + 1), f"coefficient of p^{j}: kappa_{j + 1}/{j + 1}!", key=f"coef-p{j}")
    pf.note("so log M_p = kappa_1 + kappa_2 p/2 + kappa_3 p^2/6 + ... (cumulants of u under w)")
    # log H ~ log G - Var/2 for small spread: scale u - mean by t, cumulant j scales as t^j.
    tt = sp.Symbol("t", positive=True)
    kap = sp.symbols(f"k1:{K + 1}", real=True)
    logH = kap[0] + sum(kap[j] * tt ** (j + 1) * (-1) ** j / sp.factorial(j + 1) for j in range(1, K))
    lead = sp.series(logH - (kap[0] - kap[1] * tt**2 / 2), tt, 0, 3).removeO()
    pf.equal(lead, 0, "log H - (log G - Var(u)/2) = O(t^3) when the spread of u scales as t", key="harmonic")
    pf.note("kappa_3 >= 0 (right skew in log space) makes H sit above exp(log G - Var/2) to third order")
    coef_forms = [sp.lambdify(sp.symbols(f"m1:{K + 1}", real=True), c, modules="mpmath") for c in coefs]
    return pf.done(Status.PROVED, forms=_log_mean_forms(coefs=coef_forms))


def _series_ref(deriv: Derivation, u: np.ndarray, w: np.ndarray, pv: float, order: int) -> float:
    ms = mp_moments(u, w, SERIES_ORDER)
    with mpmath.workdps(40):
        cs = [deriv.forms["coefs"][j](*ms) for j in range(order)]
        return float(mpmath.fsum(c * mpmath.mpf(pv) ** j for j, c in enumerate(cs)))


def case_series(d: Drawer) -> Case:
    u = d.log_values(1, 6, -3, 3)
    s = max(float(u.max() - u.min()), 0.5)  # p stays moderate when the spread is tiny
    kind = d.int(0, 3)
    # |p| spread at most 1e-3, up to 1e-2, p = 0, or at most 1e-7: the last two take
    # meantheory's value series (p = 0 and |p| spread <= 1e-6), the first two mostly its
    # expm1/log1p branch, so both sides of the switch are held to the same series
    lim = [1e-3, 1e-2, 0.0, 1e-7][kind]
    pv = d.float(-lim, lim) / s if lim else 0.0
    return Case(u=u, p=pv, w=d.weights(len(u)), extra={"order": d.int(1, SERIES_ORDER), "t": d.float(1e-3, 0.05)})


def eval_series(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    u, w, pv = case.u, case.wn(), case.p
    s = float(u.max() - u.min())
    order = case.extra["order"]
    checks = []
    ref_k = _series_ref(deriv, u, w, pv, order)
    got_k = to_float(impl.cumulant_series(t64(u), pv, order, weights=weights_t(case.w)))
    checks.append((abs(got_k - ref_k), log_tol(u)))
    # log M_p against the full order-6 series; remainder kappa_7 p^6/7! with |kappa_7| <= 267 spread^7
    # (267 = sum of |coefficients| of kappa_7 in central moments, |mu_k| <= spread^k), doubled for the tail.
    ref6 = _series_ref(deriv, u, w, pv, SERIES_ORDER)
    got = to_float(impl.log_power_mean(t64(u), pv, weights=weights_t(case.w)))
    rem = 2 * 267 * (abs(pv) * s) ** 6 * s / 5040
    checks.append((abs(got - ref6), log_tol(u) + rem))
    # consequence: log H ~ log G - Var/2 at small spread t; |log H - (k1 - k2/2)| <= t^3 (|kappa_3|/6 <= t^3/6,
    # |kappa_4|/24 <= t^4/6, ... for t <= 0.05)
    t = case.extra["t"]
    c = (u - u.mean()) / max(s, 1e-300) * t + 0.3
    k1, k2 = float(np.sum(w * c)), float(np.sum(w * (c - np.sum(w * c)) ** 2))
    h = to_float(impl.harmonic_mean(t64(np.exp(c)), weights=weights_t(case.w)))
    checks.append((abs(math.log(h) - (k1 - k2 / 2)), t**3 + log_tol(c)))
    return worst(*checks)


T4 = Theorem(
    id="T4-cumulant-series",
    title="Cumulant series log M_p = k1 + k2 p/2 + k3 p^2/6 + ...; log H ~ log G - Var/2",
    statement="log M_p = sum_j kappa_j p^(j-1)/j! with kappa_j the weighted cumulants of u = log x (derived through kappa_6); "
              "consequently log H = log G - Var(u)/2 + O(spread^3).",
    latex=r"\log M_p=\kappa_1+\frac{\kappa_2}{2}p+\frac{\kappa_3}{6}p^2+O(p^3),\qquad \log H=\log G-\tfrac12\operatorname{Var}_w(\log x)+O(s^3)",
    assumptions=("x_i > 0", "w_i > 0, sum w = 1", "|p| below the radius of convergence (order 1/spread)"),
    derive=derive_series,
    key_steps=(*(f"coef-p{j}" for j in range(SERIES_ORDER)), "harmonic"),
    certifies=("meantheory.cumulant_series", "meantheory.log_power_mean near p = 0 (|p| spread <= 1e-2, and p = 0)", "meantheory.harmonic_mean"),
    expected=Status.PROVED,
    make_case=case_series,
    evaluate=eval_series,
    tolerance="64 eps max(1,max|u|) plus the stated truncation bound (2 * 267 (|p| s)^6 s / 7! for the order-6 series; s^3 "
              "for log H ~ log G - Var/2)",
    refs="Kendall and Stuart vol. 1 ch. 3",
)


# ------------------------------------------------------------------ T5: homogeneity, duality, symmetry


def derive_homogeneity() -> Derivation:
    pf = Proof()
    a = sp.Symbol("a", real=True)
    shifted = sp.factor_terms(sp.expand(S_sum(shift=a)))
    pf.same(shifted, sp.exp(a * p) * S_sum(), "sum w e^{p (u + a)} = e^{p a} sum w e^{p u} (every n)", key="shift")
    Ssym = sp.Symbol("S", positive=True)
    pf.equal(sp.log(sp.exp(a * p) * Ssym) / p, a + sp.log(Ssym) / p, "log M_p(e^a x) = a + log M_p(x)", log_form=True,
             key="homogeneity")
    pf.note("with a = log c: M_p(c x) = c M_p(x) (homogeneity of degree 1); p = 0 and +-inf follow from the limits (T1)")
    q = sp.Symbol("q", real=True, nonzero=True)
    lhs = -(sp.log(sp.Sum(W[i] * sp.exp((-q) * (-U[i])), (i, 1, n))) / (-q))
    pf.same(lhs, sp.log(S_sum(q)) / q, "-log M_{-p}(1/x) = log M_p(x) (every n)", key="duality")
    pf.note("duality: M_p(x) = 1 / M_{-p}(1/x); the harmonic mean is the reciprocal of the arithmetic mean of 1/x")
    return pf.done(Status.PROVED, forms=_log_mean_forms())


def case_homogeneity(d: Drawer) -> Case:
    u = d.log_values()
    pv = d.choice([0.0, math.inf, -math.inf, d.float(-6, 6), d.float(-6, 6), -1.0, 1.0])
    return Case(u=u, p=pv, w=d.weights(len(u)), extra={"a": d.float(-20, 20)})


def eval_homogeneity(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    u, w, pv, a = case.u, case.wn(), case.p, case.extra["a"]
    ref = float(ref_log_mean(deriv, u, w, pv))
    tol = log_tol(np.concatenate([u, u + a]))
    got_shift = to_float(impl.log_power_mean(t64(u + a), pv, weights=weights_t(case.w)))
    got_dual = -to_float(impl.log_power_mean(t64(-u), -pv, weights=weights_t(case.w)))
    x = np.exp(u)
    m = to_float(impl.power_mean(t64(x), pv, weights=weights_t(case.w)))
    m_dual = 1.0 / to_float(impl.power_mean(t64(1.0 / x), -pv, weights=weights_t(case.w)))
    return worst((abs(got_shift - (ref + a)), tol), (abs(got_dual - ref), tol), (rel_err(m, m_dual, m), 2 * tol))


T5 = Theorem(
    id="T5-homogeneity-duality",
    title="Homogeneity M_p(c x) = c M_p(x); duality M_p(x) = 1/M_-p(1/x)",
    statement="For c > 0, M_p(c x) = c M_p(x); and M_p(x) = 1/M_{-p}(1/x) for every real p (H is the reciprocal of A of 1/x).",
    latex=r"M_p(cx)=c\,M_p(x),\qquad M_p(x)=\frac{1}{M_{-p}(1/x)}",
    assumptions=("x_i > 0, c > 0", "w_i > 0, sum w = 1"),
    derive=derive_homogeneity,
    key_steps=("homogeneity", "duality"),
    certifies=("meantheory.log_power_mean", "meantheory.power_mean"),
    expected=Status.PROVED,
    make_case=case_homogeneity,
    evaluate=eval_homogeneity,
    tolerance="64 eps max(1, max|u|, max|u + a|) absolute in log space (relative on M_p)",
    refs="Bullen (2003) ch. III.1",
)


SYMMETRY_N = 8


def derive_symmetry() -> Derivation:
    pf = Proof()
    for nn in range(2, SYMMETRY_N + 1):
        u, w = concrete(nn)
        # the normalisation sum w is itself symmetric, so it suffices to check S = sum w e^{p u}
        S = sp.Add(*[wi * sp.exp(p * ui) for ui, wi in zip(u, w)])
        swapped = [S.xreplace({u[j]: u[j + 1], u[j + 1]: u[j], w[j]: w[j + 1], w[j + 1]: w[j]}) for j in range(nn - 1)]
        pf.same(sp.Tuple(*swapped), sp.Tuple(*[S] * (nn - 1)),
                f"n = {nn}: sum w e^(p u) is unchanged under each of the {nn - 1} adjacent transpositions of (x_i, w_i)",
                key=f"n={nn}")
    pf.note(f"so for each n = 2..{SYMMETRY_N} log M_p is invariant under every permutation of the pairs (x_i, w_i): "
            "adjacent transpositions generate the symmetric group")
    pf.note("for general n this is the commutativity of a finite sum; sympy's symbolic Sum cannot permute its index, "
            "so the status claims only the concrete n checked")
    return pf.done(Status.PROVED_N, n_max=SYMMETRY_N, forms=_log_mean_forms())


def case_symmetry(d: Drawer) -> Case:
    u = d.log_values(2, 8)
    perm = np.array(sorted(range(len(u)), key=lambda _: d.float(0, 1)))
    return Case(u=u, p=d.choice([0.0, -1.0, 1.0, d.float(-6, 6)]), w=d.weights(len(u)), extra={"perm": perm})


def eval_symmetry(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    u, pv, perm = case.u, case.p, case.extra["perm"]
    w = case.wn()
    ref = float(ref_log_mean(deriv, u, w, pv))
    wt = None if case.w is None else t64(case.w[perm])
    got = to_float(impl.log_power_mean(t64(u[perm]), pv, weights=wt))
    return abs(got - ref), log_tol(u)


T5b = Theorem(
    id="T5b-symmetry",
    title="Symmetry: M_p is invariant under permuting the pairs (x_i, w_i)",
    statement="M_p(x; w) does not depend on the order of the pairs (x_i, w_i).",
    latex=r"M_p(x_{\sigma(1)},\dots,x_{\sigma(n)};\,w_\sigma)=M_p(x;\,w)\quad\forall\sigma\in S_n",
    assumptions=("x_i > 0", "w_i > 0"),
    derive=derive_symmetry,
    key_steps=tuple(f"n={nn}" for nn in range(2, SYMMETRY_N + 1)),
    certifies=("meantheory.log_power_mean",),
    expected=Status.PROVED_N,
    make_case=case_symmetry,
    evaluate=eval_symmetry,
    tolerance="64 eps max(1, max|u|) absolute against the unpermuted mpmath reference",
)

THEOREMS = [T1, T2, T3, T4, T5, T5b]


# ------------------------------------------------------------------ T14: the risk reading


def derive_risk() -> Derivation:
    pf = Proof()
    x, c = sp.symbols("x c", positive=True)
    q = sp.Symbol("p", real=True, nonzero=True)
    util = (x**q - 1) / q
    pf.limit(util, q, 0, sp.log(x), "Box-Cox utility u_p(x) = (x^p - 1)/p tends to log x as p -> 0", key="utility-p->0")
    Ssym = sp.Symbol("S", positive=True)  # S = sum w x^p
    ce = sp.solve(sp.Eq((c**q - 1) / q, (Ssym - 1) / q), c)
    pf.equal(sp.log(ce[0]), sp.log(Ssym) / q, "certainty equivalent: u_p(CE) = sum w u_p(x) gives CE = (sum w x^p)^(1/p) = M_p",
             log_form=True, key="certainty-equivalent")
    rra = sp.simplify(-x * sp.diff(util, x, 2) / sp.diff(util, x))
    pf.equal(rra, 1 - q, "relative risk aversion -x u''/u' = 1 - p (constant: CRRA)", key="rra=1-p")
    pf.equal((-x * sp.diff(sp.log(x), x, 2) / sp.diff(sp.log(x), x)), 1, "p = 0 (log utility, Kelly): relative risk aversion 1")
    pf.note("so the arithmetic mean (p = 1) is risk-neutral, the geometric (p = 0, Kelly) has risk aversion 1, the harmonic 2; "
            "only p > 1 is risk-seeking (convex utility). Risk aversion decreases with p, consistent with T2")
    return pf.done(Status.PROVED, forms=_log_mean_forms())


def case_risk(d: Drawer) -> Case:
    u = d.log_values(1, 6, -3, 3)
    return Case(u=u, p=d.choice([-2.0, -1.0, 0.0, 0.5, 1.0, 2.0, d.float(-4, 4)]), w=d.weights(len(u)))


def eval_risk(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    u, w, pv = case.u, case.wn(), case.p
    # (x^P - 1)/P and its inverse cancel about |log10 P| digits: carry them (P = 2e-135 was
    # drawn once, and 50 digits then gave ce = 1 instead of e).
    extra = 0 if pv == 0 else max(0, int(-math.log10(abs(pv)))) + 10
    with mpmath.workdps(50 + extra):
        us, ws = mp_weighted(u, w)
        xs = [mpmath.exp(v) for v in us]
        if pv == 0:
            ce = mpmath.exp(mpmath.fsum(wi * mpmath.log(xi) for xi, wi in zip(xs, ws)))
        else:
            P = mpmath.mpf(pv)
            eu = mpmath.fsum(wi * (xi**P - 1) / P for xi, wi in zip(xs, ws))
            ce = (1 + P * eu) ** (1 / P)  # inverse utility
    got = to_float(impl.power_mean(t64(np.exp(u)), pv, weights=weights_t(case.w)))
    return rel_err(got, ce), log_tol(u)


T14 = Theorem(
    id="T14-risk",
    title="Risk reading: M_p is the certainty equivalent of CRRA utility with relative risk aversion 1 - p",
    statement="M_p(x) is the certainty equivalent of the utility u_p(x) = (x^p - 1)/p (log x at p = 0) under weights w; its relative "
              "risk aversion is 1 - p. Arithmetic (p = 1) is risk-neutral, geometric (Kelly) has risk aversion 1, harmonic 2; "
              "only p > 1 is risk-seeking.",
    latex=r"u_p(M_p)=\sum_i w_i u_p(x_i),\quad u_p(x)=\frac{x^p-1}{p},\quad -\frac{x u_p''(x)}{u_p'(x)}=1-p",
    assumptions=("x_i > 0", "w_i > 0, sum w = 1"),
    derive=derive_risk,
    key_steps=("certainty-equivalent", "rra=1-p"),
    certifies=("meantheory.power_mean",),
    expected=Status.PROVED,
    make_case=case_risk,
    evaluate=eval_risk,
    tolerance="relative 64 eps max(1, max|u|) against the inverse utility of the expected utility in mpmath",
    refs="Pratt (1964); Kelly (1956)",
)

THEOREMS.append(T14)

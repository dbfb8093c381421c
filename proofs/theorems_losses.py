r"""Theorems about power-mean policy losses, stated with meantheory's functions.

A sequence of T tokens has log-ratios ``u_t = log pi_t - log pi_old_t`` (``l_t = log pi_t``),
token weights ``w_t`` (``1/T`` for the sequence token-mean) and the sequence ratio
``s = M_p(r) = exp(log_power_mean(u, p))``. GRPO's token-level surrogate with
per-sequence token-mean aggregation is ``sum_t w_t A r_t``; GSPO's is ``A s`` with p = 0;
HMPO's is ``A s`` with p = -1; PPO clipping replaces ``A s`` by
``min(A s, A clip(s, 1 - eps, 1 + eps))``.

These are symbolic statements about the losses of ``rl.losses`` (issue 4). Their numeric
checks here run against the meantheory functions the losses are built on (proofs does not
import rl); checks against ``rl.losses.policy_loss`` itself live in
tests/proofs/test_theorems_losses.py (T9, T10, T13) and tests/rl/losses/test_clipping.py (T12).
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import sympy as sp
import torch

from proofs.core import EPS, Case, Derivation, Drawer, Impl, Proof, Status, Theorem, log_tol, worst
from proofs.forms import PerN, concrete, dps_for, grad_or_none, mp_eval, mp_floats, normalised, p, t64, to_float
from proofs.theorems_means import _kl_builder

__all__ = ["THEOREMS", "CLIP_EPS"]

CLIP_EPS = 0.2

w1, R = sp.symbols("w1 R", positive=True)
l1, o1 = sp.symbols("l1 o1", real=True)


def _split_ratio() -> sp.Expr:
    """s = M_p(r) with token 1 split off: exp(log(w_1 e^{p (l_1 - o_1)} + R) / p), R > 0 the other tokens' terms."""
    return sp.exp(sp.log(w1 * sp.exp(p * (l1 - o1)) + R) / p)


def _geometric_ratio_n3() -> tuple[tuple[sp.Symbol, ...], tuple[sp.Symbol, ...], sp.Expr]:
    """(u, w, s_0): the p = 0 (GSPO) sequence ratio exp(sum w u) of three tokens with weights summing to 1."""
    u, w = concrete(3)
    return u, w, sp.exp(sum(wi * ui for ui, wi in zip(u, w)))


def _s_builder(nn: int):
    u, w = concrete(nn)
    s = sp.exp(sp.log(sum(wi * sp.exp(p * ui) for ui, wi in zip(u, normalised(w)))) / p)
    return (*u, *w, p), [sp.diff(s, uj) for uj in u]


def _draw_seq(d: Drawer, sigma_max: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logp, old_logp, mask) with trailing padding whose entries are NaN (must never leak)."""
    T = d.int(1, 8)
    pad = d.int(0, 3)
    logp = d.floats(T, -6.0, -0.01)
    sigma = d.choice([0.01, 0.3, sigma_max])
    old = logp + d.floats(T, -sigma, sigma)
    mask = np.array([True] * T + [False] * pad)
    logp = np.concatenate([logp, np.full(pad, np.nan)])
    old = np.concatenate([old, np.full(pad, np.nan)])
    return logp, old, mask


# ------------------------------------------------------------------ T9: gradient of s


def derive_seq_gradient() -> Derivation:
    pf = Proof()
    pf.note("split off token 1: S = w_1 e^{p (l_1 - o_1)} + R, R > 0 the other tokens' terms (independent of l_1)")
    s = _split_ratio()
    pi1 = w1 * sp.exp(p * (l1 - o1)) / (w1 * sp.exp(p * (l1 - o1)) + R)
    pf.equal(sp.diff(s, l1), s * pi1, "ds/d log pi_1 = s softmax(p log r + log w)_1", key="ds/dlogpi")
    u, w, s0 = _geometric_ratio_n3()
    pf.equal(sp.diff(s0, u[0]), s0 * w[0], "p = 0 (GSPO, geometric): ds/d log pi_1 = s w_1", key="p=0")
    pf.note("chain rule: grad_theta s = s sum_t softmax(p log r + log w)_t grad_theta log pi_t; "
            "p < 0 concentrates the gradient on the tokens with the smallest ratios, p > 0 on the largest")
    return pf.done(Status.PROVED, forms={"ds": PerN(_s_builder)})


def case_seq(d: Drawer) -> Case:
    logp, old, mask = _draw_seq(d)
    pv = d.choice([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, d.float(-4, 4)])
    return Case(u=logp, p=pv, extra={"old": old, "mask": mask})


def eval_seq_gradient(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    logp, old, mask, pv = case.u, case.extra["old"], case.extra["mask"], case.p
    valid = mask
    uv = (logp - old)[valid]
    T = len(uv)
    w = np.full(T, 1.0 / T)
    ref = mp_floats(deriv.forms["ds"](T), [*uv, *w, pv], dps_for(pv)) if pv != 0 else None
    if pv == 0:
        ref = np.exp(uv.mean()) * w
    lp = t64(logp, requires_grad=True)
    m = torch.tensor(mask)
    s = torch.exp(impl.log_power_mean(lp - t64(old), pv, mask=m))
    g = grad_or_none(s, lp)
    if g is None:
        return math.inf, 1.0
    g = g.numpy()
    scale = float(np.abs(ref).max())
    tol = 64 * EPS * max(1.0, abs(pv) * float(uv.max() - uv.min()), float(np.abs(uv).max()))
    checks = [(float(np.abs(g[valid] - ref).max()) / scale, tol)]
    checks.append((float(np.abs(g[~valid]).max()) if (~valid).any() else 0.0, 1e-300))  # padding: exactly 0
    sw = to_float(s) * np.asarray(impl.mean_weights(t64(logp) - t64(old), pv, mask=m).detach(), dtype=np.float64)
    checks.append((float(np.abs(sw[valid] - ref).max()) / scale, tol))
    return worst(*checks)


T9 = Theorem(
    id="T9-seq-gradient",
    title="Policy gradient of a sequence power-mean ratio: grad s = s sum_t softmax(p log r)_t grad log pi_t",
    statement="For s = M_p(r_1..r_T) with r_t = pi_t/pi_old_t and token weights w, ds/d log pi_t = s softmax(p log r + log w)_t; "
              "with equal weights, grad s = s sum_t softmax(p log r)_t grad log pi_t. Padding tokens get exactly zero gradient.",
    latex=r"\nabla_\theta s=s\sum_t\operatorname{softmax}(p\log r)_t\,\nabla_\theta\log\pi_\theta(y_t\mid x,y_{<t})",
    assumptions=("r_t > 0", "w_t > 0 (1/T for the token mean)", "p real"),
    derive=derive_seq_gradient,
    key_steps=("ds/dlogpi", "p=0"),
    certifies=("autograd of exp(meantheory.log_power_mean(logp - old_logp, p, mask))", "meantheory.mean_weights",
               "rl.losses.policy_loss(level='sequence') (tests/proofs/test_theorems_losses.py)"),
    expected=Status.PROVED,
    make_case=case_seq,
    evaluate=eval_seq_gradient,
    tolerance="relative to max|grad|: 64 eps max(1, |p| spread, max|log r|); padded positions exactly 0",
)


# ------------------------------------------------------------------ T10: on-policy equivalence


def derive_on_policy() -> Derivation:
    pf = Proof()
    s = _split_ratio()
    g = sp.diff(s, l1)
    on = g.subs(l1, o1).subs(R, 1 - w1)
    pf.equal(on, w1, "at pi = pi_old (every r_t = 1, so R = 1 - w_1): ds/d log pi_1 = w_1 for every p != 0", key="on-policy")
    u, w, s0 = _geometric_ratio_n3()
    pf.equal(sp.diff(s0, u[0]).subs({ui: 0 for ui in u}), w[0], "p = 0 (GSPO): ds/d log pi_1 = w_1 at r = 1", key="p=0")
    A = sp.Symbol("A", real=True)
    J_tok = A * w1 * sp.exp(l1 - o1) + sp.Symbol("rest")
    pf.equal(sp.diff(J_tok, l1).subs(l1, o1), A * w1,
             "token-level GRPO, per-sequence token-mean: d/d log pi_1 sum_t w_t A r_t = A w_1 at r = 1", key="token-grpo")
    pf.note("so at pi = pi_old every power mean (GRPO-token, GSPO, HMPO, any p) gives the gradient A sum_t w_t grad log pi_t; "
            "the clip [1 - eps, 1 + eps] contains 1, so PPO clipping does not change it")
    d2 = sp.diff(s, l1, 2).subs(l1, o1).subs(R, 1 - w1)
    pf.equal(d2, w1**2 + p * w1 * (1 - w1), "second order differs: d^2 s/d(log pi_1)^2 = w_1^2 + p w_1 (1 - w_1) at r = 1",
             key="second-order")
    pf.note("the means differ only off-policy (and in curvature), so the off-policy degree decides whether p matters")
    return pf.done(Status.PROVED)


def case_on_policy(d: Drawer) -> Case:
    logp, _, mask = _draw_seq(d)
    pv = d.choice([-math.inf, -2.0, -1.0, 0.0, 1.0, 2.0, math.inf, d.float(-5, 5)])
    return Case(u=logp, p=pv, extra={"old": logp.copy(), "mask": mask})


def eval_on_policy(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    logp, mask, pv = case.u, case.extra["mask"], case.p
    T = int(mask.sum())
    m = torch.tensor(mask)
    lp = t64(logp, requires_grad=True)
    old = t64(logp)
    s = torch.exp(impl.log_power_mean(lp - old, pv, mask=m))
    g = grad_or_none(s, lp)
    lp2 = t64(logp, requires_grad=True)
    ratio = torch.exp(torch.where(m, lp2 - old, torch.zeros_like(old)))
    tok = (ratio * m).sum() / T  # token-level GRPO, per-sequence token mean
    (gt,) = torch.autograd.grad(tok, lp2)
    if g is None:
        return math.inf, 1.0
    g, gt = g.numpy(), gt.numpy()
    target = np.where(mask, 1.0 / T, 0.0)
    return worst((float(np.abs(g - target).max()) * T, 8 * EPS), (float(np.abs(gt - target).max()) * T, 8 * EPS),
                  (abs(to_float(s) - 1.0), 8 * EPS))


T10 = Theorem(
    id="T10-on-policy",
    title="On-policy equivalence: at pi = pi_old every p gives the same gradient (= GSPO = token-level GRPO)",
    statement="At pi = pi_old, s = 1 and ds/d log pi_t = w_t for every p (including +-inf), which equals GSPO's gradient and "
              "token-level GRPO's with per-sequence token-mean aggregation; the second derivative is w_t^2 + p w_t (1 - w_t), so "
              "the means differ only off-policy.",
    latex=r"\left.\frac{\partial s}{\partial\log\pi_t}\right|_{\pi=\pi_{old}}=w_t\ \ \forall p,\qquad \left.\frac{\partial^2 s}{\partial(\log\pi_t)^2}\right|_{\pi=\pi_{old}}=w_t^2+p\,w_t(1-w_t)",
    assumptions=("pi = pi_old on every token", "w_t > 0, sum w = 1"),
    derive=derive_on_policy,
    key_steps=("on-policy", "p=0", "token-grpo"),
    certifies=("autograd of exp(meantheory.log_power_mean) at r = 1", "rl.losses.policy_loss levels agree on-policy (tests/proofs/test_theorems_losses.py)"),
    expected=Status.PROVED,
    make_case=case_on_policy,
    evaluate=eval_on_policy,
    tolerance="8 eps relative to 1/T",
)


# ------------------------------------------------------------------ T11: breakdown


def derive_breakdown() -> Derivation:
    pf = Proof()
    r1 = sp.Symbol("r1", positive=True)
    pf.note("harmonic ratio H = 1/(w_1/r_1 + R), R = sum_{t>1} w_t/r_t > 0; weight of token 1: softmax(-log r)_1")
    H = 1 / (w1 / r1 + R)
    pi1 = (w1 / r1) / (w1 / r1 + R)
    pf.limit(H, r1, 0, 0, "one vanishing ratio: H -> 0 as r_1 -> 0+", direction="+", key="H: r->0")
    pf.limit(pi1, r1, 0, 1, "... and its weight -> 1: it takes the whole gradient", direction="+", key="H weight: r->0")
    pf.limit(H, r1, sp.oo, 1 / R, "one huge ratio: H -> 1/R = n / sum_{t>1} 1/r_t (equal weights): bounded", key="H: r->inf")
    pf.limit(pi1, r1, sp.oo, 0, "... and its weight -> 0", key="H weight: r->inf")
    Rp = sp.Symbol("R'", positive=True)
    A = w1 * r1 + Rp
    piA = w1 * r1 / (w1 * r1 + Rp)
    pf.limit(A, r1, sp.oo, sp.oo, "mirror, arithmetic: one huge ratio drives A -> inf", key="A: r->inf")
    pf.limit(piA, r1, sp.oo, 1, "... and its weight -> 1", key="A weight: r->inf")
    pf.limit(A, r1, 0, Rp, "one vanishing ratio leaves A bounded below by R' = sum_{t>1} w_t r_t", direction="+", key="A: r->0")
    pn = sp.Symbol("p", negative=True)
    v = sp.Symbol("v", real=True)
    pf.limit(sp.log(w1 * sp.exp(pn * v) + R) / pn, v, -sp.oo, -sp.oo, "every p < 0: log M_p -> -inf as log r_1 -> -inf",
             key="p<0: r->0")
    pf.limit(sp.log(w1 * sp.exp(pn * v) + R) / pn, v, sp.oo, sp.log(R) / pn, "every p < 0: log M_p stays bounded as log r_1 -> +inf",
             key="p<0: r->inf")
    pf.note("the harmonic mean is robust to huge ratios and not to vanishing ones; the arithmetic mean the reverse; "
            "the geometric mean is unbounded on both sides but gives every token the fixed weight w_t")
    return pf.done(Status.PROVED)


def case_breakdown(d: Drawer) -> Case:
    nn = d.int(2, 6)
    u = d.floats(nn, -1.0, 1.0)
    u[0] = d.choice([-700.0, -300.0, -50.0, -10.0, 10.0, 50.0, 300.0, 700.0])
    return Case(u=u, p=-1.0)


def eval_breakdown(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    u = case.u
    nn = len(u)
    with mpmath.workdps(60):
        us = [mpmath.mpf(float(v)) for v in u]
        Rm = mpmath.fsum(mpmath.exp(-v) for v in us[1:]) / nn
        Hm = 1 / (mpmath.exp(-us[0]) / nn + Rm)
        pi1 = (mpmath.exp(-us[0]) / nn) / (mpmath.exp(-us[0]) / nn + Rm)
        Am = (mpmath.exp(us[0]) + mpmath.fsum(mpmath.exp(v) for v in us[1:])) / nn
        piA = mpmath.exp(us[0]) / nn / Am
    tol = log_tol(u)
    lh = to_float(impl.log_power_mean(t64(u), -1.0))
    la = to_float(impl.log_power_mean(t64(u), 1.0))
    wh = float(impl.mean_weights(t64(u), -1.0)[0])
    wa = float(impl.mean_weights(t64(u), 1.0)[0])
    checks = [(abs(lh - float(mpmath.log(Hm))), tol), (abs(la - float(mpmath.log(Am))), tol),
              (abs(wh - float(pi1)), 16 * EPS), (abs(wa - float(piA)), 16 * EPS)]
    bound = float(mpmath.log(1 / Rm))
    checks.append((max(0.0, lh - bound), tol))  # H < 1/R always
    return worst(*checks)


T11 = Theorem(
    id="T11-breakdown",
    title="Breakdown: a vanishing ratio drives H to 0 and takes all the weight; a huge one leaves H bounded (mirror for A)",
    statement="For the harmonic sequence ratio, r_1 -> 0 gives H -> 0 with token 1's weight -> 1, while r_1 -> inf gives "
              "H -> n / sum_{t>1} 1/r_t with weight -> 0; for the arithmetic ratio the roles swap (r_1 -> inf: A -> inf, weight -> 1; "
              "r_1 -> 0: A bounded). Every p < 0 behaves like H, every p > 0 like A.",
    latex=r"\lim_{r_1\to0}H=0,\ \lim_{r_1\to0}\pi_1=1;\qquad \lim_{r_1\to\infty}H=\frac{n}{\sum_{t>1}1/r_t},\ \lim_{r_1\to\infty}\pi_1=0",
    assumptions=("other ratios fixed and positive",),
    derive=derive_breakdown,
    key_steps=("H: r->0", "H weight: r->0", "H: r->inf", "H weight: r->inf"),
    certifies=("meantheory.log_power_mean (p = -1, 1) at log-ratios down to -700 and up to 700", "meantheory.mean_weights"),
    expected=Status.PROVED,
    make_case=case_breakdown,
    evaluate=eval_breakdown,
    tolerance="64 eps max(1, max|u|) on log H, log A; 16 eps absolute on the weights",
)


# ------------------------------------------------------------------ T12: clipping interplay


def derive_clipping() -> Derivation:
    pf = Proof()
    m, V, eps = sp.symbols("m V epsilon", positive=True)
    pp = sp.Symbol("p", real=True)
    pf.note("T4 with the spread of log r scaled by t: log s_p = m + p V/2 + O(t^3), m = mean log r, V = Var(log r)")
    logs = m + pp * V / 2
    p_up = sp.solve(sp.Eq(logs, sp.log(1 + eps)), pp)
    pf.equal(p_up[0], 2 * (sp.log(1 + eps) - m) / V, "the upper clip 1 + eps bites for p > p_up = 2 (log(1+eps) - m)/V",
             key="p_up")
    p_low = sp.solve(sp.Eq(logs, sp.log(1 - eps)), pp)
    pf.equal(p_low[0], 2 * (sp.log(1 - eps) - m) / V, "the lower clip 1 - eps bites for p < p_low = 2 (log(1-eps) - m)/V",
             key="p_low")
    pf.equal(sp.diff(logs, pp), V / 2, "d log s_p/dp = V/2 > 0 (T2 at p = 0): larger p reaches the upper clip first",
             key="order")
    m_up = sp.solve(sp.Eq(logs, sp.log(1 + eps)), m)[0]
    m_low = sp.solve(sp.Eq(logs, sp.log(1 - eps)), m)[0]
    pf.equal(m_up - m_low, sp.log(1 + eps) - sp.log(1 - eps), "the trust window in mean log-ratio has the same width for every p",
             key="width")
    pf.equal(m_low.subs(pp, -1) - m_low.subs(pp, 0), V / 2,
             "it is shifted by -p V/2: the harmonic ratio (p = -1) hits 1 - eps while the mean log-ratio is still V/2 higher "
             "than for GSPO, and the arithmetic (p = 1) hits 1 + eps V/2 earlier", key="shift")
    pf.note("a p-aware ('bias-corrected') clip centre exp(p V/2) restores GSPO's window to second order")
    return pf.done(Status.PROVED)


def case_clipping(d: Drawer) -> Case:
    nn = d.int(2, 8)
    t = d.float(0.005, 0.1)
    z = d.floats(nn, -1.0, 1.0)
    m0 = d.float(-0.25, 0.25)
    return Case(u=m0 + t * z, p=d.choice([-2.0, -1.0, 0.0, 1.0, 2.0, d.float(-3, 3)]))


def eval_clipping(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    u, pv = case.u, case.p
    m, V = float(u.mean()), float(u.var())
    t = float(u.max() - u.min())
    # kappa_3 p^2/6 + kappa_4 p^3/24 + ...: |kappa_3| <= t^3, |kappa_4| <= 4 t^4 (central moments bounded by t^k)
    def tol(q: float) -> float:
        return q * q * t**3 / 6 + abs(q) ** 3 * t**4 / 6 + 64 * EPS

    checks = [(abs(to_float(impl.log_power_mean(t64(u), pv)) - (m + pv * V / 2)), tol(pv))]
    if V > 1e-8:
        p_up = 2 * (math.log(1 + CLIP_EPS) - m) / V
        if abs(p_up) <= 3:
            checks.append((abs(to_float(impl.log_power_mean(t64(u), p_up)) - math.log(1 + CLIP_EPS)), tol(p_up)))
    return worst(*checks)


T12 = Theorem(
    id="T12-clipping",
    title="Clipping interplay: s_p ~ exp(mean + p Var/2); where [1-eps, 1+eps] bites, per p",
    statement="For a small spread of log-ratios, log s_p = m + p V/2 + O(t^3); the upper clip bites for p > 2(log(1+eps) - m)/V, the "
              "lower for p < 2(log(1-eps) - m)/V; the window in m has the same width for all p but is shifted by -p V/2 "
              "(the harmonic ratio reaches 1 - eps first, the arithmetic 1 + eps first).",
    latex=r"\log s_p=\bar u+\tfrac p2\operatorname{Var}(u)+O(t^3);\quad \text{clip bites iff } p>\tfrac{2(\log(1+\epsilon)-\bar u)}{\operatorname{Var}u}\ \text{or}\ p<\tfrac{2(\log(1-\epsilon)-\bar u)}{\operatorname{Var}u}",
    assumptions=("spread t of log r small (|p| t < 1/2)", "0 < eps < 1"),
    derive=derive_clipping,
    key_steps=("p_up", "p_low", "width", "shift"),
    certifies=("meantheory.log_power_mean at small spread", "rl.losses clip_center='bias-corrected' (tests/rl/losses/test_clipping.py)"),
    expected=Status.PROVED,
    make_case=case_clipping,
    evaluate=eval_clipping,
    tolerance="p^2 t^3/6 + |p|^3 t^4/6 + 64 eps (bounds on the kappa_3 and kappa_4 terms; |kappa_3| <= t^3, |kappa_4| <= 4 t^4)",
)


# ------------------------------------------------------------------ T13: learnable p


def derive_learnable_p() -> Derivation:
    pf = Proof()
    S = sp.Function("S", positive=True)
    A = sp.Symbol("A", real=True)
    L = sp.log(S(p)) / p
    J = A * sp.exp(L)
    pf.equal(sp.diff(J, p), A * sp.exp(L) * sp.diff(L, p), "dJ/dp = A s d log M_p/dp = A s KL(pi_p || w)/p^2 (T2)", key="dJ/dp")
    pf.note("KL >= 0 (T2), so sign(dJ/dp) = sign(A): gradient ascent on J raises p for positive advantages, lowers it for negative")
    pf.note("clipped branch: for A > 0 and s > 1 + eps, J = A (1 + eps) does not depend on p; for A < 0 and s < 1 - eps, "
            "J = A (1 - eps): dJ/dp = 0 there")
    pf.note("so a positive-advantage sequence pushes p up until s_p = 1 + eps (p_up of T12), a negative one pushes p down "
            "until s_p = 1 - eps (p_low)")
    Aj, gj = sp.IndexedBase("A"), sp.IndexedBase("g")
    j, N = sp.symbols("j N", integer=True, positive=True)
    gbar = sp.Symbol("gbar", real=True)
    lhs = sp.Sum(Aj[j] * (gj[j] - gbar), (j, 1, N)).expand()
    rhs = sp.Sum(Aj[j] * gj[j], (j, 1, N)) - gbar * sp.Sum(Aj[j], (j, 1, N))
    pf.zero(sp.factor_terms(lhs - rhs.expand()), "with group-normalised advantages (sum A = 0) the shared-p drift "
            "sum_j A_j g_j equals sum_j A_j (g_j - gbar), g_j = s_j KL_j/p^2 on unclipped sequences", key="drift")
    pf.note("so p drifts towards the arithmetic side when the positive-advantage sequences have the larger log-ratio spread, "
            "towards the harmonic side otherwise; on-policy (all r = 1) KL = 0 and p receives no gradient at all")
    return pf.done(Status.PROVED)


def case_learnable(d: Drawer) -> Case:
    nn = d.int(2, 6)
    u = d.floats(nn, -0.6, 0.6)
    return Case(u=u, p=d.choice([d.float(-3, 3), -1.0, 1.0, 0.5]), extra={"A": d.choice([-1.0, 1.0, d.float(-2, 2)])})


def eval_learnable(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    u, pv, Adv = case.u, case.p, case.extra["A"]
    nn = len(u)
    klf = deriv.forms.setdefault("KLp2", PerN(_kl_builder))
    w = np.full(nn, 1.0 / nn)
    if pv == 0:  # the limit p -> 0 of KL/p^2 is Var(u)/2 (T2, T4)
        ref_d = float(np.var(u)) / 2
    else:
        ref_d = float(mp_eval(klf(nn), [*u, *w, pv], dps_for(pv, power=2)))
    pt = torch.tensor(pv, dtype=torch.float64, requires_grad=True)
    s = torch.exp(impl.log_power_mean(t64(u), pt))
    J = Adv * s
    g = grad_or_none(J, pt)
    if g is None:
        return math.inf, 1.0
    ref = Adv * to_float(s) * ref_d
    spread = float(u.max() - u.min())
    tol = 64 * EPS * max(1.0, spread) * (1 + 1.0 / max(abs(pv), 1e-3)) * max(1.0, abs(ref))
    checks = [(abs(float(g) - ref), tol)]
    pt2 = torch.tensor(pv, dtype=torch.float64, requires_grad=True)
    s2 = torch.exp(impl.log_power_mean(t64(u), pt2))
    Jc = torch.minimum(Adv * s2, Adv * torch.clamp(s2, 1 - CLIP_EPS, 1 + CLIP_EPS))
    gc = grad_or_none(Jc, pt2)
    gc = 0.0 if gc is None else float(gc)
    sv = to_float(s2)
    clipped = (Adv > 0 and sv > 1 + CLIP_EPS) or (Adv < 0 and sv < 1 - CLIP_EPS)
    checks.append((abs(gc - (0.0 if clipped else ref)), tol))
    return worst(*checks)


T13 = Theorem(
    id="T13-learnable-p",
    title="Learnable p: dJ/dp = A s KL(pi_p || w)/p^2 (0 where clipped); where p drifts",
    statement="For the surrogate J = min(A s_p, A clip(s_p)), dJ/dp = A s_p KL(pi_p || w)/p^2 on the unclipped branch and 0 on the "
              "clipped one; its sign is sign(A), so positive advantages push p towards the arithmetic side until s_p = 1 + eps, "
              "negative ones towards the harmonic side until s_p = 1 - eps; on-policy p gets no gradient.",
    latex=r"\frac{\partial J}{\partial p}=A\,s_p\,\frac{\mathrm{KL}(\pi_p\|w)}{p^2}\,\mathbb 1[\text{unclipped}],\qquad \operatorname{sign}\frac{\partial J}{\partial p}=\operatorname{sign}A",
    assumptions=("s_p = M_p(r)", "0 < eps < 1", "p != 0 (the limit p -> 0 is A s Var/2)"),
    derive=derive_learnable_p,
    key_steps=("dJ/dp", "drift"),
    certifies=("autograd of meantheory.log_power_mean in a tensor p", "rl.losses.policy_loss with learnable p (tests/proofs/test_theorems_losses.py)"),
    expected=Status.PROVED,
    make_case=case_learnable,
    evaluate=eval_learnable,
    tolerance="64 eps max(1, spread) (1 + 1/max(|p|, 1e-3)) max(1, |dJ/dp|) absolute",
)

THEOREMS = [T9, T10, T11, T12, T13]

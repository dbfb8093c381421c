r"""Theorems about the single-answer policy-gradient estimator of each mean (issue 12).

Setting: answers y in [0, V)^T drawn from a behaviour policy mu, a current policy pi_theta,
reward r(y), constant baseline b (the study's J(mu)), ``A = r - b``, token log-ratios
``l_t = log pi_t(y_t) - log mu_t(y_t)`` (minus the mismatch noise ``eps_t ~ N(0, tau^2)`` when there is
some) and ``g(y) = sum_t c_t grad log pi_t(y_t)``, where ``c_t = A s pi_t`` for the sequence ratio
``s = M_p(e^l)`` with weights ``pi = softmax(p l)`` (T9), ``c_t = A r_t / T`` for token-level GRPO
(per-sequence token mean), and ``c_t = A prod_k r_k`` for the full likelihood ratio (is-product).
The estimator study (rl.envs.estimator, rl.studies.estimator) measures ``E_mu g`` against
``grad J``; these theorems say where the answer is known exactly:

* TE1: on-policy every variant gives ``E g = (kappa / T) grad J`` (kappa = 1 for the per-token
  normalised aggregations, T for ``seq-mean-token-sum``): cosine 1, scaled bias 0, rel_bias
  ``1 - 1/T`` only for the normalised aggregations (0 for token sums and for is-product);
* TE2: is-product is unbiased for every mu; the noise multiplies it by ``exp(T tau^2 / 2)``;
* TE3: factorized policy and additive (count) reward: p = 1 and token-level GRPO give
  ``E g = grad J / T`` for every mu (times ``exp(tau^2 / 2)`` with noise);
* TE4: for non-additive rewards no such identity: a counterexample for every p tried;
* TE5: i.i.d. Gaussian log-ratios of spread sigma: the token-weight ESS tends to ``exp(-p^2 sigma^2)``;
* TE6: noise without policy shift (mu = pi, unclipped): every p keeps the direction of grad J.

proofs does not import rl; the numeric checks here run on meantheory's functions and a small
enumeration in torch; tests/rl/envs/test_estimator.py and tests/proofs/test_theorems_estimator.py
hold ``rl.envs.estimator.estimator_moments`` to each statement.
Reference for the score-function identities: Sutton & Barto, *Reinforcement Learning* (2nd ed.),
sec. 13.2-13.4; for importance sampling, Owen, *Monte Carlo theory, methods and examples*, ch. 9.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import sympy as sp
import torch

from proofs.core import EPS, Case, Derivation, Drawer, Impl, Proof, Status, Theorem, worst
from proofs.forms import t64

__all__ = ["THEOREMS", "SCORE_N", "ADDITIVE_T"]

#: the score-function identity is derived for every answer-space size N = 2..SCORE_N
SCORE_N = 5
#: the additive-reward identity is derived for V = 2 and each T = 1..ADDITIVE_T
ADDITIVE_T = 3

tau, sig, m_ = sp.symbols("tau sigma m", positive=True)
pp = sp.Symbol("p", real=True)


def _gaussian_mgf(pf: Proof, k: sp.Expr, mean: sp.Expr, sd: sp.Expr, what: str) -> sp.Expr:
    """E e^{k X} = exp(k mean + k^2 sd^2 / 2) for X ~ N(mean, sd^2), derived by completing the square
    (k x - (x - mean)^2 / (2 sd^2) = -(x - c)^2 / (2 sd^2) + k mean + k^2 sd^2 / 2 with c = mean + k sd^2)
    and the Gaussian integral, both by sympy; returns the closed form."""
    x, y = sp.Symbol("x", real=True), sp.Symbol("y", real=True)
    c = mean + k * sd**2
    closed = k * mean + k**2 * sd**2 / 2
    pf.zero(sp.expand(k * x - (x - mean) ** 2 / (2 * sd**2) - (-(x - c) ** 2 / (2 * sd**2) + closed)),
            f"{what}: completing the square in the exponent")
    pf.equal(sp.integrate(sp.exp(-(y**2) / (2 * sd**2)), (y, -sp.oo, sp.oo)), sp.sqrt(2 * sp.pi) * sd,
             f"{what}: the shifted Gaussian integrates to sqrt(2 pi) sd (shift y = x - c)")
    return sp.exp(closed)


def _score_keys() -> tuple[str, ...]:
    """The key steps of :func:`_score_identity` for every N = 2..SCORE_N: the identity at each coordinate."""
    return tuple(f"score-identity N={nn} k={k}" for nn in range(2, SCORE_N + 1) for k in range(1, nn + 1))


def _score_identity(pf: Proof, nn: int, with_is: bool) -> None:
    """sum_y q_y (pi_y / q_y) (r_y - b) d log pi_y / dz_k = dJ/dz_k for pi = softmax(z) over nn answers
    (any distribution over nn answers is a softmax; a general parameter theta enters by the chain rule).
    In x_y = e^{z_y} > 0 everything is a rational function (d/dz_k = x_k d/dx_k), which sympy's cancel
    reduces exactly."""
    x = list(sp.symbols(f"x1:{nn + 1}", positive=True))
    r = list(sp.symbols(f"r1:{nn + 1}", real=True))
    q = list(sp.symbols(f"q1:{nn + 1}", positive=True))
    b = sp.Symbol("b", real=True)
    den = sum(x)
    pi = [xi / den for xi in x]
    J = sum(pi_y * r_y for pi_y, r_y in zip(pi, r))
    for k in range(nn):
        dz = lambda f: x[k] * sp.diff(f, x[k])  # noqa: E731
        est = sum((q[y] * (pi[y] / q[y]) if with_is else pi[y]) * (r[y] - b) * dz(sp.log(pi[y])) for y in range(nn))
        pf.zero(sp.cancel(sp.expand_log(est, force=True) - dz(J)), f"N={nn}, k={k + 1}: " + (
            "E_q[(pi/q)(r - b) d log pi] = dJ" if with_is else "E_pi[(r - b) d log pi] = dJ"),
                key=f"score-identity N={nn} k={k + 1}")


# ------------------------------------------------------------------ a small torch enumeration for the checks


def _draw_factorized(d: Drawer, min_T: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pi logits [T, V] requiring grad, mu logits [T, V], answers [N, T], rewards [N]) of a small random case."""
    V, T = d.int(2, 3), d.int(min_T, 3)
    th = t64(d.floats(T * V, -1.5, 1.5).reshape(T, V), requires_grad=True)
    mu = t64(d.floats(T * V, -1.5, 1.5).reshape(T, V))
    ys = torch.tensor(list(itertools.product(range(V), repeat=T)), dtype=torch.long)
    r = t64(d.floats(ys.shape[0], 0.0, 1.0))
    return th, mu, ys, r


def _extras(case: Case, *names: str) -> list[torch.Tensor]:
    """The case's arrays as float64 tensors (``th`` requiring grad, ``ys`` long); kept as numpy arrays in
    the case so that a failing check prints them briefly."""
    out = []
    for k in names:
        a = case.extra[k]
        out.append(torch.from_numpy(a) if k == "ys" else t64(a, requires_grad=(k == "th")))
    return out


def _np(*ts: torch.Tensor) -> list[np.ndarray]:
    return [t.detach().numpy().copy() for t in ts]


def _logp(logits: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """log pi_t(y_t) [N, T] of a factorized softmax policy."""
    lt = torch.log_softmax(logits, -1)
    return lt[torch.arange(ys.shape[1]), ys]


def _grad_J(th: torch.Tensor, ys: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    J = (_logp(th, ys).sum(-1).exp() * r).sum()
    (g,) = torch.autograd.grad(J, th)
    return g


def _expected_g(th: torch.Tensor, mu: torch.Tensor, ys: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """sum_y mu(y) sum_t c_t(y) grad log pi_t(y_t), ``coef`` [N, T] constant."""
    w = _logp(mu, ys).sum(-1).exp().detach()
    obj = (w.unsqueeze(-1) * coef.detach() * _logp(th, ys)).sum()
    (g,) = torch.autograd.grad(obj, th)
    return g


def _power_mean_gradients(case: Case, pv: float, impl: Impl) -> tuple[torch.Tensor, torch.Tensor]:
    """(E_mu g, grad J) of the unclipped sequence power-mean surrogate of exponent ``pv`` on a case's
    factorized pi, mu and reward table, baseline J(mu), weights and ratio from ``impl``."""
    th, mu, ys, r = _extras(case, "th", "mu", "ys", "r")
    lp, lm = _logp(th, ys).detach(), _logp(mu, ys)
    A = r - torch.dot(lm.sum(-1).exp(), r)
    l = lp - lm
    s = torch.exp(impl.log_power_mean(l, pv))
    return _expected_g(th, mu, ys, (A * s).unsqueeze(-1) * impl.mean_weights(l, pv)), _grad_J(th, ys, r)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


# ------------------------------------------------------------------ TE1: on-policy


def derive_on_policy_estimator() -> Derivation:
    pf = Proof()
    l = sp.symbols("l1:4", real=True)
    s = sp.exp(sp.log(sum(sp.exp(pp * li) for li in l) / 3) / pp)
    pf.equal(sp.diff(s, l[0]).subs({li: 0 for li in l}), sp.Rational(1, 3),
             "on-policy (l = 0, T = 3): ds/dl_1 = 1/T for every p != 0 (T10; p = 0: the weights are 1/T by definition)",
             key="uniform-weights")
    pf.note("so g(y) = A(y) sum_t (1/T) grad log pi_t(y_t) = (A(y)/T) grad log pi(y) for every level (sequence, "
            "sequence-token, gmpo: l = 0 is inside every clip window with eps > 0; token level: r_t = 1), any policy "
            "(log pi(y) = sum_t log pi_t(y_t) by the chain rule)")
    for nn in range(2, SCORE_N + 1):
        _score_identity(pf, nn, with_is=False)
    pf.note("hence E_pi g = grad J / T: cosine 1, scaled bias 0, rel_bias 1 - 1/T with the per-token normalised "
            "aggregations (seq-mean-token-mean, token-mean and seq-mean-token-sum-norm with N = T give a single answer "
            "the loss (1/T) sum_t L_t); seq-mean-token-sum gives sum_t L_t, i.e. E g = grad J and rel_bias 0; "
            "is-product (c_t = A prod r = A) gives E g = grad J. So the issue's 'rel_bias 1 - 1/T for every variant' "
            "holds for the trainer's aggregation and every mean-based level, not for token sums or the control")
    return pf.done(Status.PROVED_N, n_max=SCORE_N)


def case_on_policy(d: Drawer) -> Case:
    th, mu, ys, r = _draw_factorized(d)
    pv = d.choice([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, d.float(-4, 4)])
    th_, ys_, r_ = _np(th, ys, r)
    return Case(u=th_.ravel(), p=pv, extra={"th": th_, "ys": ys_, "r": r_})


def eval_on_policy(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    th, ys, r = _extras(case, "th", "ys", "r")
    T = ys.shape[1]
    lp = _logp(th, ys).detach()
    w = lp.sum(-1).exp()
    A = r - torch.dot(w, r)
    l = torch.zeros_like(lp)  # mu = pi
    pi = impl.mean_weights(l, case.p)
    s = torch.exp(impl.log_power_mean(l, case.p))
    g = _expected_g(th, th.detach(), ys, (A * s).unsqueeze(-1) * pi)
    gj = _grad_J(th, ys, r)
    # float64 sums of at most 27 terms of size <= 1: a few ulps relative to |grad J|, with headroom
    return worst((_rel(g, gj / T), 1e3 * EPS))


TE1 = Theorem(
    id="TE1-estimator-on-policy",
    title="On-policy every variant's expected single-answer gradient is grad J / T (trainer's aggregation)",
    statement="At mu = pi (no noise), for every level (token, sequence, sequence-token, gmpo), every p and any clip window "
              "with eps > 0, E_y g = (kappa/T) grad J with kappa = 1 for seq-mean-token-mean, token-mean and "
              "seq-mean-token-sum-norm (N = T), kappa = T for seq-mean-token-sum; is-product gives grad J. So cosine 1 and "
              "scaled bias 0 always, rel_bias = 1 - 1/T for the per-token normalised aggregations and 0 for token sums "
              "and the is-product control.",
    latex=r"\mu=\pi:\quad \mathbb E_y\,g=\tfrac{1}{T}\nabla_\theta J\quad(\text{seq-mean-token-mean})",
    assumptions=("mu = pi on every token", "no mismatch noise", "constant baseline b", "answers of T tokens"),
    derive=derive_on_policy_estimator,
    key_steps=("uniform-weights", *_score_keys()),
    certifies=("meantheory.mean_weights and log_power_mean at l = 0",
               "rl.envs.estimator.estimator_moments on-policy (tests/rl/envs/test_estimator.py)"),
    expected=Status.PROVED_N,
    make_case=case_on_policy,
    evaluate=eval_on_policy,
    tolerance="1e3 eps relative to |grad J| / T",
    cases=20,
    refs="Sutton & Barto (2018), sec. 13.2",
)


# ------------------------------------------------------------------ TE2: is-product


def derive_is_product() -> Derivation:
    pf = Proof()
    for nn in range(2, SCORE_N + 1):
        _score_identity(pf, nn, with_is=True)
    pf.note("E_mu[A prod_t r_t grad log pi(y)] = E_mu[(pi(y)/mu(y)) (r - b) grad log pi(y)] = grad J for every mu with "
            "mu(y) > 0 wherever pi(y) > 0, and every constant b (the baseline drops out: sum_y grad pi(y) = 0)")
    mgf = _gaussian_mgf(pf, sp.Integer(-1), sp.Integer(0), tau, "E exp(-eps), eps ~ N(0, tau^2)")
    pf.equal(mgf, sp.exp(tau**2 / 2), "E exp(-eps) = exp(tau^2/2)", key="noise-scale")
    pf.note("with noise on log mu the ratio is prod_t r_t e^{-eps_t}, independent of y: E g = exp(T tau^2/2) grad J, "
            "cosine 1 and rel_bias exp(T tau^2/2) - 1")
    return pf.done(Status.PROVED_N, n_max=SCORE_N)


def case_is_product(d: Drawer) -> Case:
    th, mu, ys, r = _draw_factorized(d)
    th_, mu_, ys_, r_ = _np(th, mu, ys, r)
    return Case(u=th_.ravel(), p=0.0, extra={"th": th_, "mu": mu_, "ys": ys_, "r": r_, "tau": d.float(0.05, 1.5)})


def eval_is_product(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    th, mu, ys, r = _extras(case, "th", "mu", "ys", "r")
    tv = case.extra["tau"]
    lp, lm = _logp(th, ys).detach(), _logp(mu, ys)
    b = torch.dot(lm.sum(-1).exp(), r)
    c = ((r - b) * (lp - lm).sum(-1).exp()).unsqueeze(-1).expand_as(lp)
    g = _expected_g(th, mu, ys, c)
    gj = _grad_J(th, ys, r)
    # E exp(-eps) by Gauss-Hermite quadrature (40 nodes: exact for this entire integrand to float64)
    x, w = np.polynomial.hermite.hermgauss(40)
    mgf = float(np.dot(w, np.exp(-math.sqrt(2) * tv * x)) / math.sqrt(math.pi))
    return worst((_rel(g, gj), 1e3 * EPS), (abs(mgf / math.exp(tv**2 / 2) - 1), 64 * EPS))


TE2 = Theorem(
    id="TE2-is-product-unbiased",
    title="The full likelihood ratio (is-product) is unbiased for every behaviour policy",
    statement="E_mu[(r - b) prod_t r_t grad log pi(y)] = grad J for every mu covering pi and every constant baseline b; "
              "with i.i.d. N(0, tau^2) noise on the behaviour log-probs the expectation is exp(T tau^2 / 2) grad J "
              "(direction exact, rel_bias exp(T tau^2/2) - 1).",
    latex=r"\mathbb E_{\mu}\Big[(r-b)\prod_t r_t\,\nabla\log\pi(y)\Big]=\nabla J,\quad "
          r"\mathbb E_\varepsilon e^{-\sum_t\varepsilon_t}=e^{T\tau^2/2}",
    assumptions=("mu(y) > 0 where pi(y) > 0", "constant baseline", "eps_t i.i.d. N(0, tau^2), independent of y"),
    derive=derive_is_product,
    key_steps=(*_score_keys(), "noise-scale"),
    certifies=("the is-product control of rl.envs.estimator (tests/rl/envs/test_estimator.py)",),
    expected=Status.PROVED_N,
    make_case=case_is_product,
    evaluate=eval_is_product,
    tolerance="1e3 eps relative to |grad J|; 64 eps for the Gauss-Hermite moment",
    cases=20,
    refs="Owen, Monte Carlo theory, methods and examples, ch. 9",
)


# ------------------------------------------------------------------ TE3: additive reward, p = 1


def derive_additive() -> Derivation:
    pf = Proof()
    for T in range(1, ADDITIVE_T + 1):
        # pi_t(1) = x_t / (1 + x_t) with x_t = e^{z_t} (d/dz_t = x_t d/dx_t), target token 1 at every position;
        # mu_t(1) = k_t / (1 + k_t): everything is a rational function, which cancel reduces exactly
        z = sp.symbols(f"x1:{T + 1}", positive=True)
        m = sp.symbols(f"k1:{T + 1}", positive=True)
        b = sp.Symbol("b", real=True)
        pi1 = [zt / (1 + zt) for zt in z]
        mu1 = [mt / (1 + mt) for mt in m]
        J = sum(pi1) / T
        est = [0] * T
        for y in itertools.product((0, 1), repeat=T):
            prob_mu = sp.Mul(*[mu1[t] if y[t] else 1 - mu1[t] for t in range(T)])
            A = sp.Rational(sum(y), T) - b
            for t in range(T):
                pit = pi1[t] if y[t] else 1 - pi1[t]
                mut = mu1[t] if y[t] else 1 - mu1[t]
                r_t = pit / mut
                # d s / d log pi_t = r_t / T for p = 1 (and for token-level GRPO); d log pi_t(y_t)/dz_t:
                est[t] += prob_mu * A * (r_t / T) * z[t] * sp.diff(sp.log(pit), z[t])
        for t in range(T):
            pf.zero(sp.cancel(est[t] - z[t] * sp.diff(J, z[t]) / T),
                    f"V = 2, T = {T}, position {t + 1}: E_mu[A (r_t/T) d log pi_t] = (1/T) dJ/dz_t for every mu, b",
                    key=f"per-token-unbiased T={T} t={t + 1}")
    pf.note("in general: E_mu[A r_t grad log pi_t(y_t)] = E_{y_t ~ pi_t} E_{y_-t ~ mu}[A] grad log pi_t and, for "
            "r = (1/T) sum_k [y_k = y*_k], E_{y_-t}[A | y_t] = [y_t = y*_t]/T + (a constant), whose score average is 0: "
            "each token's ratio is the exact importance weight of its own independent bandit")
    pf.equal(_gaussian_mgf(pf, sp.Integer(-1), sp.Integer(0), tau, "E exp(-eps_t)"), sp.exp(tau**2 / 2),
             "with noise the ratio is r_t e^{-eps_t}, eps_t independent of y: E g = e^{tau^2/2} grad J / T")
    return pf.done(Status.PROVED_N, n_max=ADDITIVE_T)


def case_additive(d: Drawer) -> Case:
    th, mu, ys, _ = _draw_factorized(d)
    V = th.shape[1]
    target = torch.tensor([d.int(0, V - 1) for _ in range(ys.shape[1])])
    r = (ys == target).double().mean(-1)
    th_, mu_, ys_, r_ = _np(th, mu, ys, r)
    return Case(u=th_.ravel(), p=1.0, extra={"th": th_, "mu": mu_, "ys": ys_, "r": r_})


def eval_additive(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    g, gj = _power_mean_gradients(case, 1.0, impl)
    return worst((_rel(g, gj / case.extra["ys"].shape[1]), 1e4 * EPS))


TE3 = Theorem(
    id="TE3-additive-arithmetic-unbiased",
    title="Factorized policy, additive reward: the arithmetic mean (p = 1) is unbiased in direction for every mu",
    statement="For a factorized policy pi(y) = prod_t pi_t(y_t), a factorized behaviour mu and the additive reward "
              "r = (1/T) sum_t [y_t = y*_t], the p = 1 surrogate (and unclipped token-level GRPO, whose gradient is the "
              "same) has E_mu g = grad J / T for every mu and constant baseline: cosine 1, scaled bias 0. With i.i.d. "
              "noise on log mu: e^{tau^2/2} grad J / T.",
    latex=r"\mathbb E_\mu\Big[A\sum_t \tfrac{r_t}{T}\nabla\log\pi_t(y_t)\Big]=\tfrac1T\nabla J",
    assumptions=("pi and mu factorized over positions", "additive reward", "constant baseline", "no clip"),
    derive=derive_additive,
    key_steps=tuple(f"per-token-unbiased T={T} t={t}" for T in range(1, ADDITIVE_T + 1) for t in range(1, T + 1)),
    certifies=("meantheory.log_power_mean / mean_weights at p = 1",
               "rl.envs.estimator.estimator_moments, count reward (tests/rl/envs/test_estimator.py)"),
    expected=Status.PROVED_N,
    make_case=case_additive,
    evaluate=eval_additive,
    tolerance="1e4 eps relative to |grad J| / T (sums of exponentials of log-ratios up to 6)",
    cases=20,
)


# ------------------------------------------------------------------ TE4: non-additive rewards


def _nonadditive_gradients(reward: str, pv: sp.Rational) -> tuple[sp.Matrix, sp.Matrix]:
    """(E g, grad J) in the logit differences (z_1, z_2) of V = 2, T = 2, exact: pi_t(1) = (1/2, 1/3),
    mu_t(1) = (1/4, 1/2), target (1, 1)."""
    a = [sp.Rational(1, 2), sp.Rational(1, 3)]
    q = [sp.Rational(1, 4), sp.Rational(1, 2)]
    b = {"all-or-nothing": q[0] * q[1], "prefix": (q[0] + q[0] * q[1]) / 2}[reward]
    grad_J = sp.Matrix([0, 0])
    est = sp.Matrix([0, 0])
    for y in itertools.product((0, 1), repeat=2):
        pi_y = [a[t] if y[t] else 1 - a[t] for t in range(2)]
        mu_y = [q[t] if y[t] else 1 - q[t] for t in range(2)]
        rew = {"all-or-nothing": y[0] * y[1], "prefix": sp.Rational(y[0] + y[0] * y[1], 2)}[reward]
        score = sp.Matrix([(1 if y[t] else 0) - a[t] for t in range(2)])  # d log pi_t(y_t) / dz_t
        grad_J += pi_y[0] * pi_y[1] * rew * score
        l = [sp.log(pi_y[t] / mu_y[t]) for t in range(2)]
        if pv == 0:
            s, w = sp.exp((l[0] + l[1]) / 2), [sp.Rational(1, 2)] * 2
        else:
            terms = [sp.exp(pv * lt) for lt in l]
            s = ((terms[0] + terms[1]) / 2) ** (1 / pv)
            w = [tt / (terms[0] + terms[1]) for tt in terms]
        est += mu_y[0] * mu_y[1] * (rew - b) * s * sp.Matrix([w[0] * score[0], w[1] * score[1]])
    return est, grad_J


TE4_PS = (-2, -1, sp.Rational(-1, 2), 0, sp.Rational(1, 2), 1, 2)


def derive_nonadditive() -> Derivation:
    pf = Proof()
    cx = []
    for reward in ("all-or-nothing", "prefix"):
        for pv in TE4_PS:
            est, gj = _nonadditive_gradients(reward, sp.nsimplify(pv))
            det = est[0] * gj[1] - est[1] * gj[0]  # an exact algebraic number (rationals, their roots and logs)
            val = sp.N(det, 50)
            pf.true(bool(abs(val) > sp.Float("1e-20")),
                    f"{reward}, p = {pv}: det[E g, grad J] = {float(val):.4g} != 0 (exact expression evaluated to 50 "
                    "digits): E g is not parallel to grad J", key=f"not-parallel {reward} p={pv}")
            cx.append(f"{reward} p={pv}: det {val:.3g}")
    pf.note("V = 2, T = 2, pi_t(1) = (1/2, 1/3), mu_t(1) = (1/4, 1/2), target (1, 1), baseline J(mu): for both "
            "non-additive rewards and every p in {-2, -1, -1/2, 0, 1/2, 1, 2} the expected gradient is not parallel to "
            "grad J, so TE3 does not extend beyond additive rewards (refuted by counterexample); whether some other p "
            "is unbiased at this point is answered numerically by the check (cosine < 1 for random p)")
    return pf.done(Status.REFUTED, counterexample="; ".join(cx))


def case_nonadditive(d: Drawer) -> Case:
    th, _, ys, _ = _draw_factorized(d, min_T=2)  # a one-token answer has nothing to be non-additive over
    T, V = ys.shape[1], th.shape[1]
    # a fixed asymmetric part keeps every draw (the all-zero one included) off the degenerate cases
    # pi uniform / mu = pi, where symmetry or on-policy make E g parallel to grad J
    t_idx, v_idx = torch.meshgrid(torch.arange(T), torch.arange(V), indexing="ij")
    th = th.detach() + 0.4 * (t_idx + 1) * v_idx / V
    pattern = (-1.0) ** (t_idx + v_idx) * (v_idx + 1) / V
    mu = th.detach() + (0.6 + t64(d.floats(T * V, 0.0, 1.0).reshape(T, V))) * pattern
    target = torch.tensor([d.int(0, th.shape[1] - 1) for _ in range(T)])
    hit = (ys == target).double()
    r = hit.prod(-1) if d.bool() else hit.cumprod(-1).mean(-1)
    th_, mu_, ys_, r_ = _np(th, mu, ys, r)
    return Case(u=th_.ravel(), p=d.float(-3.0, 3.0), extra={"th": th_, "mu": mu_, "ys": ys_, "r": r_})


def eval_nonadditive(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    """Passes when E g is not parallel to grad J: the error is how far the sine of their angle falls below 1e-6."""
    g, gj = _power_mean_gradients(case, case.p, impl)
    cos = float(torch.dot(g.ravel(), gj.ravel()) / (g.norm() * gj.norm()))
    sine = math.sqrt(max(0.0, 1 - cos * cos))
    return (max(0.0, 1e-6 - sine), 1e-300)


TE4 = Theorem(
    id="TE4-nonadditive-biased",
    title="For non-additive rewards (all-or-nothing, longest correct prefix) no p is unbiased in direction",
    statement="TE3 does not extend to non-additive rewards: for V = 2, T = 2, pi_t(1) = (1/2, 1/3), mu_t(1) = (1/4, 1/2), "
              "both the all-or-nothing and the prefix reward give an expected gradient not parallel to grad J for every "
              "p in {-2, -1, -1/2, 0, 1/2, 1, 2} (exact), and random cases with random p in [-3, 3] never hit cosine 1.",
    latex=r"\exists\mu:\ \mathbb E_\mu g_p\not\parallel\nabla J\quad\forall p\in\{-2,\dots,2\}",
    assumptions=("non-additive reward", "mu != pi", "no clip, no noise"),
    derive=derive_nonadditive,
    key_steps=tuple(f"not-parallel {reward} p={pv}" for reward in ("all-or-nothing", "prefix") for pv in TE4_PS),
    certifies=("meantheory.log_power_mean / mean_weights", "rl.envs.estimator, all-or-nothing and prefix rewards"),
    expected=Status.REFUTED,
    make_case=case_nonadditive,
    evaluate=eval_nonadditive,
    tolerance="the sine of the angle between E g and grad J must exceed 1e-6",
    cases=20,
)


# ------------------------------------------------------------------ TE5: ESS limit


def derive_ess_limit() -> Derivation:
    pf = Proof()
    m1 = _gaussian_mgf(pf, pp, m_, sig, "E e^{pX}, X ~ N(m, sigma^2)")
    m2 = _gaussian_mgf(pf, 2 * pp, m_, sig, "E e^{2pX}")
    pf.equal(m1**2 / m2, sp.exp(-pp**2 * sig**2), "(E e^{pX})^2 / E e^{2pX} = exp(-p^2 sigma^2)", key="ess-limit")
    pf.note("ESS_T = 1 / (T sum_t pi_t^2) with pi = softmax(p l) equals ((1/T) sum e^{p l_t})^2 / ((1/T) sum e^{2 p l_t}); "
            "by the strong law both averages converge a.s. for i.i.d. l_t ~ N(m, sigma^2), so ESS_T -> exp(-p^2 sigma^2) "
            "a.s., and E ESS_T too (0 < ESS_T <= 1, dominated convergence). Token-level GRPO weights tokens by r_t: "
            "p = 1, limit exp(-sigma^2). The limit depends on p^2: p and -p thin the weights alike")
    return pf.done(Status.PROVED)


def case_ess(d: Drawer) -> Case:
    return Case(u=d.floats(d.int(2, 40), -3.0, 3.0), p=d.choice([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0, d.float(-3, 3)]),
                extra={"m": d.float(-1.0, 1.0), "sigma": d.float(0.05, 1.2)})  # |p| sigma <= 3.6


def eval_ess(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    pv, mv, sv = case.p, case.extra["m"], case.extra["sigma"]
    # the moments by a 100-node Gauss-Hermite rule (E f(X) = sum_i w_i f(m + sqrt(2) sigma x_i) / sqrt(pi)),
    # accurate to a few ulps for e^{a x} with |a| <= 2 |p| sigma sqrt(2) <= 11 (its peak at a/2 lies inside the nodes)
    xg, wg = np.polynomial.hermite.hermgauss(100)
    xs = mv + math.sqrt(2) * sv * xg
    m1 = float(np.dot(wg, np.exp(pv * xs))) / math.sqrt(math.pi)
    m2 = float(np.dot(wg, np.exp(2 * pv * xs))) / math.sqrt(math.pi)
    lim = math.exp(-(pv**2) * sv**2)
    checks = [(abs(m1 * m1 / m2 - lim) / lim, 1e3 * EPS)]
    # the ESS the loss reports, 1/(n sum pi^2) with pi = meantheory.mean_weights, is the moment ratio above
    u = t64(case.u)
    pi = impl.mean_weights(u, pv)
    ess = float(1.0 / (u.numel() * (pi * pi).sum()))
    ex = np.exp(pv * (case.u - case.u.max()))
    ref = float(ex.sum() ** 2 / (case.u.size * (ex * ex).sum()))
    checks.append((abs(ess - ref) / ref, 64 * EPS))
    return worst(*checks)


TE5 = Theorem(
    id="TE5-ess-limit",
    title="Token-weight ESS of i.i.d. Gaussian log-ratios tends to exp(-p^2 sigma^2)",
    statement="For token log-ratios l_t i.i.d. N(m, sigma^2) the token-weight ESS 1/(T sum_t softmax(p l)_t^2) of the "
              "power mean of exponent p converges, almost surely and in expectation, to exp(-p^2 sigma^2) as T -> inf "
              "(token-level GRPO: exp(-sigma^2)); it does not depend on m or on the sign of p.",
    latex=r"\frac{1}{T\sum_t\operatorname{softmax}(p\,l)_t^2}\xrightarrow[T\to\infty]{}e^{-p^2\sigma^2}",
    assumptions=("l_t i.i.d. N(m, sigma^2)",),
    derive=derive_ess_limit,
    key_steps=("ess-limit",),
    certifies=("meantheory.mean_weights (the weights whose ESS policy_loss reports)",
               "rl.envs.estimator ess against exp(-p^2 sigma^2) (tests/rl/envs/test_estimator.py)"),
    expected=Status.PROVED,
    make_case=case_ess,
    evaluate=eval_ess,
    tolerance="1e3 eps relative for the Gauss-Hermite moment ratio; 64 eps for the ESS identity",
    cases=20,
)


# ------------------------------------------------------------------ TE6: exchangeable noise


def derive_noise_exchangeable() -> Derivation:
    pf = Proof()
    for T in (2, 3):
        eps = sp.symbols(f"e1:{T + 1}", real=True)
        terms = [sp.exp(-pp * ek) for ek in eps]
        s = (sum(terms) / T) ** (1 / pp)
        c = [s * tk / sum(terms) for tk in terms]  # s pi_t at l = -eps
        swap = {eps[0]: eps[1], eps[1]: eps[0]}
        pf.zero(c[0].subs(swap, simultaneous=True) - c[1], f"T = {T}: swapping eps_1 and eps_2 maps s pi_1 to s pi_2", key=f"swap-ratio T={T}")
        dens = sp.Mul(*[sp.exp(-ek**2 / (2 * tau**2)) for ek in eps])
        pf.zero(dens.subs(swap, simultaneous=True) - dens, f"T = {T}: the i.i.d. noise density is invariant under the swap", key=f"swap-density T={T}")
    pf.note("so E_eps[s pi_t] is the same for every t (any transposition, hence every permutation), and sums to E s: "
            "E_eps[s pi_t] = E[s]/T. With mu = pi, l_t = -eps_t does not depend on y, and E g = (E[s]/T) E_y[A grad log pi(y)] "
            "= (E[s]/T) grad J for every p: direction exact. Token-level GRPO the same (E r_t = e^{tau^2/2}). A clip "
            "breaks it: the clipped coefficient depends on the sign of A, so E g = c_+ E[A^+ grad log pi] - c_- E[A^- ...] "
            "with c_+ != c_- in general")
    return pf.done(Status.PROVED_N, n_max=3)


def case_noise(d: Drawer) -> Case:
    return Case(u=np.zeros(2), p=d.choice([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0, d.float(-3, 3)]),
                extra={"tau": d.float(0.05, 1.2)})


def eval_noise(deriv: Derivation, case: Case, impl: Impl) -> tuple[float, float]:
    """E[s pi_1] = E[s pi_2] = E[s] / 2 for T = 2 by a 40 x 40 Gauss-Hermite rule on meantheory's functions."""
    x, w = np.polynomial.hermite.hermgauss(40)
    e1, e2 = np.meshgrid(math.sqrt(2) * case.extra["tau"] * x, math.sqrt(2) * case.extra["tau"] * x, indexing="ij")
    ww = np.outer(w, w).ravel() / math.pi
    l = t64(np.stack([-e1.ravel(), -e2.ravel()], -1))
    s = torch.exp(impl.log_power_mean(l, case.p)).numpy()
    pi = impl.mean_weights(l, case.p).numpy()
    c1, c2, es = float(np.dot(ww, s * pi[:, 0])), float(np.dot(ww, s * pi[:, 1])), float(np.dot(ww, s))
    # the rule is symmetric in (e1, e2), so c1 = c2 up to rounding of 1600 terms of size <= e^{3 tau}
    return worst((abs(c1 - c2) / es, 1e4 * EPS), (abs(c1 + c2 - es) / es, 1e4 * EPS))


TE6 = Theorem(
    id="TE6-noise-exchangeable",
    title="Mismatch noise without policy shift keeps every mean's direction",
    statement="With mu = pi and i.i.d. noise eps_t on the behaviour log-probs the loss sees (no clip), E_eps[s pi_t] = "
              "E[s]/T for every token t and every p, so E g = (E[s]/T) grad J: cosine 1 for every mean and for token-level "
              "GRPO. A clip window breaks the symmetry between positive and negative advantages and with it the identity.",
    latex=r"\mu=\pi:\ \mathbb E_\varepsilon[s\,\pi_t]=\mathbb E[s]/T\ \Rightarrow\ \mathbb E\,g\parallel\nabla J",
    assumptions=("mu = pi", "eps_t i.i.d., independent of y", "no clip"),
    derive=derive_noise_exchangeable,
    key_steps=tuple(f"swap-{what} T={T}" for T in (2, 3) for what in ("ratio", "density")),
    certifies=("meantheory.log_power_mean / mean_weights under Gauss-Hermite quadrature",
               "rl.envs.estimator with noise_tau > 0 and KL 0 (tests/rl/envs/test_estimator.py)"),
    expected=Status.PROVED_N,
    make_case=case_noise,
    evaluate=eval_noise,
    tolerance="1e4 eps relative to E[s] (a 1600-node quadrature)",
    cases=10,
)


THEOREMS = [TE1, TE2, TE3, TE4, TE5, TE6]

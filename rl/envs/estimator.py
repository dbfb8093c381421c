r"""Exact moments of the single-answer policy-gradient estimator of every loss variant.

For a behaviour policy mu (the one that sampled), a current policy pi_theta and one answer
``y ~ mu(. | c)``, the single-answer estimator is the negative gradient of the loss the
trainer would minimise on a batch of that one answer (:func:`rl.losses.policy_loss`)::

    g(y, eps) = -grad_theta policy_loss(log pi_theta(y), log mu(y) + eps, A(y), mask, level, p, ...)

with the population baseline ``A(y) = rbar(c, y) - J(mu)`` (exact, no group coupling) and the
training-inference mismatch modelled as noise on the behaviour log-probs the loss sees,
``eps_t ~ N(0, tau^2)`` i.i.d. per token. Writing the loss's per-token coefficients
``c_t = -d loss / d log pi_t(y_t)``, ``g = sum_t c_t grad_theta log pi_t(y_t)``, so

    E g       = sum_y mu(y) E_eps sum_t c_t(y, eps) s_t(y)                 (s_t = grad log pi_t(y_t))
    E |g|^2   = sum_y mu(y) E_eps c(y, eps)^T G(y) c(y, eps)               (G_ts = <s_t, s_s>, the Gram matrix)

Everything here is float64. ``E_y`` is exact by enumeration of [0, V)^T (V^T <= 65536), or, for
a factorized policy at any T, a Monte Carlo average over ``mc_samples`` answers drawn from mu
with the analytic J and grad J of :mod:`rl.envs.oracle`. ``E_eps`` is an average over
``noise_draws`` fixed-seed draws per answer (one per answer in Monte Carlo). ``mc_error``
states the resulting error (0 where nothing is sampled).

Quantities (``true = grad J(pi_theta)``, ``m = E g``)::

    cosine       = <m, true> / (|m| |true|)                (0 where m = 0: mu never draws a reward)
    rel_bias     = |m - true| / |true|
    scaled_bias  = min_{c >= 0} |c m - true| / |true| = sqrt(1 - cosine^2) if cosine > 0 else 1
                   (Adam-like optimisers remove scale, not direction)
    trace_var    = E |g|^2 - |m|^2                        (single answer)
    ess          = E_y E_eps token_weight_ess(y, eps)     (the loss's own metric, per answer)
    kl_per_token = KL(mu || pi) / T
    spread       = sqrt(E_y Var_t l_t(y)), l_t = log pi_t - log mu_t   (within-answer spread)
    mc_error     = sqrt(E |m_hat - m|^2) / |m_hat|        (RMS error of mean_grad, relative)
    rewarded     = answers (sampled or enumerated) whose mean reward exceeds the smallest one

``mc_error`` is a central-limit estimate from the sample's own variance. It is only as good as
the sample: where the gradient rests on rare answers that the sample missed (all-or-nothing at
long T: J(mu) ~ V^-T), the sample variance misses them too and the stated error is far too
small. ``rewarded`` counts the answers that carry reward; a Monte Carlo result with few of them
(the study requires 20) is not a measurement.

Levels: every level of the loss (:data:`rl.losses.LEVELS`, every p it supports, GMPO and
token-level GRPO included) and ``"is-product"``, the full sequence likelihood ratio
``prod_t r_t`` (``g = A prod_t r_t grad log pi(y)``, unclipped): the unbiased control, since
``E_mu[A prod r grad log pi] = E_pi[A grad log pi] = grad J`` for every mu (the constant
baseline drops out because ``sum_y grad pi(y) = 0``). Theorems: proofs/theorems_estimator.py.

Gradients per answer come from closed forms, not from one backward pass per answer: for a
factorized softmax policy ``s_t = e_{y_t} - pi_t`` on position t's logits, so ``E g`` is a
scatter of the coefficients and ``G`` is diagonal with ``G_tt = 1 - 2 pi_t(y_t) + |pi_t|^2``;
for any other policy ``E g`` is one backward pass of ``sum_{y,t} mu(y) c_t log pi_t`` and
``G`` comes from the per-answer Jacobian (forward mode, ``torch.func.jacfwd``, in chunks).
Reference: Sutton & Barto, *Reinforcement Learning* (2nd ed.), sec. 13.2 and 13.4 (the score
function estimator and its baseline); Owen, *Monte Carlo theory, methods and examples*, ch. 9
(importance sampling).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rl.envs.base import Env
from rl.envs.oracle import MAX_ANSWERS, analytic_objective, analytic_policy_gradient, enumerate_answers, supports_oracle
from rl.losses import LEVELS, policy_loss, sequence_log_ratio
from rl.policies.base import Policy
from rl.policies.tabular import TabularPolicy, context_ids

__all__ = ["ESTIMATOR_LEVELS", "AnswerSet", "prepare_answers", "moments", "estimator_moments",
           "kl_per_token", "MOMENT_KEYS"]

#: the loss's levels plus the unbiased control
ESTIMATOR_LEVELS = (*LEVELS, "is-product")
#: the keys of the dict :func:`moments` returns
MOMENT_KEYS = ("mean_grad", "true_grad", "cosine", "rel_bias", "scaled_bias", "trace_var", "ess", "kl_per_token",
               "spread", "mc_error", "objective", "baseline", "n_answers", "rewarded", "exact")
#: rows of the loss's own metric each call holds the per-answer ESS to
_ESS_CHECK_ROWS = 64
#: answers per forward-mode Jacobian chunk (memory ~ chunk * T * hidden * n_params doubles)
_JAC_CHUNK = 512
#: the largest per-answer Jacobian (N * T * n_params doubles; 2^25 = 256 MiB) kept for E g
_MAX_JACOBIAN = 2**25
#: the Monte Carlo answers are drawn from a generator seeded seed + this offset, the noise from one
#: seeded seed, so that the two streams of one seed never coincide
_SAMPLE_SEED_OFFSET = 1_000_003


@dataclass(frozen=True, eq=False)
class AnswerSet:
    """The answers and everything about them that no loss variant changes.

    ``weight`` sums to 1: ``w_c mu(y | c)`` under enumeration, ``1 / n`` for Monte Carlo samples
    (``prompt_weight``: ``w_c``, resp. ``1 / n``; ``log_weight``: log of ``weight``, exact where the
    weight itself underflows).
    ``gram`` is [N, T, T], or [N, T] when it is diagonal (factorized policy). ``score_vjp(coef)``
    maps per-token coefficients [N, T] to ``sum_i sum_t coef_it grad log pi_t(y_i)`` over the
    policy's parameters concatenated in ``named_parameters()`` order.
    """

    prompts: torch.Tensor
    tokens: torch.Tensor
    weight: torch.Tensor
    log_weight: torch.Tensor
    prompt_weight: torch.Tensor
    logp: torch.Tensor
    old_logp: torch.Tensor
    advantage: torch.Tensor
    gram: torch.Tensor
    true_grad: torch.Tensor
    score_vjp: Callable[[torch.Tensor], torch.Tensor]
    objective: float
    baseline: float
    kl_per_token: float
    spread: float
    exact_answers: bool
    policy_params: torch.Tensor
    rewarded: int

    @property
    def length(self) -> int:
        return int(self.tokens.shape[1])


# ---------------------------------------------------------------------------------------------- checks


def _check_pair(env: Env, behaviour: Policy, policy: Policy) -> None:
    for name, pol in (("behaviour", behaviour), ("policy", policy)):
        if not isinstance(pol, Policy):
            raise ValueError(f"{name}: expected a rl.policies Policy, got {type(pol).__name__}")
    if type(behaviour) is not type(policy):
        raise ValueError(f"behaviour ({type(behaviour).__name__}) and policy ({type(policy).__name__}) must be "
                         "the same kind of policy")
    for attr in ("vocab", "length"):
        want = getattr(env, attr, None)
        for name, pol in (("behaviour", behaviour), ("policy", policy)):
            if getattr(pol, attr, want) != want:
                raise ValueError(f"{name}.{attr} = {getattr(pol, attr)} does not match the environment's {want}")


def _real(name: str, v: Any, *, lo: float = -math.inf, allow_inf: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v) or v < lo \
            or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name}: expected a {'' if allow_inf else 'finite '}number >= {lo}, got {v!r}")
    return float(v)


# ---------------------------------------------------------------------------------------------- scores


def _tabular_score(policy: TabularPolicy, prompts: torch.Tensor, tokens: torch.Tensor):
    """(score_vjp, diagonal Gram [N, T]) of a factorized softmax policy: s_t = e_{y_t} - pi_t on row (c, t)."""
    N, T = tokens.shape
    C, V = policy.n_contexts, policy.vocab
    ctx = context_ids(prompts, N, C)
    pi = torch.softmax(policy.logits.detach().double(), -1)  # [C, T, V]
    pi_rows = pi[ctx]  # [N, T, V]
    pi_y = pi_rows.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    gram = 1.0 - 2.0 * pi_y + (pi_rows * pi_rows).sum(-1)  # |e_y - pi_t|^2
    pos = torch.arange(T).expand(N, T)
    cidx = ctx.unsqueeze(1).expand(N, T)

    def vjp(coef: torch.Tensor) -> torch.Tensor:
        hits = torch.zeros(C, T, V, dtype=torch.float64).index_put_((cidx, pos, tokens), coef, accumulate=True)
        per_row = torch.zeros(C, T, dtype=torch.float64).index_add_(0, ctx, coef)
        return (hits - per_row.unsqueeze(-1) * pi).reshape(-1)

    return vjp, gram


class _LogProbs(torch.nn.Module):
    """``policy.log_probs`` as a forward, so that torch.func.functional_call can swap its parameters."""

    def __init__(self, policy: Policy):
        super().__init__()
        self.policy = policy

    def forward(self, prompts, tokens, mask):
        return self.policy.log_probs(prompts, tokens, mask)


def _generic_score(policy: Policy, prompts: torch.Tensor, tokens: torch.Tensor):
    """(score_vjp, Gram [N, T, T]) of any differentiable policy, from the per-answer Jacobians
    d log pi_t(y) / d theta (forward mode, ``torch.func.jacfwd``, one chunk of answers at a time). The
    Jacobian is kept when it has at most ``_MAX_JACOBIAN`` entries (then E g is one contraction);
    otherwise E g is one backward pass of sum_{y,t} coef_yt log pi_t(y) per call."""
    from torch.func import functional_call, jacfwd

    params = dict(policy.named_parameters())
    mask = torch.ones_like(tokens, dtype=torch.bool)
    n_par = sum(p.numel() for p in params.values())
    keep = tokens.numel() * n_par <= _MAX_JACOBIAN
    wrapped = _LogProbs(policy)
    detached = {f"policy.{n}": p.detach() for n, p in params.items()}
    grams, jacs = [], []
    for a in range(0, tokens.shape[0], _JAC_CHUNK):
        pr, tk, mk = prompts[a:a + _JAC_CHUNK], tokens[a:a + _JAC_CHUNK], mask[a:a + _JAC_CHUNK]
        jac = jacfwd(lambda par: functional_call(wrapped, par, (pr, tk, mk)))(detached)  # name -> [n, T, *shape]
        flat = torch.cat([j.reshape(tk.shape[0], tk.shape[1], -1) for j in jac.values()], -1)  # [n, T, P]
        grams.append(flat @ flat.transpose(1, 2))
        if keep:
            jacs.append(flat)
    if keep:
        full = torch.cat(jacs)

        def vjp(coef: torch.Tensor) -> torch.Tensor:
            return torch.einsum("nt,ntp->p", coef, full)
    else:
        logp = policy.log_probs(prompts, tokens, mask)

        def vjp(coef: torch.Tensor) -> torch.Tensor:
            grads = torch.autograd.grad(logp, list(params.values()), grad_outputs=coef, retain_graph=True,
                                        allow_unused=True)
            return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                              for p, g in zip(params.values(), grads)])

    return vjp, torch.cat(grams)


def _score(policy: Policy, prompts: torch.Tensor, tokens: torch.Tensor):
    if isinstance(policy, TabularPolicy):
        return _tabular_score(policy, prompts, tokens)
    return _generic_score(policy, prompts, tokens)


# ---------------------------------------------------------------------------------------------- answer sets


def kl_per_token(behaviour: TabularPolicy, policy: TabularPolicy, prompt_probs: torch.Tensor | None = None) -> float:
    """KL(mu || pi) / T of two factorized policies in closed form: mean over positions (and contexts,
    weighted by ``prompt_probs``, uniform by default) of sum_v mu_t(v) log(mu_t(v) / pi_t(v))."""
    lm = torch.log_softmax(behaviour.logits.detach().double(), -1)
    lp = torch.log_softmax(policy.logits.detach().double(), -1)
    per = (lm.exp() * (lm - lp)).sum(-1).mean(-1)  # [C]
    w = torch.full_like(per, 1.0 / per.numel()) if prompt_probs is None else prompt_probs.double()
    return float(torch.dot(w, per))


def _params(policy: Policy) -> torch.Tensor:
    return torch.cat([q.detach().reshape(-1).double() for q in policy.parameters()])


def prepare_answers(env: Env, behaviour: Policy, policy: Policy, *, mc_samples: int | None = None,
                    seed: int = 0, reuse: AnswerSet | None = None, max_answers: int = MAX_ANSWERS) -> AnswerSet:
    """Every answer with its weight, log-probs, advantage, Gram matrix and the exact gradient.

    ``mc_samples=None`` enumerates [0, V)^T (needs V^T <= ``max_answers``); grad J is then the
    policy gradient theorem summed over every answer, ``sum_c w_c sum_y pi(y|c) rbar(c, y) grad log pi(y|c)``.
    An int draws that many answers from mu (generator seeded ``seed + 1000003``) and needs
    factorized TabularPolicies, whose J and grad J are analytic (:func:`rl.envs.oracle.analytic_policy_gradient`).
    ``reuse``: an enumerated AnswerSet of the same ``policy`` (same parameters) and answer space;
    its policy side (answers, log pi, Gram matrices, score map) is kept and only what depends on
    the behaviour policy and the reward is recomputed (a new behaviour or reward costs one pass).
    """
    _check_pair(env, behaviour, policy)
    beh = copy.deepcopy(behaviour).double()
    if reuse is not None:
        if not reuse.exact_answers or mc_samples is not None:
            raise ValueError("reuse: only an enumerated AnswerSet can be reused, and only for enumeration")
        if reuse.tokens.shape[1] != env.length or not torch.equal(reuse.policy_params, _params(policy)):
            raise ValueError("reuse: the AnswerSet was built for another policy or answer length")
        pol = None
        prompts, tokens, logp, prompt_w = reuse.prompts, reuse.tokens, reuse.logp, reuse.prompt_weight
        vjp, gram = reuse.score_vjp, reuse.gram
    else:
        pol = copy.deepcopy(policy).double()
    with torch.no_grad():
        if mc_samples is None:
            if reuse is None:
                if not supports_oracle(env, max_answers):
                    raise ValueError(f"environment {getattr(env, 'name', env)!r} cannot be enumerated (needs vocab, "
                                     f"length, prompt_distribution, mean_reward and V^T <= {max_answers}); pass "
                                     "mc_samples for a factorized policy")
                answers = enumerate_answers(env.vocab, env.length, max_answers)
                ctx_prompts, ctx_probs = env.prompt_distribution()
                prompts = ctx_prompts.repeat_interleave(answers.shape[0], 0)
                tokens = answers.repeat(ctx_prompts.shape[0], 1)
                prompt_w = ctx_probs.repeat_interleave(answers.shape[0])
            mask = torch.ones_like(tokens, dtype=torch.bool)
            old = beh.log_probs(prompts, tokens, mask)
            weight = prompt_w * old.sum(-1).exp()
        else:
            if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 2:
                raise ValueError(f"mc_samples: expected an int >= 2 or None (enumerate), got {mc_samples!r}")
            if not isinstance(policy, TabularPolicy):
                raise ValueError("mc_samples: the Monte Carlo path needs factorized TabularPolicies (analytic J and "
                                 f"grad J), got {type(policy).__name__}")
            gen = torch.Generator().manual_seed(_SAMPLE_SEED_OFFSET + int(seed))
            prompts = env.sample_prompts(mc_samples, gen)
            tokens = beh.sample(prompts, gen).tokens
            mask = torch.ones_like(tokens, dtype=torch.bool)
            old = beh.log_probs(prompts, tokens, mask)
            prompt_w = weight = torch.full((mc_samples,), 1.0 / mc_samples, dtype=torch.float64)
        rbar = env.mean_reward(prompts, tokens, mask).double()
    if pol is not None:
        vjp, gram = _score(pol, prompts, tokens)
        with torch.no_grad():
            logp = pol.log_probs(prompts, tokens, mask).detach()
    with torch.no_grad():
        for name, t in (("log pi", logp), ("log mu", old)):
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name}: non-finite log-probability on an answer (a probability of 0 cannot be an "
                                 "importance ratio's denominator or be differentiated)")
        l = logp - old
        if mc_samples is None:
            baseline = float(torch.dot(weight, rbar))
            pi_w = prompt_w * logp.sum(-1).exp()
            objective = float(torch.dot(pi_w, rbar))
            # the policy gradient theorem, summed over every answer: grad log pi(y) = sum_t grad log pi_t(y_t)
            true_grad = vjp((pi_w * rbar).unsqueeze(-1).expand_as(logp).contiguous())
            kl = float(torch.dot(weight, -l.sum(-1))) / env.length
        else:
            baseline, objective = analytic_objective(env, beh), analytic_objective(env, policy)
            true_grad = torch.cat([g.reshape(-1) for g in analytic_policy_gradient(env, policy).values()])
            kl = kl_per_token(beh, policy, env.prompt_distribution()[1])
        spread = math.sqrt(max(float(torch.dot(weight, l.var(-1, unbiased=False))), 0.0))
    log_weight = prompt_w.log() + (old.sum(-1) if mc_samples is None else 0.0)
    return AnswerSet(prompts=prompts, tokens=tokens, weight=weight, log_weight=log_weight.detach(),
                     prompt_weight=prompt_w, logp=logp,
                     old_logp=old.detach(), advantage=rbar - baseline, gram=gram.detach(), true_grad=true_grad.detach(),
                     score_vjp=vjp, objective=objective, baseline=baseline, kl_per_token=kl, spread=spread,
                     exact_answers=mc_samples is None, policy_params=_params(policy),
                     rewarded=int((rbar > rbar.min() + 1e-12).sum()))


# ---------------------------------------------------------------------------------------------- the loss


def _clip_window(eps_low: float, eps_high: float) -> tuple[float, float]:
    """The clip arguments policy_loss takes: eps_low = inf (no lower clip) is its eps_low = 1 (log 0 = -inf)."""
    eps_low = _real("eps_low", eps_low, lo=0.0, allow_inf=True)
    eps_high = _real("eps_high", eps_high, lo=0.0, allow_inf=True)
    if 1.0 < eps_low < math.inf:
        raise ValueError(f"eps_low: expected a value in [0, 1] or inf (no lower clip), got {eps_low}")
    return min(eps_low, 1.0), eps_high


def _ess_softmax(x: torch.Tensor) -> torch.Tensor:
    """1 / (n sum_t w_t^2) for w = softmax(x) over the last axis, in log space:
    exp(2 logsumexp(x) - logsumexp(2 x) - log n)."""
    return torch.exp(2 * torch.logsumexp(x, -1) - torch.logsumexp(2 * x, -1) - math.log(x.shape[-1]))


def _token_weight_ess(level: str, p: float, l: torch.Tensor, adv: torch.Tensor, eps_low: float, eps_high: float,
                      opts: dict[str, Any]) -> torch.Tensor:
    """Per answer, the loss's ``token_weight_ess`` (rl.losses.policy_loss's metric, there averaged over the
    batch): ``1 / (n sum_t w_t^2)`` of the normalised token weights w (token level: the token ratios,
    softmax(l); power means: d log s / d l = softmax(p l); GMPO: the same after its sign-aware token clip;
    other means: the weights rl.losses.sequence_log_ratio reports)."""
    if level == "token":
        return _ess_softmax(l)
    lo = opts.get("log_clip_low")
    hi = opts.get("log_clip_high")
    lo = (math.log1p(-eps_low) if eps_low < 1 else -math.inf) if lo is None else lo
    hi = math.log1p(eps_high) if hi is None else hi
    if level == "gmpo":
        l = torch.where(adv.unsqueeze(-1) < 0, l.clamp_min(lo), l.clamp_max(hi))
    mean = opts.get("mean", "power")
    if mean == "power" and isinstance(p, float) and math.isfinite(p):
        return torch.ones_like(l[:, 0]) if p == 0 else _ess_softmax(p * l)
    mean_opts = {k: v for k, v in opts.items() if k in ("rmi_steps", "chunk_size", "chunk_p", "adaptive_signal",
                                                        "adaptive_thresholds", "adaptive_ps")}
    mask = torch.ones_like(l, dtype=torch.bool)
    _, pi, _, _ = sequence_log_ratio(l, mask, p, mean=mean, check=False, adv_seq=adv, log_lo=lo, log_hi=hi,
                                     **mean_opts)
    return 1.0 / (l.shape[-1] * (pi * pi).sum(-1))


def _coefficients(ans: AnswerSet, old_seen: torch.Tensor, *, level: str, p: float, eps_low: float, eps_high: float,
                  agg: str, opts: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c [N, D, T], log_scale [N, D], token-weight ESS [N, D]): -d loss / d log pi_t per answer and noise
    draw is ``c exp(log_scale)``. The scale is kept apart only for is-product, whose coefficient
    ``A prod_t r_t`` overflows float64 where mu is tiny, although ``mu(y) A prod_t r_t = A pi(y)`` does not."""
    N, D, T = old_seen.shape
    logp = ans.logp.unsqueeze(1).expand(N, D, T).reshape(N * D, T)
    old = old_seen.reshape(N * D, T)
    adv = ans.advantage.repeat_interleave(D)
    if level == "is-product":
        # the full likelihood ratio: g = A prod_t r_t grad log pi(y), every token the same coefficient
        c = adv.unsqueeze(-1).expand(N * D, T)
        return c.reshape(N, D, T), (logp - old).sum(-1).reshape(N, D), torch.ones(N, D, dtype=torch.float64)
    mask = torch.ones(N * D, T, dtype=torch.bool)
    x = logp.clone().requires_grad_(True)
    # check=False: the inputs are finite by construction (prepare_answers checks log pi and log mu)
    loss, _ = policy_loss(x, old, adv, mask, level=level, p=p, eps_low=eps_low, eps_high=eps_high, agg=agg,
                          metrics=False, **{"check": False, **opts})
    (grad,) = torch.autograd.grad(loss, x)
    # Every answer has exactly T tokens, so under every aggregation mode the batch loss is the mean of
    # the rows' single-answer losses: seq-mean-* divide by the B sequences, token-mean by B T tokens
    # where one answer divides by T, seq-mean-token-sum-norm by B N. Row i's gradient is therefore
    # B times the gradient of its own one-answer loss (tests/rl/envs/test_estimator.py checks it row by row).
    c = -(N * D) * grad
    ess = _token_weight_ess(level, p, logp - old, adv, eps_low, eps_high, opts)
    # The loss reports the batch mean of the same per-answer ESS: hold ours to it on every call (on the
    # first rows, a batch of their own), so that what is reported is the loss's metric, averaged over
    # answers with their probabilities instead of over rows.
    k = min(N * D, _ESS_CHECK_ROWS)
    _, met = policy_loss(logp[:k], old[:k], adv[:k], mask[:k], level=level, p=p, eps_low=eps_low, eps_high=eps_high,
                         agg=agg, **opts)
    mine = float(ess[:k].mean())
    if not math.isclose(mine, met["token_weight_ess"], rel_tol=1e-9, abs_tol=1e-12):
        raise RuntimeError(f"per-answer token-weight ESS ({mine}) disagrees with policy_loss's metric "
                           f"({met['token_weight_ess']}) for level={level!r}: the two definitions drifted apart")
    return c.reshape(N, D, T), torch.zeros(N, D, dtype=torch.float64), ess.reshape(N, D)


@functools.lru_cache(maxsize=2)
def _standard_normal(seed: int, N: int, D: int, T: int) -> torch.Tensor:
    """N(0, 1) draws [N, D, T] from a generator seeded ``seed`` (cached: every variant evaluated on one
    answer set with one seed sees the same draws, and they are drawn once). Never modified in place."""
    return torch.randn(N, D, T, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _quad(c: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """c^T G c per answer and draw: c [N, D, T], G [N, T] (diagonal) or [N, T, T] -> [N, D]."""
    if gram.dim() == 2:
        return (c * c * gram.unsqueeze(1)).sum(-1)
    return torch.einsum("ndt,nts,nds->nd", c, gram, c)


def moments(ans: AnswerSet, *, level: str = "sequence", p: float = 0.0, eps_low: float = math.inf,
            eps_high: float = math.inf, noise_tau: float = 0.0, noise_draws: int = 64, seed: int = 0,
            **loss_options: Any) -> dict[str, Any]:
    """The estimator's moments for one loss variant on a prepared :class:`AnswerSet` (see the module doc).

    Reusing one AnswerSet across variants shares the enumeration, the Gram matrices and grad J; the
    noise draws depend only on ``seed`` and the shapes, so variants compared on one AnswerSet and seed
    see the same draws (a paired design). ``loss_options`` go to :func:`rl.losses.policy_loss`
    (``agg`` included; default ``"seq-mean-token-mean"``, the trainer's). Returns the dict of
    :data:`MOMENT_KEYS`: ``mean_grad``, ``true_grad`` (float64 [P]) and floats.
    """
    if level not in ESTIMATOR_LEVELS:
        raise ValueError(f"level: unknown level {level!r}; expected one of {', '.join(ESTIMATOR_LEVELS)}")
    eps_low, eps_high = _clip_window(eps_low, eps_high)
    noise_tau = _real("noise_tau", noise_tau, lo=0.0)
    if isinstance(noise_draws, bool) or not isinstance(noise_draws, int) or noise_draws < 1:
        raise ValueError(f"noise_draws: expected an int >= 1, got {noise_draws!r}")
    opts = dict(loss_options)
    agg = opts.pop("agg", "seq-mean-token-mean")
    N, T = ans.logp.shape
    D = noise_draws if (noise_tau > 0 and ans.exact_answers) else 1  # Monte Carlo: one draw per sampled answer
    old_seen = ans.old_logp.unsqueeze(1).expand(N, D, T)
    if noise_tau > 0:
        old_seen = old_seen + noise_tau * _standard_normal(int(seed), N, D, T)
    c, log_scale, ess = _coefficients(ans, old_seen, level=level, p=p, eps_low=eps_low, eps_high=eps_high, agg=agg,
                                      opts=opts)
    w = ans.weight
    log_w = ans.log_weight.reshape(N, 1)
    # the weights enter in log space with each coefficient's scale: mu(y) times an importance weight that
    # alone overflows float64 is finite (it is w_c pi(y) A for is-product), and so is sqrt(mu(y)) times it
    wc = c * (log_scale + log_w).exp().unsqueeze(-1)
    mean_grad = ans.score_vjp(wc.mean(1))
    cw = c * (log_scale + 0.5 * log_w).exp().unsqueeze(-1)
    q = _quad(cw, ans.gram)  # w |g|^2 per answer and draw
    second = float(q.mean(1).sum())
    if not math.isfinite(second):
        # the weighted square itself exceeds float64 (sum_y pi^2 / mu of a far behaviour policy): report inf
        second = math.inf
    true = ans.true_grad
    mn, tn = float(mean_grad.norm()), float(true.norm())
    if not math.isfinite(mn):
        raise RuntimeError(f"moments: E g is not finite for level={level!r}, p={p} (an overflow this code should not "
                           "produce); nothing is reported rather than a NaN")
    # E g = 0 exactly (mu never draws a rewarded answer) points nowhere: cosine 0, scaled bias 1
    cosine = (float(torch.dot(mean_grad, true)) / (mn * tn) if mn > 0 else 0.0) if tn > 0 else math.nan
    trace_var = max(second - mn * mn, 0.0)
    if ans.exact_answers and D > 1:
        within = (q.mean(1) - _quad(cw.mean(1, keepdim=True), ans.gram).squeeze(1)).clamp_min(0.0)  # w Var_eps
        err2 = float(torch.dot(w, within)) / (D - 1)
    elif ans.exact_answers:
        err2 = 0.0
    else:
        err2 = trace_var / (N - 1)
    return {
        "mean_grad": mean_grad.detach(),
        "true_grad": true,
        "cosine": cosine,
        "rel_bias": float((mean_grad - true).norm()) / tn if tn > 0 else math.nan,
        "scaled_bias": (math.sqrt(max(1.0 - cosine * cosine, 0.0)) if cosine > 0 else 1.0) if tn > 0 else math.nan,
        "trace_var": trace_var,
        "ess": float(torch.dot(w, ess.mean(1))),
        "kl_per_token": ans.kl_per_token,
        "spread": ans.spread,
        "mc_error": math.sqrt(err2) / mn if mn > 0 else (0.0 if err2 == 0 else math.inf),
        "objective": ans.objective,
        "baseline": ans.baseline,
        "n_answers": N,
        "rewarded": ans.rewarded,
        "exact": ans.exact_answers and D == 1,
    }


def estimator_moments(env: Env, behaviour: Policy, policy: Policy, *, level: str = "sequence", p: float = 0.0,
                      eps_low: float = math.inf, eps_high: float = math.inf, noise_tau: float = 0.0,
                      noise_draws: int = 64, seed: int = 0, mc_samples: int | None = None,
                      **loss_options: Any) -> dict[str, Any]:
    """Bias, variance, direction and token-weight ESS of one loss variant's single-answer gradient.

    ``behaviour`` (mu) samples, ``policy`` (pi_theta) is differentiated; both are Policies of the
    same kind on ``env``. Exact enumeration by default; ``mc_samples=n`` for a factorized policy
    at any length (Monte Carlo over answers, analytic J and grad J). Clip window
    ``[1 - eps_low, 1 + eps_high]`` (``inf``: none), ``noise_tau``: sd of the mismatch noise on
    the behaviour log-probs the loss sees. See the module docstring for every quantity and
    :func:`moments` for the returned keys. Equivalent to ``moments(prepare_answers(...), ...)``;
    call those two directly to evaluate many variants on one answer set.
    """
    ans = prepare_answers(env, behaviour, policy, mc_samples=mc_samples, seed=seed)
    return moments(ans, level=level, p=p, eps_low=eps_low, eps_high=eps_high, noise_tau=noise_tau,
                   noise_draws=noise_draws, seed=seed, **loss_options)

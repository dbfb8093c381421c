"""Exact expected reward and exact policy gradient by enumerating every answer.

For an environment with a finite prompt distribution w_c and answer space [0, V)^T:

    J(theta)        = sum_c w_c sum_y pi_theta(y | c) rbar(c, y)
    grad_theta J    = sum_c w_c sum_y pi_theta(y | c) rbar(c, y) grad_theta log pi_theta(y | c)

where rbar(c, y) = E[observed reward | c, y] (``env.mean_reward``). Both are computed in float64
on a copy of the policy by summing over all V^T answers, so estimator bias can be measured
rather than guessed (Sutton & Barto, "Reinforcement Learning", 2nd ed., sec. 13.2, the
policy gradient theorem for a one-step episode).

The environment must provide ``vocab``, ``length``, ``prompt_distribution()`` and
``mean_reward``; the bandits of rl.envs.bandits do.

Which of the two exact routes applies is decided in one place, :func:`oracle_method`: the closed
form below when the policy is factorized and the environment a sequence bandit (any length:
V^T far beyond enumeration at T = 32), else enumeration when V^T <= ``max_answers``.
:func:`supports_oracle` and :func:`exact_expected_reward` ask it; pass the policy to
:func:`supports_oracle` to learn whether J is known for that policy.

For a factorized policy (:class:`~rl.policies.tabular.TabularPolicy`) on a sequence bandit,
J and grad J also have closed forms that need no enumeration (any length T):
:func:`analytic_objective` and :func:`analytic_policy_gradient`. With
``q_t = pi_t(y*_t)``, ``Q_k = prod_{t <= k} q_t`` and ``e_v`` the unit vector of token v,
the clean rewards of rl.envs.bandits give (per context; the softmax Jacobian
``d q_t / d theta_t = q_t (e_{y*_t} - pi_t)``)::

    count:           J = (1/T) sum_t q_t            dJ/dtheta_t = (1/T) q_t (e_{y*_t} - pi_t)
    all-or-nothing:  J = prod_t q_t                 dJ/dtheta_t = J (e_{y*_t} - pi_t)
    prefix:          J = (1/T) sum_k Q_k            dJ/dtheta_t = (1/T) (sum_{k >= t} Q_k) (e_{y*_t} - pi_t)

(the prefix reward (1/T) max{k : y_<=k = y*_<=k} equals (1/T) sum_k prod_{t <= k} [y_t = y*_t],
and positions are independent under pi, so E prod_{t <= k} [y_t = y*_t] = Q_k). Reward noise
enters through ``env.reward_affine()``: E[observed] = a + b r, so J -> a + b J, grad -> b grad.
"""

from __future__ import annotations

import copy
import itertools

import torch

from rl.envs.base import Env
from rl.policies.base import Policy
from rl.policies.tabular import TabularPolicy

__all__ = ["enumerate_answers", "exact_expected_reward", "exact_policy_gradient", "supports_oracle",
           "oracle_method", "analytic_objective", "analytic_policy_gradient", "MAX_ANSWERS", "ORACLE_METHODS"]

MAX_ANSWERS = 65536
#: the exact routes to J: the closed form of a factorized policy, and the sum over every answer
ORACLE_METHODS = ("analytic", "enumeration")


def _enumerable(env: Env, max_answers: int) -> bool:
    need = ("vocab", "length", "prompt_distribution", "mean_reward")
    return all(hasattr(env, a) for a in need) and env.vocab ** env.length <= max_answers


def _analytic_mismatch(env: Env, policy: Policy) -> str | None:
    """Why the closed forms do not apply to ``(env, policy)``, or None when they do."""
    from rl.envs.bandits import SequenceBandit  # the bandits module imports nothing from here

    if not isinstance(env, SequenceBandit):
        return (f"analytic J needs a SequenceBandit (count, all-or-nothing or prefix reward), got "
                f"{type(env).__name__}")
    if not isinstance(policy, TabularPolicy):
        return f"analytic J needs a factorized TabularPolicy, got {type(policy).__name__}"
    if (policy.vocab, policy.length, policy.n_contexts) != (env.vocab, env.length, env.n_contexts):
        return (f"policy (V={policy.vocab}, T={policy.length}, C={policy.n_contexts}) does not match the "
                f"environment (V={env.vocab}, T={env.length}, C={env.n_contexts})")
    return None


def oracle_method(env: Env, policy: Policy | None = None, max_answers: int = MAX_ANSWERS) -> str | None:
    """How J (and grad J) of ``policy`` on ``env`` is known exactly: ``"analytic"`` (a factorized
    policy on a sequence bandit, any length), ``"enumeration"`` (V^T <= ``max_answers``), or None.

    Without a policy only enumeration can be vouched for.
    """
    if policy is not None and _analytic_mismatch(env, policy) is None:
        return "analytic"
    if _enumerable(env, max_answers):
        return "enumeration"
    return None


def supports_oracle(env: Env, max_answers: int = MAX_ANSWERS, *, policy: Policy | None = None) -> bool:
    """True when J is known exactly: by enumeration (``env`` exposes what it needs and V^T <=
    ``max_answers``) or, given ``policy``, by the closed forms (:func:`oracle_method`)."""
    return oracle_method(env, policy, max_answers) is not None


def enumerate_answers(vocab: int, length: int, max_answers: int = MAX_ANSWERS) -> torch.Tensor:
    """Every answer of [0, vocab)^length in lexicographic order, LongTensor [vocab**length, length]."""
    if vocab < 1 or length < 1:
        raise ValueError(f"need vocab >= 1 and length >= 1, got {vocab}, {length}")
    n = vocab**length
    if n > max_answers:
        raise ValueError(f"V^T = {vocab}^{length} = {n} answers exceeds max_answers={max_answers}")
    return torch.tensor(list(itertools.product(range(vocab), repeat=length)), dtype=torch.long).reshape(n, length)


def _objective(env: Env, policy: Policy, max_answers: int) -> torch.Tensor:
    if not _enumerable(env, max_answers):
        raise ValueError(f"environment {getattr(env, 'name', env)!r} does not support exact enumeration "
                         f"(needs vocab, length, prompt_distribution, mean_reward and V^T <= {max_answers})")
    answers = enumerate_answers(env.vocab, env.length, max_answers)
    mask = torch.ones_like(answers, dtype=torch.bool)
    prompts, probs = env.prompt_distribution()
    total = torch.zeros((), dtype=torch.float64)
    for c in range(prompts.shape[0]):
        pr = prompts[c : c + 1].expand(answers.shape[0], -1)
        logp = policy.log_probs(pr, answers, mask).sum(-1)
        rbar = env.mean_reward(pr, answers, mask).double()
        total = total + probs[c] * (logp.exp() * rbar).sum()
    return total


def exact_expected_reward(env: Env, policy: Policy, max_answers: int = MAX_ANSWERS, *, method: str = "auto") -> float:
    """J(theta) = E_c E_{y ~ pi(.|c)} rbar(c, y), exact in float64.

    ``method``: ``"auto"`` (the route :func:`oracle_method` picks: the closed form for a factorized
    policy on a sequence bandit, else enumeration), ``"analytic"`` or ``"enumeration"`` (forced, e.g.
    to hold one against the other). Raises ValueError where the chosen route does not apply.
    """
    if method not in ("auto", *ORACLE_METHODS):
        raise ValueError(f"method: expected 'auto' or one of {', '.join(ORACLE_METHODS)}, got {method!r}")
    if method == "auto":
        method = oracle_method(env, policy, max_answers) or "enumeration"  # enumeration says why not
    if method == "analytic":
        return analytic_objective(env, policy)
    pol = copy.deepcopy(policy).double()
    with torch.no_grad():
        return float(_objective(env, pol, max_answers))


def exact_policy_gradient(env: Env, policy: Policy, max_answers: int = MAX_ANSWERS) -> dict[str, torch.Tensor]:
    """grad_theta J(theta) per named parameter (float64, shaped like the parameter), by enumeration
    (always: it is the reference the closed form :func:`analytic_policy_gradient` is held to).

    Parameters that J does not depend on get a zero gradient.
    """
    pol = copy.deepcopy(policy).double()
    pol.zero_grad(set_to_none=True)
    params = dict(pol.named_parameters())
    j = _objective(env, pol, max_answers)
    grads = torch.autograd.grad(j, list(params.values()), allow_unused=True)
    return {n: (torch.zeros_like(p) if g is None else g.detach()) for (n, p), g in zip(params.items(), grads)}


def _analytic(env: Env, policy: Policy) -> tuple[torch.Tensor, torch.Tensor]:
    """(J, dJ/dlogits [C, T, V]) in float64 by the closed forms of the module docstring."""
    why = _analytic_mismatch(env, policy)
    if why is not None:
        raise ValueError(why)
    T = env.length
    with torch.no_grad():
        logpi = torch.log_softmax(policy.logits.detach().double(), -1)  # [C, T, V]
        pi = logpi.exp()
        log_q = logpi.gather(-1, env.targets.unsqueeze(-1)).squeeze(-1)  # [C, T]
        score = torch.nn.functional.one_hot(env.targets, env.vocab).double() - pi  # e_{y*_t} - pi_t
        if env.reward_kind == "count":
            j_c = log_q.exp().mean(-1)
            coef = log_q.exp() / T
        elif env.reward_kind == "all-or-nothing":
            j_c = log_q.sum(-1).exp()
            coef = j_c.unsqueeze(-1).expand(-1, T)
        else:  # prefix; Q_k from cumulative log-probabilities (products of T probabilities underflow late)
            big_q = log_q.cumsum(-1).exp()  # Q_1..Q_T
            j_c = big_q.mean(-1)
            coef = big_q.flip(-1).cumsum(-1).flip(-1) / T  # (1/T) sum_{k >= t} Q_k
        _, w = env.prompt_distribution()
        a, b = env.reward_affine()
        j = a + b * torch.dot(w, j_c)
        grad = b * w[:, None, None] * coef.unsqueeze(-1) * score
    return j, grad


def analytic_objective(env: Env, policy: Policy) -> float:
    """J(theta) = E_c E_{y ~ pi(.|c)} rbar(c, y) in closed form for a TabularPolicy on a SequenceBandit.

    Any length T (no enumeration); equal to :func:`exact_expected_reward` where both apply.
    Formulas in the module docstring. Raises ValueError for other environments or policies.
    """
    return float(_analytic(env, policy)[0])


def analytic_policy_gradient(env: Env, policy: Policy) -> dict[str, torch.Tensor]:
    """grad_theta J in closed form (float64), ``{"logits": [C, T, V]}`` like :func:`exact_policy_gradient`.

    For a TabularPolicy on a SequenceBandit, any length T; formulas in the module docstring.
    """
    return {"logits": _analytic(env, policy)[1]}

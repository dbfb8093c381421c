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
"""

from __future__ import annotations

import copy
import itertools

import torch

from rl.envs.base import Env
from rl.policies.base import Policy

__all__ = ["enumerate_answers", "exact_expected_reward", "exact_policy_gradient", "supports_oracle",
           "MAX_ANSWERS"]

MAX_ANSWERS = 65536


def supports_oracle(env: Env, max_answers: int = MAX_ANSWERS) -> bool:
    """True when ``env`` exposes what enumeration needs and V^T <= max_answers."""
    need = ("vocab", "length", "prompt_distribution", "mean_reward")
    if not all(hasattr(env, a) for a in need):
        return False
    return env.vocab ** env.length <= max_answers


def enumerate_answers(vocab: int, length: int, max_answers: int = MAX_ANSWERS) -> torch.Tensor:
    """Every answer of [0, vocab)^length in lexicographic order, LongTensor [vocab**length, length]."""
    if vocab < 1 or length < 1:
        raise ValueError(f"need vocab >= 1 and length >= 1, got {vocab}, {length}")
    n = vocab**length
    if n > max_answers:
        raise ValueError(f"V^T = {vocab}^{length} = {n} answers exceeds max_answers={max_answers}")
    return torch.tensor(list(itertools.product(range(vocab), repeat=length)), dtype=torch.long).reshape(n, length)


def _objective(env: Env, policy: Policy, max_answers: int) -> torch.Tensor:
    if not supports_oracle(env, max_answers):
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


def exact_expected_reward(env: Env, policy: Policy, max_answers: int = MAX_ANSWERS) -> float:
    """J(theta) = E_c E_{y ~ pi(.|c)} rbar(c, y), exact by enumeration in float64."""
    pol = copy.deepcopy(policy).double()
    with torch.no_grad():
        return float(_objective(env, pol, max_answers))


def exact_policy_gradient(env: Env, policy: Policy, max_answers: int = MAX_ANSWERS) -> dict[str, torch.Tensor]:
    """grad_theta J(theta) per named parameter (float64, shaped like the parameter), by enumeration.

    Parameters that J does not depend on get a zero gradient.
    """
    pol = copy.deepcopy(policy).double()
    pol.zero_grad(set_to_none=True)
    params = dict(pol.named_parameters())
    j = _objective(env, pol, max_answers)
    grads = torch.autograd.grad(j, list(params.values()), allow_unused=True)
    return {n: (torch.zeros_like(p) if g is None else g.detach()) for (n, p), g in zip(params.items(), grads)}

"""Bandit environments with verifiable rewards and answer spaces small enough to enumerate.

K-armed bandit: the answer is one token a in [0, K); the clean reward is mu_a (a fixed vector).
With one token per answer every power mean of the token ratios equals the token ratio itself,
so every p gives the same loss: the control experiment.

Sequence bandit: the answer is y in [0, V)^T and a hidden target y* in [0, V)^T is fixed by
``target_seed`` (an int, or ``"seed"``: drawn from the run's ``seed``, so that every seed of a
study faces its own target and the variants of one seed share it). Clean rewards:
    "count":           r(y) = (1/T) sum_t [y_t = y*_t]      (fraction of matching positions)
    "all-or-nothing":  r(y) = prod_t [y_t = y*_t]
    "prefix":          r(y) = (1/T) max{k : y_1..y_k = y*_1..y*_k}  (longest correct prefix, as a fraction)
"count" is additive over positions; "all-or-nothing" and "prefix" are not (a position's reward
depends on the others), which decides whether a mean-based surrogate can be unbiased (see
rl.envs.estimator and proofs/theorems_estimator.py). For a factorized policy the expected
reward of each has a closed form (rl.envs.oracle.analytic_objective).
Contextual sequence bandit: the prompt is a context c in [0, C) drawn uniformly, and the target
y*(c) depends on it.

Noise (the robustness questions of the seeds), applied to the clean reward r in [0, 1]:
    "gaussian": r + sigma * N(0, 1)         E[observed] = r
    "flip":     1 - r with probability q    E[observed] = (1 - q) r + q (1 - r)
``reward`` returns the observed reward (float32, what the trainer sees); ``mean_reward``
returns E[observed | y] (float64), the quantity whose policy gradient the trainer's estimator
targets and the oracle enumerates; ``clean_reward`` returns r (float64). The noise is drawn from the environment's own
generator (seeded by ``seed``), which ``state_dict`` checkpoints.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rl.envs.base import Env
from rl.policies.base import Policy
from rl.policies.tabular import AutoregressivePolicy, TabularPolicy, context_ids

__all__ = ["KArmedBandit", "SequenceBandit", "ContextualSequenceBandit", "NOISE_KINDS", "REWARD_KINDS",
           "TARGET_FROM_SEED", "target_generator"]

REWARD_KINDS = ("count", "all-or-nothing", "prefix")
NOISE_KINDS = (None, "gaussian", "flip")
#: the ``target_seed`` that draws the hidden target from the run's ``seed``
TARGET_FROM_SEED = "seed"
#: the stream of ``seed`` that the target is drawn from (the noise uses ``seed`` itself)
_TARGET_STREAM = 1


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def target_generator(target_seed: int | str, seed: int) -> torch.Generator:
    """The generator the hidden target (or the arm order) is drawn from.

    ``target_seed`` an int: that seed, whatever the run's. ``"seed"`` (:data:`TARGET_FROM_SEED`): a
    stream derived from ``seed`` (numpy's ``SeedSequence([seed, 1])``, the same on every machine),
    independent of the noise drawn from ``seed`` itself.
    """
    if target_seed == TARGET_FROM_SEED:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"target_seed={TARGET_FROM_SEED!r} draws the target from seed, which must be an int "
                             f">= 0, got {seed!r}")
        state = np.random.SeedSequence([seed, _TARGET_STREAM]).generate_state(1, np.uint64)[0]
        return _generator(int(state >> np.uint64(1)))  # 63 bits: torch seeds are signed 64-bit
    if isinstance(target_seed, bool) or not isinstance(target_seed, int):
        raise ValueError(f"target_seed: expected an int or {TARGET_FROM_SEED!r} (drawn from the run's seed), "
                         f"got {target_seed!r}")
    return _generator(target_seed)


class _EnumerableBandit(Env):
    """Shared machinery: answer space V^T, prompt distribution, noise, policy factory."""

    vocab: int
    length: int
    n_contexts: int = 1

    def __init__(self, *, noise: str | None, noise_scale: float, seed: int):
        if noise not in NOISE_KINDS:
            raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
        if not math.isfinite(noise_scale) or noise_scale < 0:
            raise ValueError(f"noise_scale must be finite and >= 0, got {noise_scale}")
        if noise == "flip" and noise_scale > 1:
            raise ValueError(f"noise='flip' needs a probability noise_scale in [0, 1], got {noise_scale}")
        self.noise, self.noise_scale = noise, float(noise_scale)
        self._noise_gen = _generator(seed)

    # -- protocol ---------------------------------------------------------------------------
    def sample_prompts(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if self.n_contexts == 1:
            return torch.zeros(n, 0, dtype=torch.long)
        return torch.randint(0, self.n_contexts, (n, 1), generator=generator)

    def reward(self, prompts, tokens, mask) -> torch.Tensor:
        r = self.clean_reward(prompts, tokens, mask)
        if self.noise == "gaussian" and self.noise_scale > 0:
            r = r + self.noise_scale * torch.randn(r.shape, generator=self._noise_gen)
        elif self.noise == "flip" and self.noise_scale > 0:
            flip = torch.rand(r.shape, generator=self._noise_gen) < self.noise_scale
            r = torch.where(flip, 1.0 - r, r)
        return r.float()

    def mean_reward(self, prompts, tokens, mask) -> torch.Tensor:
        """E[observed reward | prompt, answer] (float64 [B]): the noisy reward's expectation."""
        a, b = self.reward_affine()
        return a + b * self.clean_reward(prompts, tokens, mask).double()

    def reward_affine(self) -> tuple[float, float]:
        """(a, b) with E[observed reward | answer] = a + b r for the clean reward r.

        Gaussian noise (mean 0) and no noise: (0, 1); flip with probability q:
        (1 - q) r + q (1 - r) = q + (1 - 2q) r.
        """
        if self.noise == "flip":
            return self.noise_scale, 1.0 - 2.0 * self.noise_scale
        return 0.0, 1.0

    def make_policy(self, kind: str = "tabular", **kw) -> Policy:
        """A fresh policy: ``kind`` "tabular" (TabularPolicy) or "autoregressive" (tanh RNN)."""
        if kind == "tabular":
            return TabularPolicy(self.vocab, self.length, self.n_contexts, **kw)
        if kind == "autoregressive":
            return AutoregressivePolicy(self.vocab, self.length, self.n_contexts, **kw)
        raise ValueError(f"policy kind must be 'tabular' or 'autoregressive', got {kind!r}")

    def state_dict(self) -> dict:
        return {"noise_rng": self._noise_gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"noise_rng"}:
            raise ValueError(f"expected state key 'noise_rng', got {sorted(state)}")
        self._noise_gen.set_state(state["noise_rng"])

    # -- enumeration (the exact oracle) -------------------------------------------------------
    def prompt_distribution(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every prompt with its probability: (prompts [C, P], probs float64 [C])."""
        if self.n_contexts == 1:
            return torch.zeros(1, 0, dtype=torch.long), torch.ones(1, dtype=torch.float64)
        c = self.n_contexts
        return torch.arange(c).unsqueeze(1), torch.full((c,), 1.0 / c, dtype=torch.float64)

    def _check(self, tokens: torch.Tensor, mask: torch.Tensor) -> None:
        if tokens.dim() != 2 or tokens.shape[1] != self.length:
            raise ValueError(f"tokens must be [B, {self.length}], got {tuple(tokens.shape)}")
        if mask.shape != tokens.shape or mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool shaped like tokens, got {mask.dtype} {tuple(mask.shape)}")
        if not bool(mask.all()):
            raise ValueError("bandit answers have exactly T tokens: mask must be all True")


class KArmedBandit(_EnumerableBandit):
    """K arms, one token per answer; clean reward mu_a with mu = a permutation of linspace(0, 1, K).

    Args:
        arms: K >= 2. means: optional explicit arm means (length K, in [0, 1] for "flip" noise).
        target_seed: seeds the permutation of the default means (an int, or ``"seed"``: drawn from
            ``seed``; see :func:`target_generator`). noise, noise_scale, seed: see the module docstring.
    """

    name = "bandit"

    def __init__(self, arms: int = 10, means: list[float] | None = None, *, target_seed: int | str = 0,
                 noise: str | None = None, noise_scale: float = 0.0, seed: int = 0):
        super().__init__(noise=noise, noise_scale=noise_scale, seed=seed)
        if arms < 2:
            raise ValueError(f"arms must be >= 2, got {arms}")
        target = target_generator(target_seed, seed)
        if means is None:
            perm = torch.randperm(arms, generator=target)
            mu = torch.linspace(0.0, 1.0, arms, dtype=torch.float64)[perm]
        else:
            if len(means) != arms:
                raise ValueError(f"means has {len(means)} entries for {arms} arms")
            mu = torch.tensor(means, dtype=torch.float64)
            if not bool(torch.isfinite(mu).all()):
                raise ValueError(f"arm means must be finite, got {means}")
        self.vocab, self.length, self.means = arms, 1, mu

    def clean_reward(self, prompts, tokens, mask) -> torch.Tensor:
        self._check(tokens, mask)
        return self.means[tokens[:, 0]]


class SequenceBandit(_EnumerableBandit):
    """Answers in [0, V)^T scored against a hidden target (see the module docstring).

    Args:
        vocab: V >= 2. length: T >= 1. reward: one of REWARD_KINDS ("count", "all-or-nothing", "prefix").
        target_seed: seeds the hidden target (an int, or ``"seed"``: drawn from ``seed``; see
            :func:`target_generator`). noise, noise_scale, seed: see the module docstring.
    """

    name = "seq-bandit"

    def __init__(self, vocab: int = 8, length: int = 4, reward: str = "count", *, target_seed: int | str = 0,
                 noise: str | None = None, noise_scale: float = 0.0, seed: int = 0):
        super().__init__(noise=noise, noise_scale=noise_scale, seed=seed)
        if vocab < 2 or length < 1:
            raise ValueError(f"need vocab >= 2 and length >= 1, got vocab={vocab}, length={length}")
        if reward not in REWARD_KINDS:
            raise ValueError(f"reward must be one of {REWARD_KINDS}, got {reward!r}")
        self.vocab, self.length, self.reward_kind = vocab, length, reward
        self.targets = torch.randint(0, vocab, (self.n_contexts, length), generator=target_generator(target_seed, seed))

    @property
    def target(self) -> torch.Tensor:
        """The hidden target of context 0, LongTensor [T]."""
        return self.targets[0]

    def clean_reward(self, prompts, tokens, mask) -> torch.Tensor:
        self._check(tokens, mask)
        tgt = self.targets[context_ids(prompts, tokens.shape[0], self.n_contexts)]
        hit = (tokens == tgt).double()
        if self.reward_kind == "count":
            return hit.mean(-1)
        if self.reward_kind == "all-or-nothing":
            return hit.prod(-1)
        return hit.cumprod(-1).mean(-1)  # prefix: the k-th cumulative product is 1 iff y_1..y_k are right


class ContextualSequenceBandit(SequenceBandit):
    """A sequence bandit whose target y*(c) depends on a uniformly drawn context c in [0, C).

    The prompt is the LongTensor [n, 1] of contexts. Args as SequenceBandit plus contexts: C >= 2.
    """

    name = "contextual-bandit"

    def __init__(self, vocab: int = 8, length: int = 4, reward: str = "count", contexts: int = 4, *,
                 target_seed: int | str = 0, noise: str | None = None, noise_scale: float = 0.0, seed: int = 0):
        if contexts < 2:
            raise ValueError(f"contexts must be >= 2, got {contexts}")
        self.n_contexts = contexts
        super().__init__(vocab, length, reward, target_seed=target_seed, noise=noise,
                         noise_scale=noise_scale, seed=seed)

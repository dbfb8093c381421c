"""The policy protocol the trainer speaks (the environment's half is :mod:`rl.envs.base`).

A *rollout* is a batch of sampled answers: ``tokens`` [B, T] with a ``mask`` [B, T] that is
False after EOS or on padding, and ``logp`` [B, T], the detached log-probability of each
sampled token under the policy that sampled it (0 where the mask is False).

A *policy* is a ``torch.nn.Module`` that can sample one answer per prompt row, score given
answers (differentiably) and, optionally, report per-token entropies.

Environments without prompts (the bandits) hand the policy an empty LongTensor of shape
[n, 0] rather than None, so that ``Policy.sample`` still learns the batch size from
``prompts.shape[0]``; ``None`` remains allowed for policies that do not need it.

Reference: the sampling / scoring split follows the rollout / actor split of verl and TRL.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import torch

__all__ = ["Rollout", "Policy", "check_rollout", "check_temperature", "check_lm_inputs", "prompt_mask",
           "gather_logp_entropy"]


@dataclass
class Rollout:
    """A batch of sampled answers.

    Attributes:
        prompts: LongTensor [B, P] (P may be 0) or None, the prompts the answers respond to,
            already repeated once per sample.
        tokens: LongTensor [B, T], the sampled tokens (any value where ``mask`` is False).
        mask: BoolTensor [B, T], True on real answer tokens, False after EOS and on padding.
        logp: float32 [B, T], detached log pi_sample(token_t | prompt, tokens_<t); 0 where
            ``mask`` is False.
    """

    prompts: torch.Tensor | None
    tokens: torch.Tensor
    mask: torch.Tensor
    logp: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])


def check_rollout(r: Rollout) -> None:
    """Raise ValueError when a rollout breaks the protocol (shapes, dtypes, masked logp)."""
    if r.tokens.dim() != 2:
        raise ValueError(f"Rollout.tokens must be [B, T], got shape {tuple(r.tokens.shape)}")
    if r.mask.shape != r.tokens.shape or r.logp.shape != r.tokens.shape:
        raise ValueError(
            f"Rollout shapes differ: tokens {tuple(r.tokens.shape)}, mask {tuple(r.mask.shape)}, "
            f"logp {tuple(r.logp.shape)}"
        )
    if r.mask.dtype != torch.bool:
        raise ValueError(f"Rollout.mask must be bool, got {r.mask.dtype}")
    if r.tokens.dtype != torch.long:
        raise ValueError(f"Rollout.tokens must be int64, got {r.tokens.dtype}")
    if r.logp.requires_grad:
        raise ValueError("Rollout.logp must be detached (it is the behaviour policy's log-prob)")
    if r.prompts is not None and r.prompts.shape[0] != r.tokens.shape[0]:
        raise ValueError(
            f"Rollout.prompts has {r.prompts.shape[0]} rows but tokens has {r.tokens.shape[0]}"
        )


def check_temperature(t: float) -> float:
    """The temperature as a float; ValueError unless it is a finite number > 0."""
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {t!r}")
    return float(t)


def check_lm_inputs(owner: str, prompts, tokens=None, mask=None) -> None:
    """ValueError unless ``prompts`` is an int64 [B, P] tensor with P >= 1 and, when given,
    ``tokens`` is [B, T] with a bool ``mask`` of its shape (the language-model policies' inputs)."""
    if not isinstance(prompts, torch.Tensor) or prompts.dim() != 2 or prompts.shape[1] == 0 \
            or prompts.dtype != torch.long:
        got = f"{prompts.dtype} {tuple(prompts.shape)}" if isinstance(prompts, torch.Tensor) else type(prompts).__name__
        raise ValueError(f"{owner} needs prompts as an int64 tensor [B, P] with P >= 1, got {got}")
    if tokens is not None:
        if tokens.dim() != 2 or tokens.shape[0] != prompts.shape[0]:
            raise ValueError(f"tokens {tuple(tokens.shape)} do not match prompts {tuple(prompts.shape)}")
        if mask is None or mask.shape != tokens.shape or mask.dtype != torch.bool:
            raise ValueError("mask must be a bool tensor with the shape of tokens")


def prompt_mask(prompts: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Real tokens of left-padded prompts, bool [B, P]: everything from a row's first non-pad
    token on (a pad id inside the prompt is a real token)."""
    return (prompts != pad_id).long().cumsum(-1) > 0


def gather_logp_entropy(
    log_table: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, *, entropy_grad: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-prob of ``tokens`` and entropy, from one log-softmax table.

    log_table: [B, T, V] log pi(. | prefix_t) (already tempered); tokens: [B, T] with any
    value where ``mask`` is False. Returns logp_t = log_table[t, y_t] and
    H_t = -sum_v exp(log_table[t, v]) log_table[t, v], both [B, T] and exactly 0 where
    ``mask`` is False. ``entropy_grad=False`` computes H from the detached table (metrics).
    """
    safe = torch.where(mask, tokens, torch.zeros((), dtype=tokens.dtype))
    lp = log_table.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    zero = torch.zeros((), dtype=lp.dtype)
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        lt = log_table if entropy_grad else log_table.detach()
        ent = -(lt.exp() * lt).sum(-1)
    return torch.where(mask, lp, zero), torch.where(mask, ent, zero)


class Policy(torch.nn.Module, abc.ABC):
    """A sampling policy pi_theta(answer | prompt) over token sequences.

    Subclasses implement:
        sample(prompts, generator, temperature=1.0) -> Rollout
            one answer per prompt row (the trainer has already repeated each prompt G times);
            randomness comes only from ``generator`` so runs are reproducible.
        log_probs(prompts, tokens, mask, *, temperature=1.0) -> Tensor [B, T]
            log pi_theta^tau(tokens_t | prompts, tokens_<t), differentiable in the parameters,
            exactly 0 where ``mask`` is False (no NaN or -inf may leak from padding).
        entropy(prompts, tokens, mask, *, temperature=1.0) -> Tensor [B, T] or None
            H(pi_theta^tau(. | prompts, tokens_<t)) per position, 0 where ``mask`` is False;
            None when the policy cannot compute it cheaply.
    and may override, to share one teacher-forced pass between the two,
        log_probs_and_entropy(prompts, tokens, mask, *, temperature=1.0, entropy_grad=True)

    ``temperature`` tau scales logits as logits / tau: pi^tau = softmax(logits / tau).
    ``Rollout.logp`` is the log-prob under that tempered distribution (the distribution
    actually sampled), so a trainer that samples at tau must score at the same tau, or its
    importance ratios pi_new / pi_old compare two different distributions.
    """

    @abc.abstractmethod
    def sample(
        self, prompts: torch.Tensor | None, generator: torch.Generator, temperature: float = 1.0
    ) -> Rollout:
        raise NotImplementedError

    @abc.abstractmethod
    def log_probs(
        self, prompts: torch.Tensor | None, tokens: torch.Tensor, mask: torch.Tensor, *,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        raise NotImplementedError

    @abc.abstractmethod
    def entropy(
        self, prompts: torch.Tensor | None, tokens: torch.Tensor, mask: torch.Tensor, *,
        temperature: float = 1.0,
    ) -> torch.Tensor | None:
        raise NotImplementedError

    def log_probs_and_entropy(
        self, prompts: torch.Tensor | None, tokens: torch.Tensor, mask: torch.Tensor, *,
        temperature: float = 1.0, entropy_grad: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(log_probs, entropy) of the same answers, as the two methods define them.

        ``entropy_grad=False`` returns the entropy detached (for metrics only), which lets an
        override compute it from the log-prob pass's logits at no extra forward. This default
        calls both methods, i.e. two passes; policies with a shared forward override it.
        """
        logp = self.log_probs(prompts, tokens, mask, temperature=temperature)
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            ent = self.entropy(prompts, tokens, mask, temperature=temperature)
        return logp, ent

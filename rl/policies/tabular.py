"""Small policies for the bandits: a tabular softmax per position, and an RNN over the prefix.

Both answer with exactly T tokens from a vocabulary of V (the mask is all True) and condition
on an optional context id: ``prompts`` is a LongTensor [B, P] whose first column, when P >= 1,
is the context in [0, n_contexts); P = 0 means the single context 0.

TabularPolicy: independent softmaxes, pi(y | c) = prod_t softmax(theta[c, t])[y_t]; the
parameter is the logit table theta of shape [C, T, V]. Exact and convex in the logits, so it is
the policy of choice for the enumeration oracle.

AutoregressivePolicy: pi(y | c) = prod_t softmax(W_o h_t + b_o)[y_t] with a tanh recurrence
h_t = tanh(W_x e(y_{t-1}) + W_h h_{t-1} + b), h_0 = tanh(E_ctx[c]) and y_0 a BOS token; a small
non-tabular model whose per-token ratios differ along the answer, so the means disagree.

Initial policies are drawn from torch's global generator, which the trainer seeds with the run's
seed just before it builds the policy (``rl.trainer.RunState.create``): with ``init_scale > 0``
every seed starts from its own random policy, and the variants of one seed from the same one (a
paired design). :func:`perturbed_copy` builds a behaviour policy whose logits are the policy's
plus N(0, s^2) noise (rollouts from a perturbed copy: training-inference mismatch by design).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from rl.policies.base import Policy, Rollout, check_temperature, gather_logp_entropy

__all__ = ["TabularPolicy", "AutoregressivePolicy", "context_ids", "perturbed_copy"]


def _scale(name: str, v, *, optional: bool = False) -> float | None:
    """A finite standard deviation >= 0 (or None where ``optional``), else a ValueError naming it."""
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
    return float(v)


def context_ids(prompts: torch.Tensor | None, batch: int | None, n_contexts: int) -> torch.Tensor:
    """Context id per row: prompts[:, 0] when prompts has a column, else zeros.

    Raises ValueError when an id is outside [0, n_contexts) or the batch size is unknown.
    """
    if prompts is None or prompts.dim() != 2 or prompts.shape[1] == 0:
        if prompts is not None and prompts.dim() == 2:
            batch = prompts.shape[0]
        if batch is None:
            raise ValueError("prompts is None: pass an empty [n, 0] LongTensor to give the batch size")
        return torch.zeros(batch, dtype=torch.long)
    ids = prompts[:, 0].long()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n_contexts):
        raise ValueError(
            f"prompt context ids must lie in [0, {n_contexts}), got [{int(ids.min())}, {int(ids.max())}]"
        )
    return ids


def _check_tokens(tokens: torch.Tensor, mask: torch.Tensor, length: int, vocab: int) -> torch.Tensor:
    """Validate shapes and in-mask token range; return tokens with masked-out entries set to 0
    (padding may hold any value and must not index out of range)."""
    if tokens.dim() != 2 or tokens.shape[1] != length:
        raise ValueError(f"tokens must be [B, {length}], got shape {tuple(tokens.shape)}")
    if mask.shape != tokens.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor shaped like tokens {tuple(tokens.shape)}, "
                         f"got {mask.dtype} {tuple(mask.shape)}")
    real = tokens[mask]
    if real.numel() and (int(real.min()) < 0 or int(real.max()) >= vocab):
        raise ValueError(f"tokens must lie in [0, {vocab}), got [{int(real.min())}, {int(real.max())}]")
    return torch.where(mask, tokens, torch.zeros((), dtype=tokens.dtype))


class TabularPolicy(Policy):
    """Independent softmax per (context, position): log pi(y|c) = sum_t log_softmax(theta[c,t])[y_t].

    Args:
        vocab: V, tokens per position. length: T, positions per answer.
        n_contexts: C, number of distinct prompts (1 for prompt-free bandits).
        init_scale: s, the initial logits are s N(0, 1) from torch's global generator (one draw of
            the [C, T, V] table; s = 0 gives the uniform policy).
    """

    def __init__(self, vocab: int, length: int, n_contexts: int = 1, init_scale: float = 0.0):
        super().__init__()
        if vocab < 2 or length < 1 or n_contexts < 1:
            raise ValueError(f"need vocab >= 2, length >= 1, n_contexts >= 1; got {vocab}, {length}, {n_contexts}")
        init_scale = _scale("init_scale", init_scale)
        self.vocab, self.length, self.n_contexts = vocab, length, n_contexts
        self.logits = torch.nn.Parameter(init_scale * torch.randn(n_contexts, length, vocab))

    def _log_table(self, prompts: torch.Tensor | None, batch: int | None, temperature: float = 1.0) -> torch.Tensor:
        """log softmax(theta[c] / temperature) for each row's context c, [B, T, V]."""
        ids = context_ids(prompts, batch, self.n_contexts)
        logits = self.logits if temperature == 1.0 else self.logits / temperature
        return F.log_softmax(logits, dim=-1)[ids]

    def sample(self, prompts, generator, temperature: float = 1.0) -> Rollout:
        temperature = check_temperature(temperature)
        with torch.no_grad():
            logt = self._log_table(prompts, None, temperature)
            b = logt.shape[0]
            flat = logt.reshape(-1, self.vocab).exp()
            tokens = torch.multinomial(flat, 1, generator=generator).reshape(b, self.length)
            logp = logt.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        mask = torch.ones_like(tokens, dtype=torch.bool)
        return Rollout(prompts=prompts, tokens=tokens, mask=mask, logp=logp.float())

    def log_probs(self, prompts, tokens, mask, *, temperature: float = 1.0) -> torch.Tensor:
        tokens = _check_tokens(tokens, mask, self.length, self.vocab)
        logt = self._log_table(prompts, tokens.shape[0], check_temperature(temperature))
        lp = logt.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return torch.where(mask, lp, torch.zeros((), dtype=lp.dtype))

    def entropy(self, prompts, tokens, mask, *, temperature: float = 1.0) -> torch.Tensor:
        return self.log_probs_and_entropy(prompts, tokens, mask, temperature=temperature)[1]

    def log_probs_and_entropy(self, prompts, tokens, mask, *, temperature: float = 1.0,
                              entropy_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = _check_tokens(tokens, mask, self.length, self.vocab)
        logt = self._log_table(prompts, tokens.shape[0], check_temperature(temperature))
        return gather_logp_entropy(logt, tokens, mask, entropy_grad=entropy_grad)


class AutoregressivePolicy(Policy):
    """A one-layer tanh recurrent network (Elman RNN) over the answer prefix, conditioned on the
    context through its initial state.

    log pi(y|c) = sum_t log_softmax(W_o h_t + b_o)[y_t],
    h_t = tanh(W_x e(y_{t-1}) + W_h h_{t-1} + b),  y_0 = BOS,  h_0 = tanh(E_ctx[c]).

    Token embeddings e, the context table E_ctx and the output head are separate parameters;
    W_x, W_h and W_o are the 2-D matrices Muon orthogonalises (embeddings go to AdamW).
    Elman, not a GRU: at these sizes torch's fused GRU kernel costs more than the whole step.

    Initialisation: torch's defaults, from the global generator. ``init_scale`` s (None: the
    default head) redraws the output head as W_o ~ N(0, s^2 / hidden), b_o = 0 after the other
    parameters, so the initial logits W_o h_t have standard deviation s RMS(h_t) <= s (|h| < 1) and,
    for one seed, are exactly s times those of s = 1. ``logit_noise`` (a buffer [C, T, V], None
    unless :func:`perturbed_copy` set it) is added to the logits of position t in context c.
    """

    def __init__(self, vocab: int, length: int, n_contexts: int = 1, hidden: int = 32,
                 init_scale: float | None = None):
        super().__init__()
        if vocab < 2 or length < 1 or n_contexts < 1 or hidden < 1:
            raise ValueError(
                f"need vocab >= 2, length >= 1, n_contexts >= 1, hidden >= 1; got {vocab}, {length}, {n_contexts}, {hidden}"
            )
        init_scale = _scale("init_scale", init_scale, optional=True)
        self.vocab, self.length, self.n_contexts, self.hidden = vocab, length, n_contexts, hidden
        self.tok_emb = torch.nn.Embedding(vocab + 1, hidden)  # index `vocab` is BOS
        self.ctx_emb = torch.nn.Embedding(n_contexts, hidden)
        self.w_x = torch.nn.Linear(hidden, hidden)
        self.w_h = torch.nn.Linear(hidden, hidden, bias=False)
        self.head = torch.nn.Linear(hidden, vocab)
        if init_scale is not None:
            with torch.no_grad():
                self.head.weight.normal_(0.0, init_scale / math.sqrt(hidden))
                self.head.bias.zero_()
        self.register_buffer("logit_noise", None)

    def _logits(self, h: torch.Tensor, ids: torch.Tensor | None, t: slice | int) -> torch.Tensor:
        """The head's logits of hidden states ``h`` ([B, T', H] or [B, H]) at positions ``t``, plus the
        logit noise of each row's context ``ids`` [B] when the policy carries one."""
        logits = self.head(h)
        if self.logit_noise is not None:
            logits = logits + self.logit_noise[ids][:, t]
        return logits

    def _noise_ids(self, prompts, batch: int) -> torch.Tensor | None:
        """Context ids for the logit noise (None without noise: no second pass over the prompts)."""
        return None if self.logit_noise is None else context_ids(prompts, batch, self.n_contexts)

    def _h0(self, prompts, batch) -> torch.Tensor:
        return torch.tanh(self.ctx_emb(context_ids(prompts, batch, self.n_contexts)))

    def _cell(self, prev: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.w_x(self.tok_emb(prev)) + self.w_h(h))

    def _log_table(self, prompts, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Teacher-forced log softmax(logits / temperature) at every position, [B, T, V]."""
        b = tokens.shape[0]
        h = self._h0(prompts, b)
        prev = torch.full((b,), self.vocab, dtype=torch.long)
        hs = []
        for t in range(self.length):
            h = self._cell(prev, h)
            hs.append(h)
            prev = tokens[:, t]
        logits = self._logits(torch.stack(hs, 1), self._noise_ids(prompts, b), slice(None))
        return F.log_softmax(logits if temperature == 1.0 else logits / temperature, dim=-1)

    def sample(self, prompts, generator, temperature: float = 1.0) -> Rollout:
        temperature = check_temperature(temperature)
        with torch.no_grad():
            h = self._h0(prompts, None)
            b = h.shape[0]
            ids = self._noise_ids(prompts, b)
            prev = torch.full((b,), self.vocab, dtype=torch.long)
            toks, lps = [], []
            for t in range(self.length):
                h = self._cell(prev, h)
                logits = self._logits(h, ids, t)
                logt = F.log_softmax(logits if temperature == 1.0 else logits / temperature, dim=-1)
                nxt = torch.multinomial(logt.exp(), 1, generator=generator)
                toks.append(nxt[:, 0])
                lps.append(logt.gather(-1, nxt)[:, 0])
                prev = nxt[:, 0]
            tokens = torch.stack(toks, 1)
            logp = torch.stack(lps, 1)
        return Rollout(prompts=prompts, tokens=tokens, mask=torch.ones_like(tokens, dtype=torch.bool),
                       logp=logp.float())

    def log_probs(self, prompts, tokens, mask, *, temperature: float = 1.0) -> torch.Tensor:
        tokens = _check_tokens(tokens, mask, self.length, self.vocab)
        logt = self._log_table(prompts, tokens, check_temperature(temperature))
        lp = logt.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return torch.where(mask, lp, torch.zeros((), dtype=lp.dtype))

    def entropy(self, prompts, tokens, mask, *, temperature: float = 1.0) -> torch.Tensor:
        return self.log_probs_and_entropy(prompts, tokens, mask, temperature=temperature)[1]

    def log_probs_and_entropy(self, prompts, tokens, mask, *, temperature: float = 1.0,
                              entropy_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = _check_tokens(tokens, mask, self.length, self.vocab)
        logt = self._log_table(prompts, tokens, check_temperature(temperature))
        return gather_logp_entropy(logt, tokens, mask, entropy_grad=entropy_grad)


def perturbed_copy(policy: Policy, scale: float, generator: torch.Generator) -> Policy:
    """A frozen copy of ``policy`` whose logits are the policy's plus N(0, scale^2) noise.

    For a rollout policy that differs from the trained one by a known amount (training-inference
    mismatch): the noise is one draw from ``generator`` per (context, position, token), fixed for
    the copy, applied before the temperature (``softmax((logits + noise) / tau)``).
    :class:`TabularPolicy`: its logit table plus the noise, i.e. exactly another tabular policy.
    :class:`AutoregressivePolicy`: its logits at position t in context c plus ``noise[c, t]``,
    whatever the prefix (the copy's ``logit_noise``). ``scale = 0`` gives an exact copy. The copy
    shares nothing with ``policy`` and requires no grad.

    Raises:
      ValueError: another kind of policy, or a scale that is not a finite number >= 0.
    """
    scale = _scale("scale", scale)
    if not isinstance(policy, TabularPolicy | AutoregressivePolicy):
        raise ValueError(f"perturbed_copy: needs a TabularPolicy or an AutoregressivePolicy, got "
                         f"{type(policy).__name__}")
    ref = policy.logits if isinstance(policy, TabularPolicy) else policy.head.weight
    shape = (policy.n_contexts, policy.length, policy.vocab)
    noise = scale * torch.randn(shape, generator=generator, dtype=ref.dtype).to(ref.device)
    out = copy.deepcopy(policy).requires_grad_(False)
    with torch.no_grad():
        if isinstance(out, TabularPolicy):
            out.logits.add_(noise)
        else:
            out.logit_noise = noise if out.logit_noise is None else out.logit_noise + noise
    return out

"""A tiny decoder-only transformer in plain torch, and the Policy that samples from it.

Architecture (pre-norm, Llama-like so the same code paths serve HF models and MuonClip):

    h_0   = E[x] (+ P[pos] when ``pos="learned"``)
    h'    = h + Attn(RMSNorm(h))          Attn has separate q_proj / k_proj / v_proj / o_proj
    h_out = h' + MLP(RMSNorm(h'))         MLP is SwiGLU  W_2 (silu(W_1 x) * W_3 x)  or GELU
    logits = RMSNorm(h_L) E^T             (tied embeddings)

RMSNorm(x) = x / sqrt(mean(x^2) + eps) * g (Zhang & Sennrich 2019). Rotary positions rotate
each pair of q/k channels by angle pos * theta^(-2i/d) (Su et al. 2021, "RoFormer"), using
the rotate-half layout of Llama. Grouped-query attention (Ainslie et al. 2023): query head h
reads key/value head h // (n_heads / n_kv_heads), as in HF's ``repeat_kv``.

Prompts are **left**-padded with ``pad_id``: a row's real tokens are right-aligned, and
position ids count real tokens only, so padding changes no value of a real position.

Sampling keeps a KV cache (one prefill pass over the prompts, then one token per step),
draws with ``torch.multinomial`` from ``softmax(logits / temperature)`` using only the
caller's ``torch.Generator``, records log softmax(logits / temperature)[token], and stops a
row at its first EOS (the EOS itself is a real, masked-True action; later positions hold
``pad_id`` with mask False and logp 0). The loop ends when every row has stopped or after
``max_new_tokens`` tokens.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rl.policies.base import (
    Policy, Rollout, check_lm_inputs, check_temperature, gather_logp_entropy, prompt_mask,
)

__all__ = [
    "TinyLMConfig",
    "TinyLM",
    "TinyLMPolicy",
    "Attention",
    "RMSNorm",
    "attention_logit_max",
    "sample_loop",
]


@dataclass(frozen=True)
class TinyLMConfig:
    """Hyper-parameters of :class:`TinyLM`.

    ``n_kv_heads`` None means multi-head attention (n_kv_heads = n_heads); it must divide
    ``n_heads``. ``d_model`` must be divisible by ``n_heads`` and the head size must be even
    for rotary positions. ``mlp`` is "swiglu" or "gelu"; ``pos`` is "rope" or "learned".
    """

    vocab_size: int
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None
    mlp: str = "swiglu"
    mlp_hidden: int | None = None  # default: 4 * d_model for GELU, 8/3 * d_model (rounded) for SwiGLU
    pos: str = "rope"
    max_seq_len: int = 64
    rope_theta: float = 10000.0
    qkv_bias: bool = False
    norm_eps: float = 1e-6
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {self.vocab_size}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        kv = self.kv_heads
        if kv < 1 or self.n_heads % kv:
            raise ValueError(f"n_kv_heads={self.n_kv_heads} must be >= 1 and divide n_heads={self.n_heads}")
        if self.mlp not in ("swiglu", "gelu"):
            raise ValueError(f"mlp must be 'swiglu' or 'gelu', got {self.mlp!r}")
        if self.pos not in ("rope", "learned"):
            raise ValueError(f"pos must be 'rope' or 'learned', got {self.pos!r}")
        if self.pos == "rope" and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head size, got {self.head_dim}")
        if self.n_layers < 1 or self.max_seq_len < 1:
            raise ValueError("n_layers and max_seq_len must be >= 1")

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def hidden(self) -> int:
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        if self.mlp == "gelu":
            return 4 * self.d_model
        return 8 * ((8 * self.d_model // 3 + 7) // 8)

    def to_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2, -1) + eps) * weight, computed in float32 (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight).to(x.dtype)


def _rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape [B, 1, T, head_dim] for integer positions [B, T] (rotate-half layout)."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    ang = positions.to(torch.float32)[..., None] * inv_freq  # [B, T, d/2]
    ang = torch.cat([ang, ang], dim=-1)[:, None]
    return ang.cos(), ang.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate [B, H, T, d] by the angles in cos/sin [B, 1, T, d]: x cos + rotate_half(x) sin.

    The angles are computed in float32 and rounded to x's dtype, as HF Llama does, so a
    bfloat16 copy of the model stays in bfloat16 (q and k must share v's dtype)."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + _rotate_half(x) * sin


class Attention(nn.Module):
    """Causal self-attention with separate projections and optional grouped-query attention.

    Exposes ``num_heads``, ``num_key_value_heads``, ``head_dim`` and ``scaling`` (1/sqrt(d)),
    the attributes MuonClip reads; ``rotary`` says whether q/k are rotated after projection.
    """

    def __init__(self, cfg: TinyLMConfig) -> None:
        super().__init__()
        self.num_heads = cfg.n_heads
        self.num_key_value_heads = cfg.kv_heads
        self.head_dim = cfg.head_dim
        self.scaling = cfg.head_dim**-0.5
        self.rotary = cfg.pos == "rope"
        self.rope_theta = cfg.rope_theta
        d, hd = cfg.d_model, cfg.head_dim
        self.q_proj = nn.Linear(d, cfg.n_heads * hd, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(d, cfg.kv_heads * hd, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(d, cfg.kv_heads * hd, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.n_heads * hd, d, bias=False)

    def qk(self, x: torch.Tensor, positions: torch.Tensor, rope=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q [B, H, T, d], k and v [B, Hkv, T, d] after rotary positions (if any); ``rope``
        is (cos, sin) for ``positions`` when the caller has them already."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        if self.rotary:
            cos, sin = rope if rope is not None else _rope_cos_sin(positions, self.head_dim, self.rope_theta)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q, k, v

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        attn_mask: torch.Tensor | None,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x [B, T, D] -> (out [B, T, D], (k, v) including cached keys).

        ``attn_mask`` is a bool [B, 1, T, L] (True = may attend) or None for plain causal
        attention over unpadded inputs without a cache.
        """
        B, T, _ = x.shape
        q, k, v = self.qk(x, positions, rope)
        if cache is not None:
            k = torch.cat([cache[0], k], dim=2)
            v = torch.cat([cache[1], v], dim=2)
        # enable_gqa: query head h reads key/value head h // (H / H_kv), without copies.
        gqa = self.num_heads != self.num_key_value_heads
        if attn_mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=gqa)
        out = out.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim)
        return self.o_proj(out), (k, v)


class MLP(nn.Module):
    def __init__(self, cfg: TinyLMConfig) -> None:
        super().__init__()
        self.kind = cfg.mlp
        d, h = cfg.d_model, cfg.hidden
        self.up_proj = nn.Linear(d, h, bias=False)
        if cfg.mlp == "swiglu":
            self.gate_proj = nn.Linear(d, h, bias=False)
        self.down_proj = nn.Linear(h, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(F.gelu(self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, cfg: TinyLMConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, positions, attn_mask, cache=None, rope=None):
        a, new_cache = self.self_attn(self.attn_norm(x), positions, attn_mask, cache, rope)
        x = x + a
        return x + self.mlp(self.mlp_norm(x)), new_cache


def _positions(key_mask: torch.Tensor) -> torch.Tensor:
    """Position of each token counted over real tokens only (0 on leading padding)."""
    return (key_mask.long().cumsum(-1) - 1).clamp(min=0)


class TinyLM(nn.Module):
    """Decoder-only transformer language model; see the module docstring for the formulas."""

    def __init__(self, cfg: TinyLMConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_embed = nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.pos == "learned" else None
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, init_std) for weights; output projections scaled by 1/sqrt(2 n_layers) (GPT-2)."""
        std = self.config.init_std
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=std / math.sqrt(2 * self.config.n_layers))
            else:
                nn.init.normal_(p, std=std)

    def _embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        h = self.embed_tokens(ids)
        if self.pos_embed is not None:
            if int(positions.max()) >= self.config.max_seq_len:
                raise ValueError(
                    f"position {int(positions.max())} exceeds max_seq_len={self.config.max_seq_len}"
                )
            h = h + self.pos_embed(positions)
        return h

    def forward(
        self, input_ids: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits [B, L, V] for input_ids [B, L]; ``key_mask`` [B, L] bool marks real tokens.

        Padding is only allowed on the left (prompts); padded queries attend to themselves so
        that no softmax row is empty, and no real query attends to a padded key.
        """
        logits, _ = self.prefill(input_ids, key_mask)
        return logits

    def prefill(
        self, input_ids: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Logits [B, L, V] and the KV cache of every layer."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, L], got shape {tuple(input_ids.shape)}")
        B, L = input_ids.shape
        if key_mask is None or bool(key_mask.all()):
            positions = torch.arange(L, device=input_ids.device).expand(B, L)
            attn_mask = None
        else:
            positions = _positions(key_mask)
            causal = torch.ones(L, L, dtype=torch.bool, device=input_ids.device).tril()
            eye = torch.eye(L, dtype=torch.bool, device=input_ids.device)
            attn_mask = ((causal & key_mask[:, None, None, :]) | eye)
        h = self._embed(input_ids, positions)
        rope = self._rope(positions)
        caches = []
        for layer in self.layers:
            h, c = layer(h, positions, attn_mask, None, rope)
            caches.append(c)
        return self._logits(h), caches

    def decode_step(
        self,
        token: torch.Tensor,
        positions: torch.Tensor,
        key_mask: torch.Tensor,
        caches: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """One new token [B] at positions [B]; key_mask [B, L+1] covers cache + the new token."""
        attn_mask = key_mask[:, None, None, :]
        h = self._embed(token[:, None], positions[:, None])
        rope = self._rope(positions[:, None])
        new = []
        for layer, c in zip(self.layers, caches):
            h, c2 = layer(h, positions[:, None], attn_mask, c, rope)
            new.append(c2)
        return self._logits(h)[:, -1], new

    def _rope(self, positions: torch.Tensor):
        """(cos, sin) shared by every layer, or None without rotary positions."""
        if self.config.pos != "rope":
            return None
        return _rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(h), self.embed_tokens.weight)


@torch.no_grad()
def attention_logit_max(model: TinyLM, input_ids: torch.Tensor) -> torch.Tensor:
    """Max causal attention logit per layer and query head, float32 [n_layers, n_heads].

    S^{l,h} = max over batch rows b and causal pairs j <= i of  q_i . k_j / sqrt(d), with q, k
    taken after rotary positions, exactly as the attention computes them (no padding: every
    position is real). An independent measurement used to check MuonClip.
    """
    B, L = input_ids.shape
    positions = torch.arange(L).expand(B, L)
    h = model._embed(input_ids, positions)
    out = []
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    for layer in model.layers:
        attn = layer.self_attn
        q, k, _ = attn.qk(layer.attn_norm(h), positions)
        k = k.repeat_interleave(attn.num_heads // attn.num_key_value_heads, dim=1)
        s = (q.float() @ k.float().transpose(-1, -2)) * attn.scaling  # [B, H, L, L]
        s = s.masked_fill(~causal, float("-inf"))
        out.append(s.amax(dim=(0, 2, 3)))
        h, _ = layer(h, positions, None)
    return torch.stack(out)


def sample_loop(
    prompts: torch.Tensor,
    logits: torch.Tensor,
    decode,
    generator: torch.Generator,
    temperature: float,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    *,
    greedy: bool = False,
) -> Rollout:
    """Autoregressive sampling shared by the tiny LM and the HF adapter.

    ``logits`` [B, V] are the next-token logits after the prompts; ``decode(tokens [B])``
    feeds one token per row and returns the next logits. Each row draws from
    softmax(logits / temperature) with ``generator`` (or the argmax when ``greedy``), records
    the draw's log-probability, and stops after its first EOS: later positions hold
    ``pad_id``, mask False and logp 0. Ends when every row stopped or after
    ``max_new_tokens`` tokens.
    """
    B = logits.shape[0]
    done = torch.zeros(B, dtype=torch.bool)
    toks, lps, masks = [], [], []
    for t in range(max_new_tokens):
        logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)
        if greedy:
            tok = logp_all.argmax(-1)
        else:
            tok = torch.multinomial(logp_all.exp(), 1, generator=generator).squeeze(-1)
        lp = logp_all.gather(-1, tok[:, None]).squeeze(-1)
        live = ~done
        toks.append(torch.where(live, tok, torch.full_like(tok, pad_id)))
        lps.append(torch.where(live, lp, torch.zeros_like(lp)))
        masks.append(live)
        done = done | (tok == eos_id)
        if bool(done.all()) or t == max_new_tokens - 1:
            break
        logits = decode(toks[-1])
    return Rollout(prompts=prompts, tokens=torch.stack(toks, dim=1), mask=torch.stack(masks, dim=1),
                   logp=torch.stack(lps, dim=1).float())


class TinyLMPolicy(Policy):
    """A :class:`TinyLM` as a Policy (contract 2 in rl/policies/base.py).

    Args:
        model: the language model (or a config to build one).
        eos_id, pad_id: token ids; ``pad_id`` marks left padding in prompts and fills answers
            after EOS.
        max_new_tokens: answer length budget T_max.

    ``log_probs`` and ``entropy`` take an optional ``temperature`` (default 1.0): pass the
    sampling temperature to score with the same tempered distribution that produced
    ``Rollout.logp``.
    """

    def __init__(self, model: TinyLM | TinyLMConfig, *, eos_id: int, pad_id: int, max_new_tokens: int) -> None:
        super().__init__()
        self.model = model if isinstance(model, TinyLM) else TinyLM(model)
        V = self.model.config.vocab_size
        for name, v in (("eos_id", eos_id), ("pad_id", pad_id)):
            if not 0 <= v < V:
                raise ValueError(f"{name}={v} is outside the vocabulary [0, {V})")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.eos_id, self.pad_id, self.max_new_tokens = int(eos_id), int(pad_id), int(max_new_tokens)

    # -- helpers -------------------------------------------------------------------------
    def _answer_logits(self, prompts, tokens, mask, temperature):
        P = prompts.shape[1]
        pm = prompt_mask(prompts, self.pad_id)
        if tokens.shape[1] == 0:
            return tokens.new_zeros((*tokens.shape, self.model.config.vocab_size), dtype=torch.float32)
        # Masked answer positions hold arbitrary ids; replace them so any id is safe to embed.
        safe = torch.where(mask, tokens, torch.full_like(tokens, self.pad_id))
        # The last answer token predicts nothing we score, so it is not fed.
        ids = torch.cat([prompts, safe[:, :-1]], dim=1)
        key_mask = torch.cat([pm, torch.ones_like(mask[:, :-1])], dim=1)
        logits = self.model(ids, key_mask)[:, P - 1 :].float()
        return logits / temperature

    # -- Policy protocol --------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        prompts: torch.Tensor,
        generator: torch.Generator,
        temperature: float = 1.0,
        *,
        greedy: bool = False,
        max_new_tokens: int | None = None,
    ) -> Rollout:
        """One answer per prompt row; see the module docstring. ``greedy`` takes the argmax
        (its logp is then under softmax(logits / temperature) all the same)."""
        check_lm_inputs("TinyLMPolicy", prompts)
        temperature = check_temperature(temperature)
        T_max = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        B = prompts.shape[0]
        key_mask = prompt_mask(prompts, self.pad_id)
        # A trainer repeats each prompt G times: prefill each distinct prompt once and share its
        # KV cache (rows of equal prompts have equal caches; only float rounding of the batched
        # matmuls can differ, far below the 1e-5 agreement with teacher forcing).
        uniq, inv = torch.unique(prompts, dim=0, return_inverse=True)
        if uniq.shape[0] < B:
            logits, caches = self.model.prefill(uniq, prompt_mask(uniq, self.pad_id))
            logits, caches = logits[inv], [(k[inv], v[inv]) for k, v in caches]
        else:
            logits, caches = self.model.prefill(prompts, key_mask)
        state = {"caches": caches, "key_mask": key_mask, "pos": key_mask.sum(-1)}

        def decode(tok: torch.Tensor) -> torch.Tensor:
            state["key_mask"] = torch.cat([state["key_mask"], torch.ones(B, 1, dtype=torch.bool)], dim=1)
            out, state["caches"] = self.model.decode_step(tok, state["pos"], state["key_mask"], state["caches"])
            state["pos"] = state["pos"] + 1
            return out

        return sample_loop(prompts, logits[:, -1], decode, generator, temperature, T_max, self.eos_id,
                           self.pad_id, greedy=greedy)

    def log_probs(
        self, prompts: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, *, temperature: float = 1.0
    ) -> torch.Tensor:
        """log softmax(logits / temperature)[token_t] for each answer position, [B, T], 0 where
        mask is False; differentiable (one teacher-forced forward pass)."""
        check_lm_inputs("TinyLMPolicy", prompts, tokens, mask)
        logits = self._answer_logits(prompts, tokens, mask, check_temperature(temperature))
        safe = torch.where(mask, tokens, torch.zeros_like(tokens))
        lp = torch.log_softmax(logits, dim=-1).gather(-1, safe[..., None]).squeeze(-1)
        return torch.where(mask, lp, torch.zeros_like(lp))

    def answer_log_table(
        self, prompts: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, *, temperature: float = 1.0
    ) -> torch.Tensor:
        """log softmax(logits / temperature) over the whole vocabulary at each answer position,
        [B, T, V], differentiable (one teacher-forced pass; rows where mask is False hold the
        distribution after a padded prefix and are the caller's to mask). Label-smoothed SFT
        needs every token's log-prob, not only the target's."""
        check_lm_inputs("TinyLMPolicy", prompts, tokens, mask)
        return torch.log_softmax(self._answer_logits(prompts, tokens, mask, check_temperature(temperature)), dim=-1)

    def entropy(
        self, prompts: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, *, temperature: float = 1.0
    ) -> torch.Tensor:
        """H_t = -sum_v pi(v) log pi(v) of the next-token distribution at each answer position."""
        return self.log_probs_and_entropy(prompts, tokens, mask, temperature=temperature)[1]

    def log_probs_and_entropy(
        self, prompts: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, *, temperature: float = 1.0,
        entropy_grad: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``log_probs`` and ``entropy`` from one teacher-forced forward pass."""
        check_lm_inputs("TinyLMPolicy", prompts, tokens, mask)
        logits = self._answer_logits(prompts, tokens, mask, check_temperature(temperature))
        return gather_logp_entropy(torch.log_softmax(logits, dim=-1), tokens, mask, entropy_grad=entropy_grad)

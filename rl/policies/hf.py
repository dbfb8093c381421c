"""Any Hugging Face causal LM (``AutoModelForCausalLM``) as a Policy (contract 2).

Sampling is a manual loop over the model's KV cache (``past_key_values``) rather than
``generate``, so that every draw comes from the caller's ``torch.Generator`` (``generate``
draws from the global RNG) and the log-probability recorded is exactly that of the tempered
distribution sampled: log softmax(logits / temperature)[token]. Prompts are left-padded with
``pad_id``; the attention mask hides the padding and position ids count real tokens only
(as ``generate`` does). A row stops at its first EOS (kept, mask True); later positions hold
``pad_id`` with mask False and logp 0 (see ``rl.policies.tiny_lm.sample_loop``).

``log_probs`` is one teacher-forced forward pass over prompt + answer; answer positions
after EOS are replaced by ``pad_id`` before the pass and masked out of the result.

Needs the optional dependency ``transformers`` (imported lazily).
"""

from __future__ import annotations


import torch

from rl.policies.base import (
    Policy, Rollout, check_lm_inputs, check_temperature, gather_logp_entropy, prompt_mask,
)
from rl.policies.tiny_lm import sample_loop

__all__ = ["HFPolicy", "tiny_llama"]


def tiny_llama(
    *,
    vocab_size: int,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int | None = None,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 64,
    eos_id: int | None = None,
    pad_id: int | None = None,
    tie_word_embeddings: bool = True,
    **kw,
):
    """A randomly initialised ``LlamaForCausalLM`` built from a ``LlamaConfig`` (no download)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        max_position_embeddings=max_position_embeddings,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=None,
        tie_word_embeddings=tie_word_embeddings,
        **kw,
    )
    return LlamaForCausalLM(cfg)


class HFPolicy(Policy):
    """Wraps a causal LM (anything whose forward takes input_ids, attention_mask, position_ids,
    past_key_values, use_cache and returns ``.logits``, ``.past_key_values``).

    Args:
        model: e.g. ``AutoModelForCausalLM.from_pretrained(...)`` or :func:`tiny_llama`.
        tokenizer: optional; supplies ``eos_token_id`` / ``pad_token_id`` when not given.
        eos_id, pad_id: token ids (else from the tokenizer, else from ``model.config``).
        max_new_tokens: answer length budget.

    ``log_probs`` / ``entropy`` take an optional ``temperature`` (default 1.0) to score under
    the same tempered distribution that was sampled.
    """

    def __init__(self, model, tokenizer=None, *, eos_id: int | None = None, pad_id: int | None = None,
                 max_new_tokens: int = 16) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        cfg = getattr(model, "config", None)

        def pick(given, attr):
            if given is not None:
                return given
            if tokenizer is not None and getattr(tokenizer, attr, None) is not None:
                return getattr(tokenizer, attr)
            v = getattr(cfg, attr, None)
            return v[0] if isinstance(v, (list, tuple)) else v

        eos, pad = pick(eos_id, "eos_token_id"), pick(pad_id, "pad_token_id")
        if eos is None:
            raise ValueError("HFPolicy needs an EOS id (eos_id=, a tokenizer or model.config.eos_token_id)")
        if pad is None:
            pad = eos  # common for causal LMs without a pad token; padding is told apart by position
        V = model.get_input_embeddings().num_embeddings
        for name, v in (("eos_id", eos), ("pad_id", pad)):
            if not 0 <= int(v) < V:
                raise ValueError(f"{name}={v} is outside the vocabulary [0, {V})")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.eos_id, self.pad_id, self.max_new_tokens = int(eos), int(pad), int(max_new_tokens)

    @torch.no_grad()
    def sample(self, prompts: torch.Tensor, generator: torch.Generator, temperature: float = 1.0, *,
               greedy: bool = False, max_new_tokens: int | None = None) -> Rollout:
        check_lm_inputs("HFPolicy", prompts)
        temperature = check_temperature(temperature)
        B = prompts.shape[0]
        am = prompt_mask(prompts, self.pad_id)
        pos = (am.long().cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=prompts, attention_mask=am.long(), position_ids=pos, use_cache=True)
        state = {"past": out.past_key_values, "am": am, "pos": am.sum(-1)}

        def decode(tok: torch.Tensor) -> torch.Tensor:
            state["am"] = torch.cat([state["am"], torch.ones(B, 1, dtype=torch.bool)], dim=1)
            o = self.model(input_ids=tok[:, None], attention_mask=state["am"].long(),
                           position_ids=state["pos"][:, None], past_key_values=state["past"], use_cache=True)
            state["past"], state["pos"] = o.past_key_values, state["pos"] + 1
            return o.logits[:, -1]

        T = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        return sample_loop(prompts, out.logits[:, -1], decode, generator, temperature, T, self.eos_id,
                           self.pad_id, greedy=greedy)

    def _answer_logits(self, prompts, tokens, mask, temperature):
        P = prompts.shape[1]
        safe = torch.where(mask, tokens, torch.full_like(tokens, self.pad_id))
        # The last answer token predicts nothing we score, so it is not fed.
        ids = torch.cat([prompts, safe[:, :-1]], dim=1)
        am = torch.cat([prompt_mask(prompts, self.pad_id), torch.ones_like(mask[:, :-1])], dim=1)
        pos = (am.long().cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=ids, attention_mask=am.long(), position_ids=pos, use_cache=False).logits
        return logits[:, P - 1 :].float() / temperature

    def log_probs(self, prompts: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, *,
                  temperature: float = 1.0) -> torch.Tensor:
        check_lm_inputs("HFPolicy", prompts, tokens, mask)
        if tokens.shape[1] == 0:
            return torch.zeros(tokens.shape, dtype=torch.float32)
        logits = self._answer_logits(prompts, tokens, mask, check_temperature(temperature))
        safe = torch.where(mask, tokens, torch.zeros_like(tokens))
        lp = torch.log_softmax(logits, dim=-1).gather(-1, safe[..., None]).squeeze(-1)
        return torch.where(mask, lp, torch.zeros_like(lp))

    def entropy(self, prompts: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, *,
                temperature: float = 1.0) -> torch.Tensor:
        return self.log_probs_and_entropy(prompts, tokens, mask, temperature=temperature)[1]

    def log_probs_and_entropy(self, prompts: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, *,
                              temperature: float = 1.0, entropy_grad: bool = True
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """``log_probs`` and ``entropy`` from one teacher-forced forward pass."""
        check_lm_inputs("HFPolicy", prompts, tokens, mask)
        if tokens.shape[1] == 0:
            z = torch.zeros(tokens.shape, dtype=torch.float32)
            return z, z.clone()
        logt = torch.log_softmax(self._answer_logits(prompts, tokens, mask, check_temperature(temperature)), dim=-1)
        return gather_logp_entropy(logt, tokens, mask, entropy_grad=entropy_grad)

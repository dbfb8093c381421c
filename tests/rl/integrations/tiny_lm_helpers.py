"""A tiny causal LM, its tokenizer and a prompt set, all built locally (nothing is downloaded).

Used by the TRL tests and by the README snippet test (which saves them to a folder and loads
them by path, the way a user loads a Hub model).
"""

from __future__ import annotations

import torch
from datasets import Dataset
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHARS = "abcdefghij0123456789 +-=?"
PROMPTS = ["1+2=?", "ab", "3+4=?", "cd", "9-5=?", "ef", "2+2=?", "gh"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level WordLevel tokenizer with <pad> = 0 and <eos> = 1."""
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for c in CHARS:
        vocab[c] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def tiny_llama(seed: int = 0, vocab_size: int = 3 + len(CHARS)) -> LlamaForCausalLM:
    """LlamaForCausalLM with hidden size 32 and 2 layers, weights drawn from ``seed``."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg)


def prompt_dataset(n: int = 8) -> Dataset:
    return Dataset.from_dict({"prompt": PROMPTS[:n]})


def reward_distinct(prompts: list[str], completions: list[str], **kwargs: object) -> list[float]:
    """Number of distinct characters of the completion, over 8: a random model's group rewards differ."""
    return [len(set(c)) / 8 for c in completions]

"""Optimizers: MuonClip (per-head QK-clip around any optimizer) and Muon + AdamW."""

from rl.optim.muon_clip import AttentionSpec, ChainedOptimizer, MuonClip, find_attention_modules, muon_with_adamw

__all__ = ["AttentionSpec", "ChainedOptimizer", "MuonClip", "find_attention_modules", "muon_with_adamw"]

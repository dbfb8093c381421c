"""Shared helpers of the rl.losses tests: hand batches, the formulas written out by hand, strategies.

Expected values in these tests are written from the formulas (plain Python ``math`` on small
hand batches, or a few lines of torch transcribing a public definition), never taken from the
implementation. Tolerances: float64 batches are compared at rtol 1e-12 (a handful of
operations, each within 1 ulp); float32 at 1e-6 relative.
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

F64 = torch.float64
NAN = float("nan")


def t64(rows, pad=NAN, dtype=F64):
    """Ragged list of rows -> ([B, T] tensor padded with ``pad``, bool mask)."""
    T = max(len(r) for r in rows)
    x = torch.full((len(rows), T), pad, dtype=dtype)
    m = torch.zeros(len(rows), T, dtype=torch.bool)
    for i, r in enumerate(rows):
        x[i, : len(r)] = torch.tensor(r, dtype=dtype)
        m[i, : len(r)] = True
    return x, m


def agg_by_hand(token_losses: list[list[float]], agg: str, T: int) -> float:
    """verl's four modes written from their definitions, on ragged per-token losses."""
    rows = [r for r in token_losses if r]
    if agg == "token-mean":
        return sum(sum(r) for r in rows) / sum(len(r) for r in rows)
    if agg == "seq-mean-token-mean":
        return sum(sum(r) / len(r) for r in rows) / len(rows)
    if agg == "seq-mean-token-sum":
        return sum(sum(r) for r in rows) / len(rows)
    return sum(sum(r) for r in rows) / len(rows) / T


def power_mean_by_hand(ls: list[float], p: float) -> float:
    """s = ((1/n) sum r^p)^(1/p), s = exp(mean l) at p = 0: the textbook formula, in float64."""
    if p == 0:
        return math.exp(sum(ls) / len(ls))
    return (sum(math.exp(p * x) for x in ls) / len(ls)) ** (1.0 / p)


def ppo_term(r: float, a: float, lo: float, hi: float, c: float | None = None) -> float:
    """-min(r a, clip(r, lo, hi) a), then the dual clip min(., -a c) for a < 0 (verl's form)."""
    loss = -min(r * a, min(max(r, lo), hi) * a)
    if c is not None and a < 0:
        loss = min(loss, -a * c)
    return loss


def random_batch(seed: int, B: int = 6, T: int = 10, scale: float = 0.3, dtype=F64, min_len: int = 1):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g, dtype=dtype) * 4
    logp = old + scale * torch.randn(B, T, generator=g, dtype=dtype)
    lens = torch.randint(min_len, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lens[:, None]
    adv = torch.randn(B, generator=g, dtype=dtype)
    logp = torch.where(mask, logp, torch.full_like(logp, NAN))  # padding holds garbage
    return logp, old, adv, mask


def ragged_log_ratios(seed: int, B: int, T: int, scale: float, *, keep: float = 0.8, shift: float = 0.0, dtype=F64):
    """Log-ratios ``scale * N(0, 1) + shift`` [B, T] and a random mask keeping about ``keep`` of them
    (every row keeps its first token)."""
    g = torch.Generator().manual_seed(seed)
    l = scale * torch.randn(B, T, generator=g, dtype=dtype) + shift
    mask = torch.rand(B, T, generator=g) < keep
    mask[:, 0] = True
    return l, mask


rows_strategy = st.lists(
    st.lists(st.floats(-3.0, 3.0, allow_nan=False), min_size=1, max_size=7), min_size=1, max_size=5
)

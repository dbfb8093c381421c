r"""Loss aggregation modes, with verl's meanings (``verl.trainer.ppo.core_algos.agg_loss``).

For a per-token loss matrix :math:`L_{it}`, mask :math:`m_{it}`, ``n_i = sum_t m_it`` and
the set :math:`\mathcal S = \{i : n_i > 0\}` of sequences with at least one token:

=============================  ==================================================================
``"token-mean"``               :math:`\sum_{i,t} m_{it} L_{it} / \sum_{i,t} m_{it}`
``"seq-mean-token-mean"``      :math:`\frac{1}{|\mathcal S|}\sum_{i\in\mathcal S} \frac{1}{n_i}\sum_t m_{it} L_{it}`
``"seq-mean-token-sum"``       :math:`\frac{1}{|\mathcal S|}\sum_{i\in\mathcal S} \sum_t m_{it} L_{it}`
``"seq-mean-token-sum-norm"``  :math:`\frac{1}{|\mathcal S| N}\sum_{i,t} m_{it} L_{it}` with ``N = loss_scale_factor``,
                               by default ``T`` (the padded length), as in verl (Dr. GRPO:
                               Liu et al., *Understanding R1-Zero-Like Training*, arXiv:2503.20783)
=============================  ==================================================================

Sequences without tokens are left out of every mean (never a 0/0); a batch without any token
gives a loss of exactly 0 that still depends on the inputs (zero gradient), so a training
step never sees NaN. A sequence-level loss ``L_i`` is aggregated as the matrix
``L_it = L_i`` on the sequence's tokens (verl's broadcast): ``"seq-mean-token-mean"`` is then
the plain mean over sequences (GSPO), ``"token-mean"`` weights sequence ``i`` by ``n_i``.

Length weighting is this one choice, independent of the sequence mean's exponent p: with
``"seq-mean-token-sum"`` a sequence-level loss counts ``n_i L_i`` (over the sequences), which is
LUSPO (Liu et al., *Length-Unbiased Sequence Policy Optimization*, arXiv:2602.05261; TRL's
``loss_type="luspo"``) at p = 0; holding ``agg`` fixed while p varies keeps length weighting out
of a comparison of means.
"""

from __future__ import annotations

import torch

__all__ = ["AGG_MODES", "aggregate", "aggregate_sequences", "row_weights"]

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def check_agg(agg: str) -> None:
    if agg not in AGG_MODES:
        raise ValueError(f"agg: unknown aggregation mode {agg!r}; expected one of {', '.join(AGG_MODES)}")


def check_scale(loss_scale_factor: float | None) -> None:
    if loss_scale_factor is None:
        return
    if isinstance(loss_scale_factor, bool) or not isinstance(loss_scale_factor, int | float) or not loss_scale_factor > 0 \
            or loss_scale_factor == float("inf"):
        raise ValueError(f"loss_scale_factor: expected a finite number > 0, got {loss_scale_factor!r}")


def row_weights(
    n: torch.Tensor, agg: str, T: int, loss_scale_factor: float | None = None, *, times_n: bool = False,
    nonempty: torch.Tensor | None = None, n_seq: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sequence weights ``w`` [B] with ``agg(L) = sum_i w_i sum_t m_it L_it`` (no gradient).

    ``n``: tokens per sequence [B] (float). With ``times_n`` the answer is ``w_i n_i``, the
    weight of a sequence-level loss broadcast over its tokens. Sequences without tokens get
    weight 0 where the mode divides by ``n_i`` (their token sums are 0 anyway). ``nonempty``
    (``n > 0``) and ``n_seq`` (its count, in ``n``'s dtype), when the caller holds them.
    """
    if agg == "token-mean":
        inv = 1.0 / n.sum().clamp(min=1.0)
        return n * inv if times_n else inv.expand_as(n)
    nonempty = n > 0 if nonempty is None else nonempty
    n_seq = (nonempty.sum().to(n.dtype) if n_seq is None else n_seq).clamp(min=1.0)
    if agg == "seq-mean-token-sum-norm":
        # verl's agg_loss: the seq-mean of token sums, then divided by the horizon N.
        norm = float(max(T, 1)) if loss_scale_factor is None else float(loss_scale_factor)
        return n / (n_seq * norm) if times_n else (1.0 / (n_seq * norm)).expand_as(n)
    if agg == "seq-mean-token-mean":
        return nonempty.to(n.dtype) / n_seq if times_n else torch.where(nonempty, 1.0 / (n.clamp(min=1.0) * n_seq), 0.0)
    return n / n_seq if times_n else (1.0 / n_seq).expand_as(n)


def aggregate(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    agg: str = "seq-mean-token-mean",
    *,
    loss_scale_factor: float | None = None,
) -> torch.Tensor:
    """Aggregate a per-token loss matrix ``[B, T]`` to a scalar (see the module table).

    Entries where ``mask`` is False may hold anything (NaN, inf): they are replaced before
    any arithmetic and receive zero gradient.
    """
    check_agg(agg)
    check_scale(loss_scale_factor)
    if loss_mat.ndim != 2 or mask.shape != loss_mat.shape:
        raise ValueError(f"aggregate: loss_mat {tuple(loss_mat.shape)} and mask {tuple(mask.shape)} must both be [B, T]")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask: expected a bool tensor (True = keep), got {mask.dtype}")
    seq_sum = torch.where(mask, loss_mat, 0.0).sum(dim=-1)
    n = mask.sum(dim=-1).to(loss_mat.dtype)
    return torch.dot(seq_sum, row_weights(n, agg, loss_mat.shape[-1], loss_scale_factor))


def aggregate_sequences(
    seq_loss: torch.Tensor,
    n: torch.Tensor,
    agg: str,
    T: int,
    *,
    loss_scale_factor: float | None = None,
) -> torch.Tensor:
    """Aggregate a per-sequence loss ``[B]`` broadcast over each sequence's ``n`` [B] tokens.

    Equal to ``aggregate(seq_loss[:, None].expand(B, T), mask, agg)`` without building the matrix.
    Rows with ``n = 0`` may hold anything.
    """
    check_agg(agg)
    check_scale(loss_scale_factor)
    n = n.to(seq_loss.dtype)
    safe = torch.where(n > 0, seq_loss, 0.0)
    return torch.dot(safe, row_weights(n, agg, T, loss_scale_factor, times_n=True))

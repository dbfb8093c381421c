"""Aggregation modes (rl/losses/aggregation.py) against verl's definitions by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rl.losses import AGG_MODES, aggregate
from tests.rl.losses.loss_helpers import agg_by_hand, t64


def test_aggregate_public_function_matches_hand_modes():
    rows = [[1.0, 2.0, 3.0], [4.0], []]
    x, mask = t64(rows)
    for agg in AGG_MODES:
        assert aggregate(x, mask, agg).item() == pytest.approx(agg_by_hand(rows, agg, 3), rel=1e-12)
    # verl: (1 + 2 + 3 + 4) over 2 non-empty sequences, divided by the horizon 10.
    assert aggregate(x, mask, "seq-mean-token-sum-norm", loss_scale_factor=10).item() == pytest.approx(0.5)


@pytest.mark.parametrize("agg", AGG_MODES)
def test_aggregate_sequences_is_aggregate_of_the_broadcast_matrix(agg):
    from rl.losses import aggregate_sequences

    seq_loss = torch.tensor([1.5, -2.0, math.nan, 0.25], dtype=torch.float64)  # row 2 has no tokens
    _, mask = t64([[0.0, 0.0, 0.0], [0.0], [], [0.0, 0.0]])
    n = mask.sum(-1)
    matrix = seq_loss.unsqueeze(-1).expand(4, 3)
    for lsf in (None, 7.0):
        got = aggregate_sequences(seq_loss, n, agg, 3, loss_scale_factor=lsf)
        # by hand: each sequence's loss counted once per token, the empty row left out
        rows = [[float(seq_loss[i])] * int(n[i]) for i in range(4)]
        want = agg_by_hand(rows, agg, 3) if lsf is None or agg != "seq-mean-token-sum-norm" else \
            sum(sum(r) for r in rows if r) / 3 / lsf
        assert got.item() == pytest.approx(want, rel=1e-12)
        assert got.item() == pytest.approx(aggregate(matrix, mask, agg, loss_scale_factor=lsf).item(), rel=1e-12)


# --------------------------------------------------------------------------- LUSPO
# LUSPO (Liu et al., arXiv:2602.05261; TRL loss_type="luspo") is GSPO with each sequence's loss
# multiplied by its length: at level "sequence" that is agg="seq-mean-token-sum", whatever p.


class _Accelerator:
    """One process: gathering and reducing are the identity."""

    def gather(self, x):
        return x

    def reduce(self, x, reduction="sum"):
        return x


def trl_luspo_loss(logp, old, adv, mask, eps_low, eps_high):
    """TRL's own ``GRPOTrainer._compute_loss`` (trl 1.16, trl/trainer/grpo_trainer.py) run with
    ``loss_type="luspo"``, ``importance_sampling_level="sequence"``, ``beta=0`` on a stand-in for the
    trainer whose model returns ``logp`` as the completion's log-probabilities."""
    from collections import defaultdict
    from types import SimpleNamespace

    from trl import GRPOTrainer

    B, T = logp.shape
    this = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="sequence",
        beta=0.0, loss_type="luspo", epsilon_low=eps_low, epsilon_high=eps_high, args=SimpleNamespace(delta=None),
        use_vllm=False, vllm_importance_sampling_correction=False, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, _entropy_bonus_enabled=False, aux_loss_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)), accelerator=_Accelerator(),
    )
    inputs = {"prompt_ids": torch.zeros(B, 1, dtype=torch.long), "prompt_mask": torch.ones(B, 1, dtype=torch.long),
              "completion_ids": torch.zeros(B, T, dtype=torch.long), "completion_mask": mask.long(),
              "advantages": adv, "old_per_token_logps": old}
    return GRPOTrainer._compute_loss(this, None, inputs)


def test_seq_mean_token_sum_at_p0_is_trls_luspo_value_and_gradient():
    pytest.importorskip("trl")
    from rl.losses import policy_loss

    g = torch.Generator().manual_seed(5)
    B, T = 6, 9
    old = -torch.rand(B, T, generator=g) * 3
    logp = old + 0.2 * torch.randn(B, T, generator=g)
    lens = torch.tensor([9, 4, 1, 7, 2, 9])  # no empty row: TRL divides by B, we by the rows with tokens
    mask = torch.arange(T)[None] < lens[:, None]
    old, logp = old.masked_fill(~mask, 0.0), logp.masked_fill(~mask, 0.0)  # TRL's padding holds zeros
    adv = torch.tensor([1.0, -0.5, 0.8, -1.2, 0.3, -0.7])
    eps_low, eps_high = 0.1, 0.05  # narrow enough that some sequence ratios clip and some do not
    lp_trl, lp_ours = logp.clone().requires_grad_(), logp.clone().requires_grad_()
    want = trl_luspo_loss(lp_trl, old, adv, mask, eps_low, eps_high)
    got, m = policy_loss(lp_ours, old, adv, mask, level="sequence", p=0.0, eps_low=eps_low, eps_high=eps_high,
                         agg="seq-mean-token-sum")
    assert 0.0 < m["clip_frac"] < 1.0
    want.backward()
    got.backward()
    # Both are the same float32 formula in a different order: a few ulps of the loss scale.
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(lp_ours.grad, lp_trl.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("p", [-1.0, 1.0])
def test_length_weighting_is_orthogonal_to_p(p):
    # sum_i n_i L_i(p) / B with L_i = -min(s A, clip(s) A) and s = M_p of the row's ratios, by hand.
    from rl.losses import policy_loss
    from tests.rl.losses.loss_helpers import power_mean_by_hand, ppo_term

    rows = [[0.3, -0.2, 0.1, 0.5], [0.05], [-0.4, 0.2], [0.25, 0.15, -0.05]]
    adv = [1.0, -1.0, 0.5, -2.0]
    l, mask = t64(rows)
    loss, _ = policy_loss(l, torch.zeros_like(l), torch.tensor(adv, dtype=l.dtype), mask, p=p,
                          agg="seq-mean-token-sum")
    want = sum(len(r) * ppo_term(power_mean_by_hand(r, p), a, 0.8, 1.2) for r, a in zip(rows, adv, strict=True))
    assert loss.item() == pytest.approx(want / len(rows), rel=1e-12)

"""The per-call tensors (rl/losses/batch.py): bad shapes, dtypes and values raise a ValueError naming them."""

from __future__ import annotations

import math

import pytest
import torch

from rl.losses import policy_loss
from tests.rl.losses.loss_helpers import F64, NAN, random_batch


def _args():
    logp, old, adv, mask = random_batch(10)
    return logp, old, adv, mask


def test_bad_tensors_raise():
    logp, old, adv, mask = _args()
    B, T = logp.shape
    with pytest.raises(ValueError, match="old_logp: shape"):
        policy_loss(logp, old[:, :-1], adv, mask)
    with pytest.raises(ValueError, match="mask: expected a bool"):
        policy_loss(logp, old, adv, mask.float())
    with pytest.raises(ValueError, match="mask: shape"):
        policy_loss(logp, old, adv, mask[:-1])
    with pytest.raises(ValueError, match="advantages: expected shape"):
        policy_loss(logp, old, adv[:-1], mask)
    with pytest.raises(ValueError, match=r"logp: expected a \[B, T\]"):
        policy_loss(logp[0], old[0], adv, mask[0])
    with pytest.raises(ValueError, match="logp: expected a torch.Tensor"):
        policy_loss(logp.tolist(), old, adv, mask)
    with pytest.raises(ValueError, match="p: NaN"):
        policy_loss(logp, old, adv, mask, p=torch.full((B,), NAN, dtype=F64))
    with pytest.raises(ValueError, match="p: expected a 0-d tensor"):
        policy_loss(logp, old, adv, mask, p=torch.zeros(B + 1))
    bad = logp.clone()
    bad[0, 0] = NAN
    with pytest.raises(ValueError, match=r"logp: NaN or inf on an unmasked token \(first at index \(0, 0\)\)"):
        policy_loss(bad, old, adv, mask)
    varying = torch.randn(B, T, dtype=F64)
    with pytest.raises(ValueError, match="varies within a sequence"):
        policy_loss(logp, old, varying, mask, level="sequence")
    policy_loss(logp, old, varying, mask, level="sequence-token")  # per-token advantages are fine there


def test_value_errors_name_the_tensor_and_the_first_bad_index():
    logp, old, adv, mask = _args()
    bad_old = old.clone()
    bad_old[2, 1] = math.inf
    with pytest.raises(ValueError, match=r"old_logp: NaN or inf on an unmasked token \(first at index \(2, 1\)\)"):
        policy_loss(logp, bad_old, adv, mask)
    bad_adv = adv.clone()
    bad_adv[3] = NAN
    with pytest.raises(ValueError, match=r"advantages: NaN or inf for a sequence with tokens \(first at index \(3,\)\)"):
        policy_loss(logp, old, bad_adv, mask)
    ref = old.clone()
    ref[0, 0] = math.inf  # k3 caps the log-ratio, so the KL term alone would hide it
    with pytest.raises(ValueError, match=r"ref_logp: NaN or inf on an unmasked token \(first at index \(0, 0\)\)"):
        policy_loss(logp, old, adv, mask, ref_logp=ref)
    ent = torch.zeros_like(old)
    ent[1, 0] = NAN
    with pytest.raises(ValueError, match=r"entropy: NaN or inf on an unmasked token \(first at index \(1, 0\)\)"):
        policy_loss(logp, old, adv, mask, entropy=ent)
    with pytest.raises(ValueError, match=r"p: NaN exponent \(first at index \(4,\)\)"):
        policy_loss(logp, old, adv, mask, p=torch.tensor([0.0, 1.0, -1.0, 2.0, NAN, 0.5], dtype=F64))
    # Padding may hold anything, and a row without tokens may have any advantage.
    adv_empty_row = adv.clone()
    mask_empty = mask.clone()
    mask_empty[5] = False
    adv_empty_row[5] = NAN
    loss, _ = policy_loss(logp, old, adv_empty_row, mask_empty)
    assert torch.isfinite(loss)


def test_a_sum_that_overflows_from_finite_values_is_no_error():
    # Each log-ratio is finite; their float32 sum overflows to inf, which flags the check, and
    # locating finds no bad entry: no error (the loss itself is then a matter of the values).
    logp = torch.tensor([[3e38, 3e38], [0.1, 0.2]], dtype=torch.float32)
    mask = torch.ones(2, 2, dtype=torch.bool)
    policy_loss(logp, torch.zeros_like(logp), torch.tensor([0.0, 1.0]), mask, level="token")
    with pytest.raises(ValueError, match="logp: NaN or inf"):
        policy_loss(logp.clone().fill_(math.inf), torch.zeros_like(logp), torch.tensor([0.0, 1.0]), mask, level="token")


def test_p_per_sequence_and_learnable_p_are_resolved_on_the_batch():
    from rl.losses import LearnablePowerMean

    logp, old, adv, mask = _args()
    B = logp.shape[0]
    with pytest.raises(ValueError, match=rf"p: expected a 0-d tensor or one p per sequence \[{B}\], got shape \(3,\)"):
        policy_loss(logp, old, adv, mask, p=torch.zeros(3, dtype=F64))
    mod = LearnablePowerMean(-0.5)
    a, ma = policy_loss(logp, old, adv, mask, p=mod)
    b, mb = policy_loss(logp, old, adv, mask, p=mod(mask).detach())
    assert a.item() == pytest.approx(b.item(), rel=1e-6) and ma["p"] == pytest.approx(-0.5, rel=1e-6)

"""The per-call tensors (rl/losses/batch.py): bad shapes, dtypes and values raise a ValueError naming them."""

from __future__ import annotations

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

"""KL estimators (rl/losses/kl.py) against their closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from rl.losses import kl_estimate
from tests.rl.losses.loss_helpers import F64


def test_kl_estimators_closed_form():
    lp = torch.tensor([[-1.0, -2.0]], dtype=F64)
    ref = torch.tensor([[-1.5, -1.0]], dtype=F64)
    d = [-0.5, 1.0]  # ref - logp
    for est, f in (("k1", lambda x: -x), ("k2", lambda x: x * x / 2), ("k3", lambda x: math.exp(x) - 1 - x)):
        got = kl_estimate(lp, ref, est)
        assert got.tolist()[0] == pytest.approx([f(x) for x in d], rel=1e-12)
    assert kl_estimate(torch.tensor([0.0]), torch.tensor([50.0]), "k3", max_log_ratio=20.0).item() == pytest.approx(
        math.exp(20) - 21, rel=1e-6
    )

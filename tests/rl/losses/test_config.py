"""LossConfig (rl/losses/config.py): every bad option raises a ValueError naming it."""

from __future__ import annotations

import pytest

from rl.losses import policy_loss
from tests.rl.losses.loss_helpers import NAN, random_batch


def _args():
    logp, old, adv, mask = random_batch(10)
    return logp, old, adv, mask


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"level": "tokens"}, "level"),
        ({"agg": "mean"}, "agg"),
        ({"mean": "median"}, "mean"),
        ({"p": NAN}, "p: NaN"),
        ({"p": True}, "bool"),
        ({"eps_low": 1.5}, "eps_low"),
        ({"eps_low": -0.1}, "eps_low"),
        ({"eps_high": -0.1}, "eps_high"),
        ({"clip_c": 1.0}, "clip_c"),
        ({"kl_coef": 0.1}, "ref_logp"),
        ({"entropy_coef": 0.1}, "entropy"),
        ({"kl_estimator": "k4", "ref_logp": None}, "kl_estimator"),
        ({"clip_centre": "plain"}, "unknown option"),
        ({"clip_center": "middle"}, "clip_center"),
        ({"level": "token", "p": -1.0}, "level='token'"),
        ({"level": "token", "clip_center": "bias-corrected"}, "bias-corrected"),
        ({"chunk_size": 4}, "chunk_size"),
        ({"mean": "rmi", "p": 1.0}, "rmi"),
        ({"log_clip_low": 0.1}, "log_clip_low"),
        ({"max_log_ratio": 0.0}, "max_log_ratio"),
    ],
)
def test_bad_options_raise(kwargs, match):
    logp, old, adv, mask = _args()
    with pytest.raises(ValueError, match=match):
        policy_loss(logp, old, adv, mask, **kwargs)

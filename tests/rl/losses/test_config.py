"""LossConfig (rl/losses/config.py): built once, frozen, the defaults' one home; every bad option raises a
ValueError naming it."""

from __future__ import annotations

import math

import pytest
import torch

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


def test_create_rejects_names_it_does_not_know():
    from rl.losses import LossConfig

    with pytest.raises(ValueError, match="ref_logp: a per-call tensor"):
        LossConfig.create(ref_logp=None)
    with pytest.raises(ValueError, match="entropy: a per-call tensor"):
        LossConfig.create(entropy=None)
    with pytest.raises(ValueError, match="unknown option.*clip_centre"):
        LossConfig.create(clip_centre="plain")
    with pytest.raises(ValueError, match="rmi_steps: only applies to mean='rmi'"):
        LossConfig.create(rmi_steps=3)  # even at its default value: the option would be ignored
    with pytest.raises(ValueError, match="adaptive_ps: expected three numbers"):
        LossConfig.create(mean="adaptive", adaptive_ps=(1.0, -1.0))
    with pytest.raises(ValueError, match="adaptive_signal: unknown signal"):
        LossConfig.create(mean="adaptive", adaptive_signal="entropy")
    with pytest.raises(ValueError, match=r"p: expected a 0-d tensor or one p per sequence \[B\]"):
        LossConfig.create(p=torch.zeros(2, 2))
    # Constructing the record directly validates the values the same way.
    with pytest.raises(ValueError, match="eps_low"):
        LossConfig(eps_low=2.0)


def test_config_is_frozen_and_holds_the_window():
    import dataclasses

    from rl.losses import LossConfig

    c = LossConfig.create(eps_low=0.2, eps_high=0.28, clip_c=3.0, max_log_ratio=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.level = "token"  # type: ignore[misc]
    assert c.window.lo == math.log(0.8) and c.window.hi == math.log(1.28)
    assert c.window.log_c == math.log(3.0) and c.window.cap is None
    assert LossConfig.create(log_clip_low=-0.4, log_clip_high=0.3).window.lo == -0.4
    assert LossConfig.create(eps_low=1.0).window.lo == -math.inf  # no lower clip


def test_policy_loss_defaults_are_the_config_defaults():
    import inspect

    from rl.losses import LossConfig

    sig = inspect.signature(policy_loss)
    for name in ("level", "p", "eps_low", "eps_high", "agg"):
        assert sig.parameters[name].default == getattr(LossConfig(), name), name
    # And the defaults of the options are those of a default configuration: same loss and metrics.
    logp, old, adv, mask = _args()
    a = policy_loss(logp, old, adv, mask)
    from rl.losses import loss_from_config

    b = loss_from_config(LossConfig(), logp, old, adv, mask)
    assert torch.equal(a[0], b[0]) and a[1] == b[1]

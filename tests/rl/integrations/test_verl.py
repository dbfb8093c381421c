"""The verl loss mode "power_mean" against verl's own registry and its "gspo" loss.

Two references, neither of them our code: verl's ``compute_policy_loss_gspo`` (GSPO-token,
which at p = 0 our default level "sequence-token" must reproduce in value and gradient for
every ``loss_agg_mode``, including verl's global-batch normalisation), and for p != 0 the
power-mean surrogate written below from its definition (GSPO, arXiv:2507.18071, eq. 5, with
the geometric mean replaced by the power mean).

The signature tests with a stand-in config run without verl; the rest need it.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from rl.integrations.verl import compute_policy_loss_power_mean, power_mean_options

AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


def _batch(seed: int, *, per_token_adv: bool, dtype=torch.float32):
    """B = 8 responses of T = 12 tokens, one of them empty; off-policy by a per-sequence noise scale."""
    g = torch.Generator().manual_seed(seed)
    B, T = 8, 12
    lengths = torch.tensor([12, 9, 5, 1, 0, 7, 12, 3])
    mask = torch.arange(T) < lengths[:, None]
    old = -3.0 * torch.rand(B, T, generator=g, dtype=dtype)
    scale = torch.tensor([1e-5, 0.05, 1e-5, 0.05, 0.05, 1e-5, 0.05, 1e-5], dtype=dtype)[:, None]
    new = (old + scale * torch.randn(B, T, generator=g, dtype=dtype)).requires_grad_(True)
    adv_seq = torch.randn(B, generator=g, dtype=dtype)
    if per_token_adv:
        adv = adv_seq[:, None] + 0.3 * torch.randn(B, T, generator=g, dtype=dtype)
    else:
        adv = adv_seq[:, None].expand(B, T).clone()
    return old, new, adv * mask, mask


# --------------------------------------------------------------------------- stand-in config
def _standin(p=0.0, low=3e-4, high=4e-4, **policy_loss):
    """An object with the attribute names of verl's ActorConfig that the loss reads."""
    return SimpleNamespace(
        clip_ratio=0.2,
        clip_ratio_low=low,
        clip_ratio_high=high,
        loss_agg_mode="seq-mean-token-mean",
        global_batch_info={},
        policy_loss=SimpleNamespace(loss_mode="power_mean", power_mean_p=p, **policy_loss),
    )


def _power_mean_surrogate(old, new, adv_seq, mask, p, low, high):
    """-mean_i min(s_i A_i, clip(s_i, 1-low, 1+high) A_i), s_i = (mean_t r_it^p)^(1/p) (geometric at p = 0).

    Written from the definition, in float64, directly on the ratios (fine for these small log-ratios).
    """
    losses = []
    for i in range(new.shape[0]):
        m = mask[i]
        if not m.any():
            continue
        r = torch.exp(new[i][m].double() - old[i][m].double())
        s = torch.exp(torch.log(r).mean()) if p == 0 else r.pow(p).mean().pow(1.0 / p)
        a = adv_seq[i].double()
        losses.append(-torch.minimum(s * a, torch.clamp(s, 1 - low, 1 + high) * a))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("p", [0.0, -1.0, 1.0, 2.5])
def test_standin_config_matches_the_formula(p):
    old, new, adv, mask = _batch(0, per_token_adv=False, dtype=torch.float64)
    cfg = _standin(p)
    loss, metrics = compute_policy_loss_power_mean(old, new, adv, mask, "seq-mean-token-mean", cfg, None)
    expected = _power_mean_surrogate(old, new, adv[:, 0], mask, p, 3e-4, 4e-4)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    g = torch.autograd.grad(loss, new)[0]
    new_ref = new.detach().clone().requires_grad_(True)
    g_ref = torch.autograd.grad(_power_mean_surrogate(old, new_ref, adv[:, 0], mask, p, 3e-4, 4e-4), new_ref)[0]
    torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-12)
    assert g.abs().sum() > 0  # some sequences are unclipped, so the comparison has content
    assert metrics["actor/power_mean/p"] == p
    assert 0.0 < metrics["actor/pg_clipfrac"] < 1.0
    # verl's ppo_kl is the k1 estimate of KL(old || new) over response tokens
    assert metrics["actor/ppo_kl"] == pytest.approx(float((old - new.detach())[mask].mean()), rel=1e-9)


def test_standin_reads_every_documented_key():
    cfg = _standin(
        -1.0,
        power_mean_level="sequence",
        power_mean_mean="power",
        power_mean_clip_c=3.0,
        power_mean_clip_center="bias-corrected",
        power_mean_max_log_ratio=15.0,
        power_mean_options={"check": False},
    )
    kw = power_mean_options(cfg)
    assert kw == {
        "level": "sequence", "p": -1.0, "eps_low": 3e-4, "eps_high": 4e-4, "mean": "power",
        "clip_center": "bias-corrected", "max_log_ratio": 15.0, "clip_c": 3.0, "check": False,
    }
    # defaults, and clip_ratio as the fallback of clip_ratio_low/high
    kw = power_mean_options(SimpleNamespace(clip_ratio=0.2, policy_loss=SimpleNamespace(loss_mode="power_mean")))
    assert kw["p"] == 0.0 and kw["level"] == "sequence-token" and kw["eps_low"] == kw["eps_high"] == 0.2
    assert kw["max_log_ratio"] == 10.0  # verl's gspo clamps the log-ratio at 10


def test_standin_rejects_bad_input():
    old, new, adv, mask = _batch(0, per_token_adv=False)
    with pytest.raises(ValueError, match="rollout_is_weights"):
        compute_policy_loss_power_mean(old, new, adv, mask, "token-mean", _standin(), torch.ones_like(old))
    with pytest.raises(ValueError, match="loss_agg_mode"):
        compute_policy_loss_power_mean(old, new, adv, mask, "seq-median", _standin(), None)
    with pytest.raises(ValueError, match="power_mean_p"):
        compute_policy_loss_power_mean(old, new, adv, mask, "token-mean", _standin(float("nan")), None)
    with pytest.raises(ValueError, match="level"):
        compute_policy_loss_power_mean(old, new, adv, mask, "token-mean", _standin(power_mean_level="word"), None)
    with pytest.raises(ValueError, match="response_mask"):
        compute_policy_loss_power_mean(old, new, adv, mask.float() * 0.5, "token-mean", _standin(), None)
    cfg = _standin()
    cfg.global_batch_info = {"dp_size": 2}
    with pytest.raises(ValueError, match="global_batch_size"):
        compute_policy_loss_power_mean(old, new, adv, mask, "seq-mean-token-mean", cfg, None)


# --------------------------------------------------------------------------- real verl
@pytest.fixture(scope="module")
def verl_mods():
    pytest.importorskip("verl")
    from verl.trainer.ppo import core_algos
    from verl.workers.config import ActorConfig

    import rl.integrations.verl as ours

    return core_algos, ActorConfig, ours


def _actor_config(ActorConfig, ours, *, p=0.0, agg="seq-mean-token-mean", info=None, low=3e-4, high=4e-4):
    cfg = ActorConfig(
        strategy="fsdp",
        rollout_n=4,
        ppo_micro_batch_size_per_gpu=2,
        clip_ratio_low=low,
        clip_ratio_high=high,
        loss_agg_mode=agg,
        policy_loss=ours.PowerMeanPolicyLossConfig(power_mean_p=p),
    )
    cfg.global_batch_info.update(info or {})
    return cfg


def test_registered_in_verl(verl_mods):
    core_algos, _, ours = verl_mods
    assert ours.VERL_REGISTERED
    assert core_algos.get_policy_loss_fn("power_mean") is compute_policy_loss_power_mean


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("per_token_adv", [False, True])
@pytest.mark.parametrize("global_info", [False, True])
def test_p0_equals_verl_gspo(verl_mods, agg, per_token_adv, global_info):
    core_algos, ActorConfig, ours = verl_mods
    old, new, adv, mask = _batch(1, per_token_adv=per_token_adv)
    # As verl fills it for data-parallel training: global counts larger than this micro-batch's.
    info = (
        {"dp_size": 2, "batch_num_tokens": 3 * int(mask.sum()), "global_batch_size": 20, "loss_scale_factor": 16}
        if global_info
        else {}
    )
    cfg = _actor_config(ActorConfig, ours, p=0.0, agg=agg, info=info)
    gspo = core_algos.get_policy_loss_fn("gspo")
    pm = core_algos.get_policy_loss_fn("power_mean")

    loss_v, met_v = gspo(old_log_prob=old, log_prob=new, advantages=adv, response_mask=mask,
                         loss_agg_mode=agg, config=cfg, rollout_is_weights=None)
    g_v = torch.autograd.grad(loss_v, new)[0]
    loss_o, met_o = pm(old_log_prob=old, log_prob=new, advantages=adv, response_mask=mask,
                       loss_agg_mode=agg, config=cfg, rollout_is_weights=None)
    g_o = torch.autograd.grad(loss_o, new)[0]

    # Same float32 formula, different operation order: a few ulps of the loss and of the largest gradient.
    torch.testing.assert_close(loss_o, loss_v, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g_o, g_v, rtol=1e-4, atol=1e-6 * g_v.abs().max().item())
    assert g_v.abs().max() > 0
    assert met_o["actor/pg_clipfrac"] == pytest.approx(met_v["actor/pg_clipfrac"], abs=1e-6)
    assert 0.0 < met_v["actor/pg_clipfrac"] < 1.0
    assert met_o["actor/ppo_kl"] == pytest.approx(met_v["actor/ppo_kl"], rel=1e-5, abs=1e-9)


def test_p_minus1_through_verl_registry_matches_formula(verl_mods):
    core_algos, ActorConfig, ours = verl_mods
    old, new, adv, mask = _batch(2, per_token_adv=False)
    old, new, adv = old.double(), new.detach().double().requires_grad_(True), adv.double()
    cfg = _actor_config(ActorConfig, ours, p=-1.0)
    loss, metrics = core_algos.get_policy_loss_fn("power_mean")(old, new, adv, mask, "seq-mean-token-mean", cfg, None)
    expected = _power_mean_surrogate(old, new, adv[:, 0], mask, -1.0, 3e-4, 4e-4)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    # and it is not GSPO: the harmonic ratio is below the geometric one on the sequences with spread
    gspo, _ = core_algos.get_policy_loss_fn("gspo")(old, new, adv, mask, "seq-mean-token-mean",
                                                    _actor_config(ActorConfig, ours, p=0.0), None)
    assert not math.isclose(loss.item(), gspo.item(), rel_tol=1e-6)
    assert metrics["actor/power_mean/p"] == -1.0


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("scale", [None, 7.0])
def test_aggregate_equals_verls_agg_loss(mode, scale):
    """rl.losses.aggregate claims verl's meanings: hold it to verl's own agg_loss (empty row included)."""
    pytest.importorskip("verl")
    from verl.trainer.ppo.core_algos import agg_loss

    from rl.losses import aggregate

    g = torch.Generator().manual_seed(3)
    loss_mat = torch.randn(5, 9, generator=g, dtype=torch.float64)
    mask = torch.rand(5, 9, generator=g) > 0.4
    mask[2] = False
    ours = aggregate(loss_mat, mask, mode, loss_scale_factor=scale)
    theirs = agg_loss(loss_mat, mask.to(loss_mat.dtype), mode, loss_scale_factor=scale)
    # verl divides token sums by (n_i + 1e-8): a relative shift below 1e-8 for n_i >= 1.
    assert ours.item() == pytest.approx(theirs.item(), rel=2e-8)

"""The metrics of a loss call (rl/losses/metrics.py) against hand values, and their one read-back."""

from __future__ import annotations

import math

import pytest
import torch

from rl.losses import policy_loss
from tests.rl.losses.loss_helpers import F64, NAN, power_mean_by_hand, t64


def test_metrics_ess_and_kl_to_old():
    l, mask = t64([[0.0, math.log(3.0)], [0.2]])
    m_p0 = policy_loss(l, torch.zeros_like(l), torch.ones(2, dtype=F64), mask, p=0.0)[1]
    assert m_p0["token_weight_ess"] == pytest.approx(1.0)  # geometric mean: uniform weights
    m_p1 = policy_loss(l, torch.zeros_like(l), torch.ones(2, dtype=F64), mask, p=1.0)[1]
    # p = 1, row 0: weights (1/4, 3/4) -> 1 / (2 (1/16 + 9/16)) = 0.8; row 1: 1.
    assert m_p1["token_weight_ess"] == pytest.approx((0.8 + 1.0) / 2)
    k3 = [math.exp(x) - 1 - x for x in (0.0, math.log(3.0), 0.2)]
    assert m_p1["approx_kl_old"] == pytest.approx(sum(k3) / 3)
    assert m_p1["approx_kl_old_k1"] == pytest.approx(-(math.log(3.0) + 0.2) / 3)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_k3_caps_the_log_ratio_only_where_a_token_exceeds_the_cap_and_keeps_small_kl_accurate(dtype):
    """approx_kl_old is the token mean of expm1(min(l, cap)) - min(l, cap), by hand in float64:
    with a token above the cap (the uncapped total, e^25 or inf, is recomputed with the clamp),
    without one (no clamp), at small l (where exp(l) - 1 - l in float32 would be off by 100%), on
    a cap so small that ordinary tokens reach it, and without a cap."""
    def k3(x, cap):
        x = min(x, cap) if cap is not None else x
        return math.expm1(x) - x

    small = [1e-4, -2e-4, 3e-4, -1e-4]
    for rows, cap in (([[0.5, 25.0], [-3.0]], 20.0), ([[0.5, 95.0], [-3.0]], 20.0), ([[0.5, 19.0], [-3.0]], 20.0),
                      ([small], 20.0), ([[0.5, 0.3], [-0.2]], 0.05), ([[0.5, 25.0]], None)):
        l, mask = t64(rows, dtype=dtype)
        opts = {} if cap == 20.0 else {"max_log_ratio": cap}
        _, m = policy_loss(l, torch.zeros_like(l), torch.ones(len(rows), dtype=dtype), mask, p=0.0, **opts)
        vals = [float(torch.tensor(v, dtype=dtype)) for r in rows for v in r]  # the inputs as rounded
        want = sum(k3(v, cap) for v in vals) / len(vals)
        # each token's k3 carries the rounding of expm1(l) (eps |l| near 0) and of the difference
        # (eps k3): the mean is within 2 eps mean|l| + a relative 1e-6 (float32) or 1e-12 (float64)
        eps = torch.finfo(dtype).eps / 2
        tol = 2 * eps * sum(abs(min(v, cap or v)) for v in vals) / len(vals) + (1e-6 if dtype == torch.float32 else 1e-12) * want
        assert abs(m["approx_kl_old"] - want) <= tol, (rows, cap, m["approx_kl_old"], want)


def test_sequence_token_clip_metrics_per_sequence_or_per_token_advantages_agree():
    l, mask = t64([[0.5, 0.4, 0.3], [-0.5, -0.4], [0.01]])
    adv = torch.tensor([1.0, -1.0, 1.0], dtype=F64)
    _, m1 = policy_loss(l, torch.zeros_like(l), adv, mask, level="sequence-token", eps_low=0.1)
    _, m2 = policy_loss(l, torch.zeros_like(l), adv.unsqueeze(-1).expand_as(l).contiguous(), mask,
                        level="sequence-token", eps_low=0.1)
    # Token fractions: 3 of 6 tokens belong to the high-clipped sequence, 2 of 6 to the low-clipped one.
    for m in (m1, m2):
        assert m["clip_frac_high"] == pytest.approx(3 / 6) and m["clip_frac_low"] == pytest.approx(2 / 6)


@pytest.mark.parametrize("level, p", [("token", 0.0), ("sequence", -1.0), ("sequence-token", 0.0), ("gmpo", 1.0)])
def test_metrics_of_a_batch_without_tokens_are_nan_except_counts_and_clips_that_are_off(level, p):
    l = torch.full((3, 4), NAN, dtype=F64)
    mask = torch.zeros(3, 4, dtype=torch.bool)
    _, m = policy_loss(l, l, torch.full((3,), NAN, dtype=F64), mask, level=level, p=p, clip_c=3.0, max_log_ratio=None)
    assert m["loss"] == 0.0 and m["pg_loss"] == 0.0 and m["n_seqs"] == 0.0 and m["n_tokens"] == 0.0
    assert m["clip_frac_cap"] == 0.0  # the cap is off
    rest = set(m) - {"loss", "pg_loss", "n_seqs", "n_tokens", "clip_frac_cap"}
    assert all(math.isnan(m[k]) for k in rest), {k: m[k] for k in rest}


def test_exponent_and_ratio_statistics_over_the_sequences_with_tokens():
    rows = [[0.1, -0.3], [0.4], [], [-0.2, 0.0, 0.1]]
    l, mask = t64(rows)
    adv = torch.tensor([1.0, -1.0, 1.0, 0.5], dtype=F64)
    p = torch.tensor([-1.0, 2.0, 100.0, 0.5], dtype=F64)  # the empty row's exponent must not count
    _, m = policy_loss(l, torch.zeros_like(l), adv, mask, p=p, eps_low=1.0, eps_high=math.inf)
    assert m["p"] == pytest.approx((-1.0 + 2.0 + 0.5) / 3, rel=1e-12)
    assert (m["p_min"], m["p_max"]) == (-1.0, 2.0)
    s = [power_mean_by_hand(r, float(pi)) for r, pi in zip(rows, p) if r]
    assert m["seq_ratio_mean"] == pytest.approx(sum(s) / 3, rel=1e-12)
    assert (m["seq_ratio_min"], m["seq_ratio_max"]) == (pytest.approx(min(s), rel=1e-12), pytest.approx(max(s), rel=1e-12))
    # ESS: 1 / (n sum pi^2) with pi = softmax(p l) per row.
    ess = []
    for r, pi in zip(rows, p):
        if r:
            w = torch.softmax(float(pi) * torch.tensor(r, dtype=F64), 0)
            ess.append(1.0 / (len(r) * float((w * w).sum())))
    assert m["token_weight_ess"] == pytest.approx(sum(ess) / 3, rel=1e-12)


def test_ratio_statistics_of_far_off_policy_float32_sequences_do_not_overflow():
    # e^100 overflows float32; the statistics are reduced in log space and exponentiated in float64.
    l = torch.tensor([[100.0, 100.0], [-50.0, -50.0]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    _, m = policy_loss(l, torch.zeros_like(l), torch.tensor([1.0, 1.0]), mask)
    # exp(v) is off by the absolute error of the float32 log v: a few ulps of |v| = 100.
    rel = 4 * 100.0 * 2**-24
    assert m["seq_ratio_max"] == pytest.approx(math.exp(100.0), rel=rel)
    assert m["seq_ratio_min"] == pytest.approx(math.exp(-50.0), rel=rel)
    assert m["seq_ratio_mean"] == pytest.approx((math.exp(100.0) + math.exp(-50.0)) / 2, rel=rel)


def test_read_back_sums_the_parts_of_a_metric_and_reads_once(monkeypatch):
    from rl.losses.metrics import Metrics, read_back

    values = torch.tensor([0.25, 0.5, 0.125, 2.0, 8.0, 0.0, math.log(3.0), math.log(2.0), math.log(4.0)], dtype=F64)
    names = ("clip_frac_low", "clip_frac_low", "clip_frac_high", "n_seqs", "n_tokens", "clip_frac_dual",
             "seq_ratio_mean", "seq_ratio_min", "seq_ratio_max")
    calls = []
    orig = torch.Tensor.numpy
    monkeypatch.setattr(torch.Tensor, "numpy", lambda self, **k: calls.append(1) or orig(self, **k))
    got = read_back([], Metrics(names=names, values=[values[:4], values[4:]], known={"clip_frac_cap": 0.0, "p": 1.5}))
    assert len(calls) == 1
    assert got["clip_frac_low"] == 0.75 and got["clip_frac"] == 0.75 + 0.125 + 0.0
    assert got["seq_ratio_mean"] == pytest.approx(3.0, rel=1e-15) and got["p"] == 1.5
    assert list(got)[:3] == ["clip_frac", "clip_frac_low", "clip_frac_high"]  # the reported order

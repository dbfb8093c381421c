"""The clip in log space (rl/losses/clipping.py): the PPO term with dual clip and cap by hand, the flags, the
window and its bias-corrected centre."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rl.losses import policy_loss, power_log_ratio
from rl.losses.clipping import ClipFlags, ClipShift, ClipWindow, clip_log_ratio, clipped_sum, window_shift
from tests.rl.losses.loss_helpers import F64, power_mean_by_hand, ppo_term, t64


def test_bias_corrected_window_shifts_by_p_var_over_2():
    # Harmonic ratio of a wide sequence falls about Var/2 below its geometric one (e^0 = 1 here).
    row = [0.3, -0.3]
    l, mask = t64([row])
    adv = torch.tensor([-1.0], dtype=F64)
    h = power_mean_by_hand(row, -1.0)
    var = 0.09
    assert h < 0.97  # H = 1/cosh(0.3) = 0.957, below the plain window [0.97, 1.03] -> clipped low for A < 0
    lp = l.clone().requires_grad_()
    plain, m_plain = policy_loss(lp, torch.zeros_like(l), adv, mask, p=-1.0, eps_low=0.03)
    assert m_plain["clip_frac_low"] == 1.0 and plain.item() == pytest.approx(0.97, rel=1e-12)
    lp = l.clone().requires_grad_()
    corr, m_corr = policy_loss(lp, torch.zeros_like(l), adv, mask, p=-1.0, eps_low=0.03, clip_center="bias-corrected")
    # Window centred on exp(-Var/2): [0.97, 1.03] * exp(-0.045); H lies inside it.
    assert 0.97 * math.exp(-var / 2) < h < 1.03 * math.exp(-var / 2)
    assert m_corr["clip_frac_low"] == 0.0 and corr.item() == pytest.approx(h, rel=1e-12)
    corr.backward()
    assert (lp.grad[mask] != 0).all()
    # p = 0: the shift is 0 and the window is the plain one.
    a0, _ = policy_loss(l, torch.zeros_like(l), adv, mask, p=0.0, eps_low=0.03, clip_center="bias-corrected")
    b0, _ = policy_loss(l, torch.zeros_like(l), adv, mask, p=0.0, eps_low=0.03)
    assert a0.item() == b0.item()


@given(
    rows=st.lists(st.lists(st.floats(-0.05, 0.05), min_size=2, max_size=6), min_size=1, max_size=4),
    p=st.sampled_from([-2.0, -1.0, 1.0, 2.0]),
)
def test_bias_corrected_centre_tracks_the_small_spread_expansion(rows, p):
    """For small spread, log s_p - p Var/2 is the geometric log-ratio to O(spread^3)."""
    l, mask = t64(rows)
    log_s, _ = power_log_ratio(l, mask, p)
    for i, r in enumerate(rows):
        mu = sum(r) / len(r)
        var = sum((x - mu) ** 2 for x in r) / len(r)
        spread = max(r) - min(r)
        assert abs(log_s[i].item() - p * var / 2 - mu) <= abs(p) ** 2 * spread**3 / 6 + 1e-15


def ppo_effective_ratio(r: float, a: float, lo: float, hi: float, c: float | None, cap: float | None) -> float:
    """The ratio inside -A r_eff that equals the PPO term with dual clip, by hand (verl's form), then the cap."""
    if a == 0:
        r_eff = min(r, hi)  # the convention for A = 0 (its loss is 0 either way)
    else:
        r_eff = ppo_term(r, a, lo, hi, c) / -a
    return r_eff if cap is None else min(r_eff, math.exp(cap))


@pytest.mark.parametrize("log_c, cap", [(None, None), (math.log(3.0), None), (None, 1.5), (math.log(3.0), 0.9),
                                        (math.log(2.0), 20.0)])
def test_clip_log_ratio_is_the_ppo_term_with_its_flags_and_zero_gradient_where_clipped(log_c, cap):
    xs = [-2.0, -0.3, -0.1, 0.0, 0.05, 0.25, 0.8, 1.2, 3.0]
    advs = [-1.5, 0.0, 2.0]
    lo, hi = math.log(0.8), math.log(1.2)
    x = torch.tensor([[v for v in xs] for _ in advs], dtype=F64, requires_grad=True)
    a = torch.tensor(advs, dtype=F64).unsqueeze(-1)
    x_eff, flags = clip_log_ratio(x, a, lo=lo, hi=hi, log_c=log_c, cap=cap)
    x_eff.sum().backward()
    c = None if log_c is None else math.exp(log_c)
    for i, av in enumerate(advs):
        for j, xv in enumerate(xs):
            r_eff = ppo_effective_ratio(math.exp(xv), av, 0.8, 1.2, c, cap)
            assert math.exp(x_eff[i, j].item()) == pytest.approx(r_eff, rel=1e-12)
            clipped = abs(r_eff - math.exp(xv)) > 1e-12 * math.exp(xv)
            assert x.grad[i, j].item() == (0.0 if clipped else 1.0), (av, xv)
            side = log_c if av < 0 else hi  # the bound the cap competes with
            expect = {"low": av < 0 and xv < lo, "high": av > 0 and xv > hi,
                      "dual": log_c is not None and av < 0 and xv > log_c,
                      "cap": cap is not None and xv > cap and (side is None or side > cap)}
            for name, want in expect.items():
                f = getattr(flags, name)
                assert (False if f is None else bool(f[i, j])) == want, (name, av, xv)


def test_clip_bounds_keep_a_float64_batch_in_float64():
    # log(0.8) rounded to float32 is 4e-9 away: a float64 log-ratio just inside the window stays unclipped.
    lo = math.log(0.8)
    x = torch.tensor([lo + 1e-12, lo - 1e-12], dtype=F64)
    x_eff, flags = clip_log_ratio(x, torch.tensor([-1.0, -1.0], dtype=F64), lo=lo, hi=0.1)
    assert x_eff[0].item() == lo + 1e-12 and x_eff[1].item() == lo
    assert flags.low.tolist() == [False, True]


def test_clip_window_from_eps_and_its_bad_values():
    w = ClipWindow.create(0.2, None)
    assert (w.lo, w.hi, w.log_c, w.cap) == (math.log(0.8), math.log1p(0.2), None, None)
    w = ClipWindow.create(0.2, math.inf, clip_c=math.inf, max_log_ratio=20)
    assert w.hi == math.inf and w.log_c is None and w.cap == 20.0  # an infinite dual clip is off
    for kwargs, match in (({"eps_low": 1.5, "eps_high": None}, "eps_low"), ({"eps_low": 0.2, "eps_high": math.nan}, "eps_high"),
                          ({"eps_low": 0.2, "eps_high": None, "clip_c": 0.5}, "clip_c"),
                          ({"eps_low": 0.2, "eps_high": None, "log_clip_high": -0.1}, "log_clip_high"),
                          ({"eps_low": True, "eps_high": None}, "eps_low: expected a real number")):
        with pytest.raises(ValueError, match=match):
            ClipWindow.create(**kwargs)


def test_window_shift_is_p_times_the_population_variance_over_2():
    rows = [[0.3, -0.1, 0.4], [0.2], [-1.0, 1.0]]
    l, mask = t64(rows, pad=0.0)
    n = mask.sum(-1).to(F64)
    for p in (-1.0, 2.0, torch.tensor([1.0, -1.0, 0.5], dtype=F64)):
        shift = window_shift(l, mask, n, p)
        for i, r in enumerate(rows):
            mu = sum(r) / len(r)
            var = sum((v - mu) ** 2 for v in r) / len(r)
            pi = float(p[i]) if isinstance(p, torch.Tensor) else p
            assert shift[i].item() == pytest.approx(pi * var / 2, rel=1e-12, abs=1e-300)
    # p = inf with a constant row: inf * 0 is not finite, so the shift falls back to 0.
    assert window_shift(l, mask, n, math.inf)[1].item() == 0.0


@pytest.mark.parametrize("log_c, cap", [(None, None), (math.log(3.0), None), (None, 1.5), (math.log(3.0), 0.9),
                                        (None, 0.1)])
@pytest.mark.parametrize("window", ["float", "per-row"])
def test_clipped_sum_is_the_weighted_ppo_term_by_hand_with_its_gradient_and_flags(log_c, cap, window):
    """clipped_sum against the PPO term with dual clip and cap by hand: value, gradient (0 where a
    clip acted, coef r where not), and its flags (ClipShift fractions or ClipFlags) against the
    flags by hand."""
    xs = [-2.0, -0.3, -0.1, 0.0, 0.05, 0.25, 0.8, 1.2, 3.0]
    advs = [-1.5, 0.0, 2.0]
    x_rows = [xv for _ in advs for xv in xs]
    a_rows = [av for av in advs for _ in xs]
    coef = torch.tensor([-0.1 * (1 + i % 4) * a for i, a in enumerate(a_rows)], dtype=F64)
    lo0, hi0 = math.log(0.8), math.log(1.2)
    shift = [0.01 * ((i % 5) - 2) for i in range(len(x_rows))] if window == "per-row" else [0.0] * len(x_rows)
    lo = torch.tensor([lo0 + s for s in shift], dtype=F64) if window == "per-row" else lo0
    hi = torch.tensor([hi0 + s for s in shift], dtype=F64) if window == "per-row" else hi0
    x = torch.tensor(x_rows, dtype=F64, requires_grad=True)
    a = torch.tensor(a_rows, dtype=F64)
    total, flags = clipped_sum(x, a, coef, lo=lo, hi=hi, log_c=log_c, cap=cap)
    total.backward()
    c = None if log_c is None else math.exp(log_c)
    want_total, want_flags = 0.0, {"low": 0, "high": 0, "dual": 0, "cap": 0}
    for i, (xv, av) in enumerate(zip(x_rows, a_rows, strict=True)):
        l_i, h_i = math.exp(lo0 + shift[i]), math.exp(hi0 + shift[i])
        r_eff = ppo_effective_ratio(math.exp(xv), av, l_i, h_i, c, cap)
        want_total += coef[i].item() * r_eff
        clipped = abs(r_eff - math.exp(xv)) > 1e-12 * math.exp(xv)
        want_grad = 0.0 if clipped else coef[i].item() * math.exp(xv)
        assert x.grad[i].item() == pytest.approx(want_grad, rel=1e-12, abs=1e-300), (av, xv)
        xl = max(xv, lo0 + shift[i]) if av < 0 else xv
        side = log_c if av < 0 else hi0 + shift[i]
        want_flags["low"] += av < 0 and xv < lo0 + shift[i]
        want_flags["high"] += av > 0 and xv > hi0 + shift[i]
        want_flags["dual"] += log_c is not None and av < 0 and xl > log_c
        want_flags["cap"] += cap is not None and xl > cap and (side is None or side > cap)
    assert total.item() == pytest.approx(want_total, rel=1e-12)
    n = len(x_rows)
    if isinstance(flags, ClipShift):
        assert window == "float" and log_c is None and (cap is None or cap >= hi0)
        got = ClipShift.fractions(flags.delta.numpy(), flags.adv.numpy(), None, flags.names())
        for name in ("low", "high", "cap"):
            assert got.get(f"clip_frac_{name}", 0.0) == want_flags[name] / n, name
        assert want_flags["dual"] == 0
    else:
        assert isinstance(flags, ClipFlags)
        for name, want in want_flags.items():
            f = getattr(flags, name)
            assert (0 if f is None else int(f.sum())) == want, name


def test_clipped_sum_shift_flags_weight_by_tokens_and_leave_nan_unflagged():
    delta = np.array([0.1, -0.2, -0.3, 0.0, np.nan, -1e-300])
    adv = np.array([-1.0, 1.0, -1.0, 1.0, -1.0, 0.0])  # the last: lowered with A = 0, no flag's clip
    n = np.array([3.0, 1.0, 2.0, 4.0, 5.0, 1.0])
    names = ("clip_frac_low", "clip_frac_high", "clip_frac_cap")
    got = ClipShift.fractions(delta, adv, n, names)
    assert got == {"clip_frac_low": 3 / 16, "clip_frac_high": 1 / 16, "clip_frac_cap": 2 / 16}
    assert ClipShift.fractions(delta, adv, None, names) == {"clip_frac_low": 1 / 6, "clip_frac_high": 1 / 6,
                                                            "clip_frac_cap": 1 / 6}
    assert ClipShift.fractions(delta, adv, np.ones(6), names) == ClipShift.fractions(delta, adv, None, names)


def test_clipped_sum_double_backward():
    """create_graph: the gradient of clipped_sum is itself differentiable (float64 gradgradcheck),
    with entries on both sides of the window and on its bounds' far side."""
    g = torch.Generator().manual_seed(3)
    x = (0.4 * torch.randn(8, generator=g, dtype=F64)).requires_grad_()
    a = torch.tensor([1.0, -1.0] * 4, dtype=F64)
    coef = torch.linspace(-0.3, 0.2, 8, dtype=F64)

    def f(v):
        return clipped_sum(v, a, coef, lo=math.log(0.8), hi=math.log(1.2), cap=1.0, flags=False)[0]

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
    # gradgradcheck differentiates the create_graph gradient, so that gradient must be the plain one,
    # and its derivative is diag(coef r) on the unclipped entries (0 on the clipped), by hand
    (g_plain,) = torch.autograd.grad(f(x), x)
    (g_graph,) = torch.autograd.grad(f(x), x, create_graph=True)
    assert torch.allclose(g_graph, g_plain, rtol=1e-14, atol=0)
    (h,) = torch.autograd.grad(g_graph.sum(), x)
    xd = x.detach()
    kept = (a >= 0) & (xd <= math.log(1.2)) | (a < 0) & (xd >= math.log(0.8)) & (xd <= 1.0)
    assert 0 < int(kept.sum()) < 8
    assert torch.allclose(h, torch.where(kept, coef * xd.exp(), 0.0), rtol=1e-14, atol=0)

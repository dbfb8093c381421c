"""PMPO's p per trajectory (rl/losses/pmpo.py): the rule against its closed form for two tokens, against
scipy's root finder, its limits, and ``policy_loss(mean="pmpo")`` against the power loss at the chosen p.

References are independent of the implementation: the two-token gap G(p) = (1 - x)^2 / (2 (1 + x^2))
with x = e^{p (b - a)} solved as a quadratic in x; scipy.optimize.brentq on the textbook ESS
(sum e^{pl})^2 / (n sum e^{2pl}) in float64; the small-spread limit p = sqrt(1 - c).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from rl.losses import policy_loss
from rl.losses.pmpo import BISECTIONS, pmpo_clip_fraction, pmpo_ess_gap, pmpo_p
from tests.rl.losses.loss_helpers import F64, t64

LO, HI = math.log(0.8), math.log(1.2)
# The bisection returns the lower end of a bracket of width 2^-BISECTIONS around the root; a few
# float64 ulps of slack on top for the comparisons' own rounding.
P_TOL = 2.0**-BISECTIONS + 1e-12


def ess_by_hand(row: list[float], p: float) -> float:
    """(sum e^{p l})^2 / (n sum e^{2 p l}), the textbook normalised ESS, in float64."""
    e = np.exp(p * np.asarray(row, dtype=np.float64))
    return float(e.sum() ** 2 / (len(row) * (e**2).sum()))


def clip_fraction_by_hand(row: list[float], a: float) -> float:
    return sum((a > 0 and x > HI) or (a < 0 and x < LO) for x in row) / len(row)


def p_by_brentq(row: list[float], a: float) -> float:
    """max{p in [0, 1]: 1 - E(p) <= (1 - c) (1 - E(1))}, by scipy's root finder on the textbook ESS."""
    c = clip_fraction_by_hand(row, a)
    target = (1 - c) * (1 - ess_by_hand(row, 1.0))
    f = lambda p: (1 - ess_by_hand(row, p)) - target  # noqa: E731
    if f(1.0) <= 0:
        return 1.0
    return brentq(f, 0.0, 1.0, xtol=1e-15, rtol=1e-15)


def test_two_token_rows_match_the_closed_form():
    # Row 0: 0.5 > log 1.2 is clipped for A > 0, -0.5 is not: c = 1/2. Row 1: nothing clipped (p = 1).
    # Row 2: both tokens above the window with A > 0 (c = 1, p = 0). Row 3: A < 0 clips -0.9 only.
    rows, adv = [[0.5, -0.5], [0.1, -0.1], [0.5, 0.4], [-0.9, 0.3]], [1.0, 1.0, 2.0, -1.0]
    l, mask = t64(rows)
    p, c = pmpo_p(l, mask, torch.tensor(adv, dtype=F64), LO, HI)
    assert c.tolist() == [0.5, 0.0, 1.0, 0.5]
    for i in (0, 3):
        a, b = sorted(rows[i])
        d = b - a
        gap = lambda x: (1 - x) ** 2 / (2 * (1 + x * x))  # noqa: E731  1 - E for ratios (1, x)
        g = (1 - c[i].item()) * gap(math.exp(d))
        # (1 - x)^2 = 2 g (1 + x^2)  <=>  (1 - 2g) x^2 - 2 x + (1 - 2g) = 0, the root x > 1
        k = 1 - 2 * g
        want = math.log((1 + math.sqrt(1 - k * k)) / k) / d
        assert 0 < want < 1
        assert 0.0 <= want - p[i].item() <= P_TOL
    assert p[1].item() == 1.0 and p[2].item() == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_matches_scipy_root_finder_on_random_rows(seed):
    g = np.random.default_rng(seed)
    rows = [list(g.normal(0.0, s, size=n)) for n, s in [(3, 0.4), (9, 0.2), (16, 0.6), (30, 1.0), (5, 0.05)]]
    adv = [1.0, -1.0, 0.5, -2.0, 1.0]
    l, mask = t64(rows)
    p, c = pmpo_p(l, mask, torch.tensor(adv, dtype=F64), LO, HI)
    for i, (row, a) in enumerate(zip(rows, adv, strict=True)):
        assert c[i].item() == clip_fraction_by_hand(row, a)
        assert abs(p[i].item() - p_by_brentq(row, a)) <= P_TOL
    assert 0 < (c > 0).sum() < len(rows)  # the draw exercises both branches


def test_ess_gap_is_the_textbook_ess_and_is_accurate_for_tiny_p():
    row = [0.3, -0.2, 0.05, 0.7]
    l, mask = t64([row])
    for p in (1.0, 0.5, 0.1):
        assert pmpo_ess_gap(l, mask, torch.tensor([p], dtype=F64)).item() == pytest.approx(1 - ess_by_hand(row, p),
                                                                                           rel=1e-12)
    # 1 - E(p) = p^2 Var(l) + O(p^3): at p = 1e-6 the textbook form has cancelled away (~1e-12
    # against float64's 1e-16 resolution of E) while the expm1 form keeps the leading term exactly.
    var = float(np.var(row))
    got = pmpo_ess_gap(l, mask, torch.tensor([1e-6], dtype=F64)).item()
    assert got == pytest.approx(1e-12 * var, rel=1e-5)


def test_small_spread_limit_is_sqrt_of_one_minus_c():
    # G(p) = p^2 sigma^2 (1 + O(p sigma)): matching (1 - c) G(1) gives p = sqrt(1 - c) (1 + O(sigma)).
    sigma = 1e-3
    z = torch.linspace(-1.5, 1.5, 12, dtype=F64)
    l = sigma * z.expand(1, -1).clone()
    mask = torch.ones_like(l, dtype=torch.bool)
    # Window edges just below the k-th largest log-ratio clip k of the 12 tokens (A > 0).
    for k in (0, 3, 6, 9):
        hi = 2 * sigma if k == 0 else float(z[12 - k]) * sigma - 1e-12
        p, c = pmpo_p(l[:1], mask[:1], torch.ones(1, dtype=F64), -1.0, hi)
        assert c.item() == k / 12
        assert p.item() == pytest.approx(math.sqrt(1 - c.item()), abs=5 * sigma)


def test_p_falls_as_more_tokens_clip():
    row = [0.05 * k for k in range(-5, 15)]
    l, mask = t64([row] * 6)
    his = torch.tensor([1.0, 0.6, 0.45, 0.3, 0.15, 0.0])  # narrower windows clip more tokens of A > 0
    ps, cs = [], []
    for hi in his.tolist():
        p, c = pmpo_p(l[:1], mask[:1], torch.ones(1, dtype=F64), -1.0, hi)
        ps.append(p.item())
        cs.append(c.item())
    assert cs == sorted(cs) and cs[0] == 0.0 and cs[-1] > 0.6
    assert ps == sorted(ps, reverse=True) and ps[0] == 1.0 and ps[-1] < 0.7


def test_constant_and_empty_rows_get_p_one():
    l, mask = t64([[0.4, 0.4, 0.4], [0.2]])
    l = torch.cat([l, torch.full((1, 3), math.nan, dtype=F64)])
    mask = torch.cat([mask, torch.zeros(1, 3, dtype=torch.bool)])
    p, c = pmpo_p(l, mask, torch.tensor([1.0, 1.0, 1.0], dtype=F64), LO, HI)
    assert c.tolist() == [1.0, 1.0, 0.0]  # every token of rows 0 and 1 lies above log 1.2
    assert p.tolist() == [1.0, 1.0, 1.0]  # all means coincide on a constant row; nothing to weigh
    assert pmpo_clip_fraction(l[:, :0], mask[:, :0], torch.ones(3, dtype=F64), LO, HI).tolist() == [0.0] * 3
    p0, _ = pmpo_p(l[:, :0], mask[:, :0], torch.ones(3, dtype=F64), LO, HI)
    assert p0.tolist() == [1.0] * 3


def _batch(seed: int, scale: float = 0.3, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    B, T = 7, 12
    old = -torch.rand(B, T, generator=g, dtype=dtype) * 3
    logp = old + scale * torch.randn(B, T, generator=g, dtype=dtype)
    lens = torch.tensor([12, 3, 7, 1, 12, 9, 5])
    mask = torch.arange(T)[None] < lens[:, None]
    logp, old = logp.masked_fill(~mask, math.nan), old.masked_fill(~mask, math.nan)  # padding must not leak
    adv = torch.randn(B, generator=g, dtype=dtype)
    return logp, old, adv, mask


@pytest.mark.parametrize("level", ["sequence", "sequence-token", "gmpo"])
def test_policy_loss_is_the_power_loss_at_the_chosen_p(level):
    logp, old, adv, mask = _batch(0)
    lp = logp.clone().requires_grad_()
    loss, m = policy_loss(lp, old, adv, mask, level=level, mean="pmpo")
    loss.backward()
    l = torch.where(mask, logp - old, 0.0)
    # GMPO clips the token log-ratios first: the mean (and its ESS) sees the clipped ones, the clip
    # fraction the unclipped ones.
    a = adv.unsqueeze(-1)
    lm = torch.where(a > 0, l.clamp(max=HI), torch.where(a < 0, l.clamp(min=LO), l)) if level == "gmpo" else l
    p, c = pmpo_p(lm, mask, adv, LO, HI, clip_l=l)
    assert 0 < (c > 0).sum() < mask.shape[0] and (p < 1).any()
    lp2 = logp.clone().requires_grad_()
    fixed, _ = policy_loss(lp2, old, adv, mask, level=level, p=p)
    fixed.backward()
    assert loss.item() == pytest.approx(fixed.item(), rel=1e-14)
    torch.testing.assert_close(lp.grad, lp2.grad, rtol=1e-13, atol=1e-15)
    assert torch.equal(lp.grad[~mask], torch.zeros_like(lp.grad[~mask]))
    # The metrics report the per-sequence p, and the weights' ESS is the rule's target.
    assert m["p"] == pytest.approx(p.mean().item(), rel=1e-14)
    assert (m["p_min"], m["p_max"]) == (p.min().item(), p.max().item())
    gap1 = pmpo_ess_gap(lm, mask, torch.ones_like(p))
    target_ess = 1 - (1 - c) * gap1
    # d E / d p is at most ~2 p Var(l) ~ 0.2 here: the bisection's 2^-24 in p is 1e-8 in ESS.
    assert m["token_weight_ess"] == pytest.approx(target_ess.mean().item(), abs=1e-7)


def test_no_clipping_is_the_arithmetic_mean_and_full_clipping_the_geometric():
    logp, old, adv, mask = _batch(1, scale=0.05)
    wide = dict(eps_low=0.9, eps_high=10.0)  # nothing clips: c = 0, p = 1 on every row
    loss, m = policy_loss(logp, old, adv, mask, mean="pmpo", **wide)
    want, _ = policy_loss(logp, old, adv, mask, p=1.0, **wide)
    assert loss.item() == pytest.approx(want.item(), rel=1e-14) and m["p_min"] == m["p_max"] == 1.0
    # Every token outside a zero-width window on its advantage's side: c = 1, p = 0 (GSPO's mean),
    # except on the one-token row (3), where every mean coincides and the rule keeps p = 1.
    zero = dict(log_clip_low=0.0, log_clip_high=0.0)
    shifted = torch.where(adv.unsqueeze(-1) > 0, logp + 1.0, logp - 1.0)
    loss, m = policy_loss(shifted, old, adv, mask, mean="pmpo", **zero)
    assert (m["p_min"], m["p_max"], m["p"]) == (0.0, 1.0, pytest.approx(1 / 7, rel=1e-15))
    p = torch.zeros(7, dtype=F64)
    p[3] = 1.0
    want, _ = policy_loss(shifted, old, adv, mask, p=p, **zero)
    assert loss.item() == want.item()


def test_float32_batch_chooses_p_as_float64_does():
    logp, old, adv, mask = _batch(2)
    _, m64 = policy_loss(logp, old, adv, mask, mean="pmpo")
    _, m32 = policy_loss(logp.float(), old.float(), adv.float(), mask, mean="pmpo")
    # float32 log-ratios differ by ~1e-7 from the float64 ones; p moves by that over dG/dp ~ 2 Var(l).
    assert m32["p"] == pytest.approx(m64["p"], abs=1e-5)
    assert m32["p_min"] == pytest.approx(m64["p_min"], abs=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(p=1.0), "pmpo.*leave p at 0"),
    (dict(level="token"), "no sequence mean"),
    (dict(clip_center="bias-corrected"), "bias-corrected"),
    (dict(rmi_steps=3), "only applies to mean='rmi'"),
])
def test_bad_options_raise(kwargs, match):
    logp, old, adv, mask = _batch(3)
    with pytest.raises(ValueError, match=match):
        policy_loss(logp, old, adv, mask, mean="pmpo", **kwargs)

"""Theorems about the policy losses (proofs/theorems_losses.py): T9, T10 and T13 checked against
rl.losses.policy_loss itself (the loss contract of the brief), and the checks bite."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from proofs import BY_ID, DEFAULT_IMPL, theorems_losses
from proofs.forms import dps_for, mp_eval

from rl.losses import policy_loss

from tests.proofs.proofs_helpers import assert_caught, assert_key_steps_verified

NO_CLIP = dict(eps_low=1.0, eps_high=math.inf, max_log_ratio=None)


def _seq(seed: int, T: int = 5, sigma: float = 0.4):
    g = np.random.default_rng(seed)
    logp = g.uniform(-4, -0.1, T)
    old = logp + g.uniform(-sigma, sigma, T)
    return logp, old


@pytest.mark.parametrize("p", [-2.0, -1.0, -0.5, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_T9_sequence_loss_gradient(p, seed, derivations):
    logp, old = _seq(seed)
    T = len(logp)
    lp = torch.tensor(logp[None], dtype=torch.float64, requires_grad=True)
    loss, _ = policy_loss(lp, torch.tensor(old[None]), torch.tensor([1.0], dtype=torch.float64),
                          torch.ones(1, T, dtype=torch.bool), level="sequence", p=p, **NO_CLIP)
    (g,) = torch.autograd.grad(loss, lp)
    u = logp - old
    ref = np.array([float(v) for v in mp_eval(derivations["T9-seq-gradient"].forms["ds"](T), [*u, *np.full(T, 1 / T), p],
                                               dps_for(p))])
    # loss = -A s for one sequence: gradient -ds/dlog pi
    np.testing.assert_allclose(-g.numpy()[0], ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("level,p", [("token", 0.0), ("sequence", -1.0), ("sequence", 0.0), ("sequence", 1.0),
                                     ("sequence", 3.0), ("sequence-token", -1.0)])
def test_T10_on_policy_levels_agree(level, p):
    logp, _ = _seq(3, T=6)
    T = len(logp)
    mask = torch.tensor([[True] * T, [True] * (T - 2) + [False] * 2])
    lp = torch.tensor(np.stack([logp, logp]), dtype=torch.float64, requires_grad=True)
    A = torch.tensor([0.7, -1.3], dtype=torch.float64)
    loss, _ = policy_loss(lp, lp.detach().clone(), A, mask, level=level, p=p)
    (g,) = torch.autograd.grad(loss, lp)
    # seq-mean-token-mean: -A_b / (B * T_b) on each valid token, 0 on padding
    lens = mask.sum(1, keepdim=True).double()
    expect = torch.where(mask, -A[:, None] / (2 * lens), torch.zeros(()))
    torch.testing.assert_close(g, expect.double(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("p0", [-1.5, -0.5, 0.7, 2.0])
@pytest.mark.parametrize("adv", [1.0, -1.0])
def test_T13_gradient_in_learnable_p(p0, adv, derivations):
    logp, old = _seq(5, T=4, sigma=0.3)
    T = len(logp)
    pt = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    loss, _ = policy_loss(torch.tensor(logp[None]), torch.tensor(old[None]), torch.tensor([adv], dtype=torch.float64),
                          torch.ones(1, T, dtype=torch.bool), level="sequence", p=pt, **NO_CLIP)
    (g,) = torch.autograd.grad(loss, pt)
    from proofs.theorems_means import _kl_builder  # the derived KL/p^2 form (T2)
    import sympy as sp

    args, expr = _kl_builder(T)
    kl = float(mp_eval(sp.lambdify(args, expr, modules="mpmath"), [*(logp - old), *np.full(T, 1 / T), p0], 50))
    s = math.exp(float(torch.special.logsumexp(torch.tensor(p0 * (logp - old)), 0) - math.log(T)) / p0)
    assert BY_ID["T13-learnable-p"].expected.value == "proved"
    np.testing.assert_allclose(float(g), -adv * s * kl, rtol=1e-10)
    assert np.sign(-float(g)) == np.sign(adv)  # ascent on J = -loss moves p with the sign of A


def mask_ignoring(log_x, p, dim=-1, *, weights=None, mask=None, keepdim=False, check=True):
    """Pads are averaged in (as the seed's len(ratios) does)."""
    u = torch.nan_to_num(torch.as_tensor(log_x, dtype=torch.float64), nan=0.0)
    return DEFAULT_IMPL.log_power_mean(u, p, weights=weights)


def test_wrong_implementation_is_caught(derivations):
    assert_caught("T9-seq-gradient", "log_power_mean", mask_ignoring, derivations)


#: the steps sympy must verify in each theorem's derivation (at least those its statement rests on), held
#: here apart from ``Theorem.key_steps`` so that a step demoted to a remark is caught in either place
VERIFIED = {
    "T9-seq-gradient": {"ds/dlogpi", "p=0"},
    "T10-on-policy": {"on-policy", "p=0", "token-grpo"},
    "T11-breakdown": {"H: r->0", "H weight: r->0", "H: r->inf", "H weight: r->inf"},
    "T12-clipping": {"p_up", "p_low", "shift"},
    "T13-learnable-p": {"dJ/dp"},
}


@pytest.mark.parametrize("tid", sorted(VERIFIED))
def test_sympy_verifies_the_key_steps(tid, derivations):
    assert_key_steps_verified(VERIFIED, theorems_losses, tid, derivations)

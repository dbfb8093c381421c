r"""PMPO's exponent: p chosen per trajectory by a clip-aware effective-sample-size rule.

Power-Mean Policy Optimization (Zhao et al., *One Ring to Rule Them All: Unifying Group-Based RL
via Dynamic Power-Mean Geometry*, arXiv:2601.22521) averages a trajectory's token ratios with
the power mean of an exponent ``p_i in [0, 1]`` chosen for that trajectory: the aggressive
arithmetic mean (p = 1, GRPO-like) for a reliable trajectory, the conservative geometric mean
(p = 0, GMPO) for an unstable one. The paper's abstract states the mechanism: a deterministic
rule maps the trajectory's *clipping fraction* to a *target ESS*, and p is solved (by bisection)
so that the ESS its token weights induce equals that target. The paper's body (the exact map)
was not reachable from this project's machines; the map below is **ours**, the simplest one
with the abstract's properties, and it is stated in full so that it can be compared and changed.

For trajectory ``i`` with token log-ratios ``l_it`` over its ``n_i`` tokens and advantage ``A_i``:

.. math::

    c_i = \frac{1}{n_i} \sum_t \big([A_i > 0]\,[l_{it} > hi] + [A_i < 0]\,[l_{it} < lo]\big)
    \qquad \text{(PPO's clip fraction of the trajectory's tokens; } [lo, hi] \text{ the clip window)}

    E_i(p) = \frac{(\sum_t e^{p l_{it}})^2}{n_i \sum_t e^{2 p l_{it}}} = \frac{1}{n_i \sum_t \pi_{it}^2},
    \quad \pi_i = \operatorname{softmax}(p\, l_i)
    \qquad \text{(the normalised ESS of the token weights; the loss's ``token\_weight\_ess``)}

    G_i(p) = 1 - E_i(p), \qquad G^*_i = (1 - c_i)\, G_i(1)
    \qquad \text{(ours: the target ESS } E^*_i = E_i(1) + c_i (1 - E_i(1)) \text{, linear in } c_i)

    p_i = \max\{p \in [0, 1] : G_i(p) \le G^*_i\}.

``E_i(0) = 1`` (the geometric mean weighs tokens uniformly) and ``E_i`` decreases on ``p >= 0``
(``d log E / dp = 2 (E_{\pi_p}[l] - E_{\pi_{2p}}[l]) <= 0``: the mean of ``l`` under the tilt
``softmax(q l)`` grows with ``q``, its derivative being a variance), strictly unless the row is
constant. So ``c_i = 0`` gives ``p_i = 1`` (the arithmetic mean), ``c_i = 1`` gives ``p_i = 0``
(the geometric mean), and ``p_i`` falls monotonically in between; a row whose log-ratios are all
equal (every mean coincides) gets ``p_i = 1``, an empty row ``p_i = 1`` (it carries no loss). For
a small spread ``G(p) ~ p^2 Var(l)``, so ``p_i ~ sqrt(1 - c_i)``: a trajectory with a quarter of
its tokens clipped still gets p ~ 0.87, and only a fully clipped one the geometric mean.

Numerics: ``G`` is formed from ``u_t = expm1(p (l_t - max_t l_t))`` as ``chi^2 / (1 + chi^2)``
with ``chi^2 = Var(u) / (1 + mean(u))^2`` (``= n sum pi^2 - 1``), so it is accurate for small
``p`` (no ``1 - E`` cancellation: ``G ~ p^2 Var(l)``) and cannot overflow (``u in (-1, 0]``).
The bisection halves ``[0, 1]`` :data:`BISECTIONS` times (``p`` to ``2^-24``, below float32's
resolution at 1), keeping the invariant ``G(lo) <= G* < G(hi)``; ``p_i`` is the lower end, so
the chosen p never undershoots the target ESS. Everything is detached: p is a constant of the
loss, as the adaptive mean's is (:mod:`rl.losses.adaptive`).
"""

from __future__ import annotations

import math

import torch

__all__ = ["BISECTIONS", "pmpo_clip_fraction", "pmpo_ess_gap", "pmpo_p"]

#: halvings of [0, 1] in the bisection for p
BISECTIONS = 24


@torch.no_grad()
def pmpo_clip_fraction(
    l: torch.Tensor, mask: torch.Tensor, adv_seq: torch.Tensor, log_lo: float, log_hi: float
) -> torch.Tensor:
    """``c_i`` [B]: the fraction of row ``i``'s tokens that PPO's token clip would clip on the side of
    its advantage (``l > log_hi`` for ``A > 0``, ``l < log_lo`` for ``A < 0``); 0 for an empty row."""
    a = adv_seq.reshape(-1, 1)
    clipped = mask & (((a > 0) & (l > log_hi)) | ((a < 0) & (l < log_lo)))
    n = mask.sum(-1)
    return clipped.sum(-1).to(l.dtype) / n.clamp(min=1).to(l.dtype)


@torch.no_grad()
def pmpo_ess_gap(l: torch.Tensor, mask: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``G_i(p_i) = 1 - E_i(p_i)`` [B] for one exponent per row ``p`` [B] (module doc); 0 for an empty row.

    ``l`` may hold anything on padding (it is replaced before any arithmetic).
    """
    return _gap(*_shifted(l, mask), p)


def _shifted(l: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(l - max_t l [B, T] with 0 on padding, the mask as l's dtype, tokens per row >= 1)``: what
    every evaluation of ``G`` in the bisection shares."""
    zero = torch.zeros((), dtype=l.dtype, device=l.device)
    top = torch.where(mask, l, -math.inf).amax(-1, keepdim=True)
    shifted = torch.where(mask, l - torch.where(torch.isfinite(top), top, zero), zero)  # <= 0 on the mask
    m = mask.to(l.dtype)
    return shifted, m, m.sum(-1).clamp(min=1.0)


def _gap(shifted: torch.Tensor, m: torch.Tensor, n1: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    u = torch.expm1(p.reshape(-1, 1) * shifted)  # 0 on padding, where shifted is 0
    mean = u.sum(-1) / n1
    var = ((u - mean.unsqueeze(-1)) * m).square_().sum(-1) / n1
    chi2 = var / (1.0 + mean) ** 2  # 1 + mean(u) = mean(e^{p (l - max)}) >= 1 / n (the max's own term)
    return chi2 / (1.0 + chi2)


@torch.no_grad()
def pmpo_p(
    l: torch.Tensor,
    mask: torch.Tensor,
    adv_seq: torch.Tensor,
    log_lo: float,
    log_hi: float,
    *,
    clip_l: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(p [B], c [B])``: PMPO's exponent of each row and the clip fraction it was chosen from.

    Args:
      l: token log-ratios [B, T] the mean is taken over (padding may hold anything).
      mask: [B, T] bool, True = token counts.
      adv_seq: one advantage per row [B] (only its sign is read).
      log_lo, log_hi: the clip window in log space.
      clip_l: the log-ratios the clip fraction reads, when ``l`` are already clipped (GMPO's
        token clip: a clipped token sits on the bound and would not count as outside it);
        default ``l``.

    Returns p in ``[0, 1]`` (module doc) in ``l``'s dtype, detached.
    """
    c = pmpo_clip_fraction(l if clip_l is None else clip_l, mask, adv_seq, log_lo, log_hi)
    ones = torch.ones_like(c)
    if l.shape[-1] == 0:
        return ones, c
    shared = _shifted(l, mask)
    g1 = _gap(*shared, ones)
    target = (1.0 - c) * g1
    lo, hi = torch.zeros_like(c), ones
    for _ in range(BISECTIONS):
        mid = 0.5 * (lo + hi)
        ok = _gap(*shared, mid) <= target
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    # G(1) <= G* (no token clipped, or a constant row): the arithmetic end itself meets the target.
    return torch.where(g1 <= target, ones, lo), c

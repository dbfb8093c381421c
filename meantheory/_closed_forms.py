r"""The closed-form derivatives of log M_p, evaluated from the forward record.

.. math::

    \frac{\partial \log M_p}{\partial u_i} = \pi_i = \operatorname{softmax}(p u + \log w)_i
    = w_i e^{r_i}, \qquad
    \frac{\partial \log M_p}{\partial p} = \frac{\mathrm{KL}(\pi \,\|\, w)}{p^2}, \qquad
    \frac{\partial \log M_p}{\partial \lambda_i} = \frac{w_i \operatorname{expm1}(r_i)}{p},

with ``r_i = log(pi_i / w_i) = z_i - lse`` from the record (:mod:`meantheory._kernel`) and
``lambda`` the log of the raw (unnormalised) weights. The divergence is summed as
:math:`\sum_i w_i \varphi(r_i)`, :math:`\varphi(r) = r e^r - e^r + 1 \ge 0`: every term is
non-negative, so nothing cancels, unlike ``(E_pi[u] - log M_p) / p`` whose two terms agree
to ``-log10(q)`` digits; a zero (``r = -inf``) contributes its weight (``phi(-inf) = 1``).
On series rows the derivatives of the cumulant series are used. Rows whose value is not
finite have zero derivatives; at ``p = +-inf`` the weights are ``w`` on the argmax/argmin
set and the other derivatives 0. Built from a record with a graph, every result is
differentiable again (the double backward).
"""

from __future__ import annotations

import math

import torch

from meantheory._kernel import DERIVATIVE_SERIES_ORDER, PHI_SERIES_R, PHI_TERMS, Forward, full_weights, weighted_sum
from meantheory._prepared import Prepared
from meantheory.series import cumulants_of, series_dp

__all__ = ["grad_u", "grad_p", "grad_log_weights", "extreme_weights", "weights_at_zeros", "phi"]


def _shift_rows(fwd: Forward) -> torch.Tensor | None:
    """Rows valued by m + lse / p (not series, not infinite p, not dead); None: every row."""
    out = None
    for rows in (fwd.dead, fwd.inf_rows, fwd.series_rows):
        if rows is not None:
            out = ~rows if out is None else out & ~rows
    return out


def extreme_weights(pr: Prepared, plus: torch.Tensor) -> torch.Tensor:
    """Weights of the limit p -> +-inf: w restricted to the argmax/argmin set, normalised."""
    with torch.no_grad():
        ext = torch.where(plus, pr.u_max, pr.u_min).unsqueeze(-1)
        hit = pr.finite & (pr.u == ext)
        wh = torch.where(hit, pr.w, torch.zeros_like(pr.w))
        tot = wh.sum(dim=-1, keepdim=True)
        return wh / torch.where(tot > 0, tot, torch.ones_like(tot))


def grad_u(fwd: Forward, pr: Prepared, p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``g pi``: the gradient in log_x of ``g log M_p`` (0 off the support and on dead rows).
    The record's exponents are -inf off the support and on dead and infinite-p rows, so
    their softmax is 0 there without a mask."""
    if fwd.e is not None:
        # the one-pass form (uniform weights): pi = e / sum e
        e_sum = fwd.e_sum if fwd.dead is None else torch.where(fwd.dead, 1.0, fwd.e_sum)
        out = fwd.e * (g / e_sum).unsqueeze(-1)
    elif fwd.z is not None:
        # pi = exp(z + log w - lse); in place without a graph (a fresh [..., n] tensor costs
        # more than the arithmetic)
        if fwd.logw is None:
            nv = pr.nv if pr.valid is None else torch.where(pr.nv > 0, pr.nv, 1.0)
            logit, scale = fwd.z - fwd.lse.unsqueeze(-1), (g / nv).unsqueeze(-1)
        else:
            logit, scale = fwd.z + fwd.logw, g.unsqueeze(-1)
            logit = logit - fwd.lse.unsqueeze(-1) if torch.is_grad_enabled() else logit.sub_(fwd.lse.unsqueeze(-1))
        out = logit.exp().mul(scale) if torch.is_grad_enabled() else logit.exp_().mul_(scale)
    else:
        out = torch.zeros_like(pr.u)
    if fwd.inf_rows is not None and pr.maybe(fwd.inf_rows):
        g_inf = torch.where(fwd.inf_rows, g, 0.0)
        if fwd.dead is not None:
            g_inf = torch.where(fwd.dead, 0.0, g_inf)
        out = out + extreme_weights(pr, p.detach() > 0) * g_inf.unsqueeze(-1)
    return out


def grad_p(fwd: Forward, pr: Prepared, u: torch.Tensor, p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``g KL(pi || w) / p^2``: the gradient in p of ``g log M_p`` (0 on dead and inf rows)."""
    out = torch.zeros_like(fwd.value)
    shift = _shift_rows(fwd)
    # (a record without exponents has no such rows: p = +-inf; evaluate keeps z for p_grad)
    if fwd.z is not None and (shift is None or pr.maybe(shift)):
        r = fwd.z - fwd.lse.unsqueeze(-1)
        kl = weighted_sum(phi(r, graph=torch.is_grad_enabled()), pr, fwd.logw)
        p_sh = p if shift is None else torch.where(shift, p, 1.0)
        out = kl / (p_sh * p_sh) if shift is None else torch.where(shift, kl / (p_sh * p_sh), out)
    series = fwd.series_rows
    if series is not None:
        ks = cumulants_of(pr.u_s(u), full_weights(pr, fwd.logw), DERIVATIVE_SERIES_ORDER, pr.u_max)
        out = torch.where(series, series_dp(ks, torch.where(series, p, 0.0)), out)
    return g * out


def grad_log_weights(fwd: Forward, pr: Prepared, u: torch.Tensor, p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``g w expm1(r) / p``: the gradient of ``g log M_p`` in the log of the raw weights
    (their normalisation included); on series rows ``w d (1 + x/2 + x^2/6)``, ``d = u - log M``,
    ``x = p d`` (expm1(x)/x to O(x^3), |x| <= SERIES_THRESHOLD there); 0 on dead and inf rows."""
    w = full_weights(pr, fwd.logw)
    out = torch.zeros_like(w)
    shift = _shift_rows(fwd)
    if fwd.z is not None and (shift is None or pr.maybe(shift)):
        r = fwd.z - fwd.lse.unsqueeze(-1)
        p_sh = p if shift is None else torch.where(shift, p, 1.0)
        out = w * torch.expm1(r) / p_sh.unsqueeze(-1)
        if shift is not None:
            out = torch.where(shift.unsqueeze(-1), out, 0.0)
    series = fwd.series_rows
    if series is not None:
        value = torch.where(series, fwd.value, 0.0)
        d = torch.where(pr.finite, pr.u_s(u) - value.unsqueeze(-1), 0.0)
        x = torch.where(series, p, 0.0).unsqueeze(-1) * d
        out = torch.where(series.unsqueeze(-1), w * d * (1 + x / 2 + x * x / 6), out)
    return out * g.unsqueeze(-1)


def weights_at_zeros(fwd: Forward, pr: Prepared, p: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """mean_weights' limits on rows that are 0 because of a zero (dead rows of the record):
    softmax(p u + log w) puts all mass on the zeros for p < 0 (their logits are +inf) and
    is w at p = 0."""
    if fwd.dead is None or not pr.maybe(fwd.dead & pr.has_zero):
        return pi
    w = pr.w
    wz = torch.where(pr.is_zero, w, torch.zeros_like(w))
    tot = wz.sum(-1, keepdim=True)
    wz = wz / torch.where(tot > 0, tot, torch.ones_like(tot))
    pd = p.detach()
    pi = torch.where((pr.has_zero & (pd < 0)).unsqueeze(-1), wz, pi)
    return torch.where((pr.has_zero & (pd == 0)).unsqueeze(-1), w, pi)


def _phi_series(r: torch.Tensor) -> torch.Tensor:
    """sum_{k=2}^{PHI_TERMS} (k-1) r^k / k!, by Horner."""
    ser = torch.zeros_like(r)
    for k in range(PHI_TERMS, 1, -1):
        ser = (ser + (k - 1) / math.factorial(k)) * r
    return ser * r  # Horner leaves one factor r; the series starts at r^2


def phi(r: torch.Tensor, *, graph: bool) -> torch.Tensor:
    r"""phi(r) = r e^r - e^r + 1 = sum_{k>=2} (k-1) r^k / k! >= 0, accurate for every r; the
    limit 1 at r = -inf (a zero). ``graph``: differentiable (where-selected series); without
    it, on a CPU, the series is evaluated on the few small entries only (on an accelerator
    that selection would synchronise, so there the where-form is used too)."""
    if graph or r.device.type != "cpu":
        fin = torch.isfinite(r)
        rd = torch.where(fin, r, 0.0)
        small = (rd.abs() < PHI_SERIES_R) & fin
        direct_r = torch.where(small, 1.0, rd)
        direct = direct_r * torch.exp(direct_r) - torch.expm1(direct_r)
        out = torch.where(small, _phi_series(torch.where(small, rd, 0.0)), direct)
        return torch.where(fin, out, 1.0)
    # r = -inf gives -inf * 0 - (-1) = NaN: the limit 1 replaces it (one fast pass)
    out = torch.exp(r).mul_(r).sub_(torch.expm1(r)).nan_to_num_(nan=1.0)
    small = r.abs() < PHI_SERIES_R
    if bool(small.any()):
        out[small] = _phi_series(r[small])
    return out

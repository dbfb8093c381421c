r"""The shifted log-sum-exp kernel: every decision on how log M_p is evaluated, in one place.

For a row with normalised weights ``w`` on its support and log-values ``u``, shift by
``m = max u`` (``p >= 0``) or ``min u`` (``p < 0``) over the support, so that every exponent
``z_i = p (u_i - m) <= 0`` and the largest is 0; then

.. math:: \mathrm{lse} = \log \sum_i w_i e^{z_i}, \qquad \log M_p = m + \mathrm{lse} / p .

Per row, with ``q = |p| spread(u)``, ``lse`` and the value come from one of three forms:

* **series**: ``p = 0``, or ``q <= SERIES_THRESHOLD`` where lse must be accurate relative to
  its size (below): the cumulant series :math:`\kappa_1 + \kappa_2 p/2 + \kappa_3 p^2/6 +
  \kappa_4 p^3/24` gives the value (:mod:`meantheory.series`), ``lse`` still comes from the
  log1p form, exact there (every ``|z|`` is at most q).
* **log1p**: ``lse = log1p(s)``, ``s = sum w expm1(z)``. All terms of ``s`` have one sign,
  so ``s`` and ``lse`` keep a relative accuracy of a few ulps however small ``q`` is. It is
  used where lse must be accurate relative to its size: ``|p| < EXP_FORM_P`` (the value
  divides lse by p) or where a p-gradient is wanted (KL sums ``r = z - lse``, see
  :mod:`meantheory._closed_forms`); unless ``1 + s < LOG1P_MIN``.
* **direct**: ``lse = log(sum w e^z)``. The sum is at least the weight of the maximum, so
  lse has an absolute error of a few ulps; dividing by ``|p| >= 1/2`` at most doubles it.
  Used for ``|p| >= EXP_FORM_P`` without a p-gradient, and where ``1 + s < LOG1P_MIN``.

and ``p = +-inf`` gives the max/min over the support. A Python ``p`` with ``|p| >= 1/2`` and
no p-gradient takes the direct form in one exponential pass, keeping ``e^z`` for the
backward (:func:`evaluate`'s one-pass form); everything else goes through the per-row
decision above, which a per-row tensor p, a Python small p, the p-gradient, the double
backward (the same decision with a graph) and the public closed forms share.

The thresholds are defined below, each with the reason for its value; nothing else in
meantheory decides between the forms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from meantheory._prepared import Prepared, fill, nonfinite
from meantheory.series import cumulants_of, series_value

__all__ = [
    "SERIES_THRESHOLD",
    "EXP_FORM_P",
    "LOG1P_MIN",
    "VALUE_SERIES_ORDER",
    "DERIVATIVE_SERIES_ORDER",
    "PHI_SERIES_R",
    "PHI_TERMS",
    "Forward",
    "evaluate",
    "full_weights",
    "weighted_sum",
]

#: ``|p| * spread(log x)`` at or below which the cumulant series gives the value. Its first
#: omitted term is below ``spread * q^4 / 120`` (1e-26 spread at the threshold), far below an
#: ulp; the series is also what keeps p = 0 and tiny p (whose exponents ``p (u - m)`` would
#: underflow, 1e-300 and below) exact and continuous.
SERIES_THRESHOLD = 1e-6
#: ``|p|`` from which the direct form suffices for the value (its log error is divided by |p|).
EXP_FORM_P = 0.5
#: The log1p form is used while ``1 + s >= LOG1P_MIN``: below, log1p(s) has an absolute error
#: of ``eps / (1 + s) > 20 eps`` while the direct sum keeps a few eps (and ``1 + s < 0.05``
#: needs ``q > 3``, where lse is not small, so nothing relative is lost). Above it both forms
#: are accurate, their gradients too, so one threshold serves the value, the gradients and
#: the double backward.
LOG1P_MIN = 0.05
#: Series orders: the value (error spread q^4 / 120) and the p-derivative, which loses one
#: order of p to the differentiation (error ~ spread^2 q^5 / 840 relative to kappa_2 / 2).
VALUE_SERIES_ORDER = 4
DERIVATIVE_SERIES_ORDER = 6
#: phi(r) = r e^r - expm1(r) by its Taylor series (through r^PHI_TERMS) below this |r|; above
#: it the direct form, whose cancellation costs at most 2 eps / |r| = 5e-13 relative.
PHI_SERIES_R = 1e-3
PHI_TERMS = 7

_INF = math.inf


@dataclass(frozen=True, eq=False)
class Forward:
    """What the forward computed, per row unless noted; the backward reads nothing else.

    ``value``: log M_p (NaN for an empty support, -inf for a row that is 0).
    ``lse``: log sum_i w_i e^{z_i} (0 on dead and infinite-p rows).
    ``z``: the exponents ``p (u - m)`` ``[..., n]``, -inf off the support, at zeros and on
    dead and infinite-p rows; None where the one-pass form kept only ``e``.
    ``e``, ``e_sum``: ``e^z`` (uniform weights, one-pass form) and its row sums, else None.
    ``logw``: the normalised log-weights used (None for uniform weights); graph-connected
    when the forward was built with a graph.
    ``dead``: rows whose value is not finite, whose gradients are 0; ``inf_rows``: rows with
    ``p = +-inf``; ``series_rows``: rows valued by the cumulant series. Each None when the
    forward knows there is no such row.
    """

    value: torch.Tensor
    lse: torch.Tensor
    z: torch.Tensor | None
    e: torch.Tensor | None
    e_sum: torch.Tensor | None
    logw: torch.Tensor | None
    dead: torch.Tensor | None
    inf_rows: torch.Tensor | None
    series_rows: torch.Tensor | None


def evaluate(
    pr: Prepared,
    u: torch.Tensor,
    p: torch.Tensor,
    logw: torch.Tensor | None,
    *,
    p_grad: bool = False,
    graph: bool = False,
) -> Forward:
    """The forward record of log M_p of every row of ``u`` (reduced dim last, n > 0).

    ``p`` per row; ``logw`` the normalised log-weights (None: uniform); ``p_grad``: a
    p-gradient will be asked of the record (then lse is kept to a relative accuracy);
    ``graph``: the result must be differentiable (the double backward, the public closed
    forms under autograd), so nothing is done in place.
    """
    pf = pr.p_float
    if pf is not None and math.isinf(pf):
        return _at_infinity(pr, pf, logw)
    if pf is not None and abs(pf) >= EXP_FORM_P and not p_grad and not graph:
        return _one_pass(pr, u, pf, logw)
    return _per_row(pr, u, p, logw, p_grad=p_grad, graph=graph)


def full_weights(pr: Prepared, logw: torch.Tensor | None) -> torch.Tensor:
    """Normalised weights on every entry (0 off the support): the prepared ones, or those of
    graph-connected log-weights."""
    return pr.w if logw is None or logw is pr.logw else torch.exp(logw)


def _at_infinity(pr: Prepared, pf: float, logw) -> Forward:
    """p = +-inf (a Python number): the max/min over the support; a zero makes M_{-inf} 0."""
    zero = pr.has_zero if pf < 0 else torch.zeros_like(pr.empty)
    value = torch.where(zero, -_INF, pr.u_max if pf > 0 else pr.u_min)
    value = torch.where(pr.empty, math.nan, value)
    dead = pr.empty | zero | pr.no_finite
    return Forward(value=value, lse=torch.zeros_like(value), z=None, e=None, e_sum=None, logw=logw,
                   dead=dead, inf_rows=torch.ones_like(dead), series_rows=None)


def _one_pass(pr: Prepared, u: torch.Tensor, pf: float, logw) -> Forward:
    """A Python ``|p| >= 1/2`` without p-gradient: the direct form in one exponential pass."""
    plus = pf > 0
    uf = fill(u, pr.valid, -_INF if plus else _INF)
    m = uf.amax(-1) if plus else uf.amin(-1)
    dead = nonfinite(m)  # empty row, all zeros (p > 0), any zero (p < 0)
    # Rows without a finite extreme are rare; on a CPU asking is cheaper than the handful of
    # small kernels that handle them (Prepared.maybe: accelerators compute them instead).
    any_dead = pr.maybe(dead)
    m_s = torch.where(dead, 0.0, m) if any_dead else m
    # in place on the filled copy: a fresh [..., n] tensor costs more than the arithmetic
    z = (uf.sub_(m_s.unsqueeze(-1)) if pr.valid is not None else uf - m_s.unsqueeze(-1)).mul_(pf)
    if not plus and any_dead:
        z = z.masked_fill_(dead.unsqueeze(-1), -_INF)
    e = e_sum = None
    if logw is None:
        e = torch.exp_(z)  # z is not kept: the backward needs only e^z
        e_sum = e.sum(-1)
        lse = torch.log(e_sum) - torch.log(pr.nv)
        z = None
    else:
        lse = torch.logsumexp(z + logw, -1)
    value = m_s + lse / pf
    if any_dead:
        value = torch.where(dead, torch.where(pr.empty | torch.isnan(m), math.nan, -_INF), value)
        lse = torch.where(dead, 0.0, lse)
    return Forward(value=value, lse=lse, z=z, e=e, e_sum=e_sum, logw=logw,
                   dead=dead if any_dead else None, inf_rows=None, series_rows=None)


def _per_row(pr: Prepared, u: torch.Tensor, p: torch.Tensor, logw, *, p_grad: bool, graph: bool) -> Forward:
    """Every other case: the series / log1p / direct decision made per row (module docstring)."""
    pf = pr.p_float  # a Python p (finite here): its row decisions are Python decisions
    with torch.no_grad():
        pd = p.detach()
        is_inf = None if pf is not None else torch.isinf(pd)
        any_inf = pf is None and pr.maybe(is_inf)
        p_z = torch.where(is_inf, 1.0, pd) if any_inf else pd  # the exponent that shapes z
        plus = None if pf is not None else pd >= 0
        # u on the support, the infinity of the shift's side elsewhere: max (p >= 0) and min
        # (p < 0) over the support come from it, and so do exponents that are -inf off it.
        uf = _support_filled(pr, u.detach(), pf, plus)
        if pf is not None:
            m = uf.amax(-1) if pf >= 0 else uf.amin(-1)
        else:
            m = torch.where(plus, uf.amax(-1), uf.amin(-1)) if pr.maybe(~plus) else uf.amax(-1)
        at_zero = (pd == 0) if pf is None or pf == 0 else None  # None: no row has p = 0
        any_at_zero = at_zero is not None and (pf == 0 or pr.maybe(at_zero))
        # the row is 0: all entries zeros (max -inf), a zero with p < 0 (min -inf), a zero at p = 0
        zero_res = (m == -_INF) & ~pr.empty
        if any_at_zero:
            zero_res = zero_res | (at_zero & pr.has_zero)
        nan_res = pr.empty | torch.isnan(m)  # nothing to average (or NaN with check=False)
        dead = zero_res | nan_res
        any_dead = pr.maybe(dead)
        off = (dead | is_inf) if any_inf else dead  # rows without exponents
        m_s = torch.where(torch.isfinite(m), m, 0.0)
        # Rows where lse must be accurate relative to its size (module docstring).
        # (None: every row)
        relative = None if p_grad or pf is not None and abs(pf) < EXP_FORM_P else pd.abs() < EXP_FORM_P

    p_col = pf if pf is not None else p_z.unsqueeze(-1)
    if graph:
        # Mask before the arithmetic: a NaN or -inf that a where discards still poisons
        # the gradient of the branch it came from.
        p_col = p_col if pf is not None else torch.where(is_inf, 1.0, p).unsqueeze(-1)
        z = torch.where(pr.finite, (pr.u_s(u) - m_s.unsqueeze(-1)) * p_col, -_INF)
    else:
        # in place on the filled copy (a fresh [..., n] tensor costs more than the arithmetic)
        z = (uf.sub_(m_s.unsqueeze(-1)) if pr.valid is not None else uf - m_s.unsqueeze(-1)).mul_(p_col)
        if any_at_zero:
            z = z.nan_to_num_(nan=-_INF)  # p = 0: 0 * inf off the support (and at zeros: dead rows)
    if any_dead or any_inf:
        z = torch.where(off.unsqueeze(-1), -_INF, z)

    live = ~off
    use_log1p = live if relative is None else live & relative
    use_direct = torch.zeros_like(live) if relative is None else live & ~relative
    lse, s = _log_mean_exp(z, pr, logw, use_log1p=use_log1p, use_direct=use_direct)
    with torch.no_grad():
        # |s| <= max |z| = |p| spread: a row with |s| above the threshold is not a series row
        candidates = use_log1p if s is None else use_log1p & (s.detach().abs() <= SERIES_THRESHOLD)
        series = _series_rows(pr, z.detach(), at_zero if any_at_zero else None, candidates)
    any_series = pr.maybe(series)
    p_div = torch.where(series | off, 1.0, p) if any_series or any_dead or any_inf else p
    value = m_s + lse / p_div
    if any_series:
        ks = cumulants_of(pr.u_s(u), full_weights(pr, logw), VALUE_SERIES_ORDER, m_s)
        value = torch.where(series, series_value(ks, torch.where(series, p, 0.0)), value)
    if any_inf:
        value = torch.where(is_inf, m, value)
    if any_dead:
        value = torch.where(zero_res, -_INF, value)
        value = torch.where(nan_res, math.nan, value)
    return Forward(value=value, lse=lse, z=z, e=None, e_sum=None, logw=logw,
                   dead=dead if any_dead else None, inf_rows=is_inf if any_inf else None,
                   series_rows=series if any_series else None)


def _support_filled(pr: Prepared, u: torch.Tensor, pf: float | None, plus: torch.Tensor) -> torch.Tensor:
    """u on the support; -inf off it for rows with p >= 0, +inf for p < 0."""
    if pr.valid is None:
        return u
    if pf is not None:
        return torch.where(pr.valid, u, -_INF if pf >= 0 else _INF)
    side = torch.where(plus, -_INF, _INF).unsqueeze(-1)
    return torch.where(pr.valid, u, side)


def _series_rows(pr: Prepared, z: torch.Tensor, at_zero: torch.Tensor | None, candidates: torch.Tensor) -> torch.Tensor:
    """Rows valued by the series: p = 0 (``at_zero``; None: no such row), or |p| spread <=
    SERIES_THRESHOLD among the candidates. Every exponent of such a row is within the
    threshold of 0 (the extreme one is exactly -|p| spread), and zeros (-inf) are not:
    counting them avoids computing the spread."""
    if at_zero is None:
        series = torch.zeros_like(candidates)
        rest = candidates
    else:
        series = at_zero & candidates
        rest = candidates & ~at_zero
    if pr.maybe(rest):
        within = torch.count_nonzero(z >= -SERIES_THRESHOLD, dim=-1).to(pr.nv.dtype)
        series = series | (candidates & (within == pr.nv))
    return series


def weighted_sum(x: torch.Tensor, pr: Prepared, logw: torch.Tensor | None) -> torch.Tensor:
    """sum_i w_i x_i per row, ``x`` finite off the support (w = 0 there); ``logw`` as in the
    record. Without a graph ``x`` is consumed (multiplied in place: a fresh [..., n] tensor
    costs more on a CPU than the arithmetic)."""
    if torch.is_grad_enabled():
        return (x * full_weights(pr, logw)).sum(-1)
    if logw is not None:
        return x.mul_(full_weights(pr, logw)).sum(-1)
    if pr.valid is None:
        return x.sum(-1) / pr.nv
    return x.mul_(pr.valid).sum(-1) / torch.where(pr.nv > 0, pr.nv, 1.0)


def _log_mean_exp(z: torch.Tensor, pr: Prepared, logw, *, use_log1p: torch.Tensor,
                  use_direct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log sum_i w_i e^{z_i} on the rows asked for (0 elsewhere): by log1p(sum w expm1 z) on
    the ``use_log1p`` rows while ``1 + s >= LOG1P_MIN``, otherwise directly; and s (None if
    not computed). ``z <= 0`` with max 0 on those rows, -inf off the support. Safe to
    differentiate: rows not asked for get finite stand-ins before every log and division."""
    lse = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
    direct = use_direct
    s = None
    if pr.maybe(use_log1p):
        # expm1(-inf) = -1 off the support: the mask (or w, 0 there) removes it
        s = weighted_sum(torch.expm1(z), pr, logw)
        ok = s >= LOG1P_MIN - 1.0
        lse = torch.where(use_log1p & ok, torch.log1p(torch.where(ok, s, 0.0)), lse)
        direct = direct | (use_log1p & ~ok)
    if pr.maybe(direct):
        if logw is None:
            nv = pr.nv if pr.valid is None else torch.where(pr.nv > 0, pr.nv, 1.0)
            t = torch.where(direct, torch.exp(z).sum(-1), 1.0)
            lse = torch.where(direct, torch.log(t) - torch.log(nv), lse)
        else:
            y = torch.where(direct.unsqueeze(-1), z + logw, 0.0)
            lse = torch.where(direct, torch.logsumexp(y, -1), lse)
    return lse, s

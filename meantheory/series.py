r"""The cumulant series of the log power mean around p = 0.

.. math::

    \log M_p = \frac{K(p)}{p} = \kappa_1 + \frac{\kappa_2}{2} p + \frac{\kappa_3}{6} p^2
    + \dots = \sum_{j \ge 1} \frac{\kappa_j}{j!} p^{j-1},

where :math:`K(p) = \log \sum_i w_i e^{p u_i}` is the cumulant generating function of
:math:`u = \log x` under the weights and :math:`\kappa_j` its cumulants (Kendall and
Stuart, *The Advanced Theory of Statistics*, vol. 1, ch. 3). In particular
:math:`\log H = \log M_{-1} \approx \log G - \operatorname{Var}(u)/2` for a small spread.
The series converges for ``|p|`` below the distance from 0 to the nearest complex zero
of :math:`\sum_i w_i e^{p u_i}`, which is at least of order ``1/spread(u)``.

The power mean itself evaluates this series where ``|p| spread(u)`` is tiny (see
:mod:`meantheory._kernel`); :func:`cumulants_of`, :func:`series_value` and
:func:`series_dp` are the pieces it uses.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from meantheory._inputs import answer
from meantheory._prepared import Prepared, prepare

__all__ = ["weighted_cumulants", "cumulant_series"]


def cumulants_from_central_moments(mu: dict[int, Any], order: int) -> list[Any]:
    """k_1..k_order from central moments mu_j (mu_1 = 0; k_1 returned as 0).

    Recursion k_n = mu_n - sum_{j=2}^{n-2} C(n-1, j-1) k_j mu_{n-j} (Kendall and Stuart,
    *The Advanced Theory of Statistics* vol. 1, sec. 3.14, with the mean removed).
    Works for torch tensors, floats and mpmath numbers alike.
    """
    ks: list[Any] = [mu[1]]
    for n in range(2, order + 1):
        kn = mu[n]
        for j in range(2, n - 1):
            kn = kn - math.comb(n - 1, j - 1) * ks[j - 1] * mu[n - j]
        ks.append(kn)
    return ks


def cumulants_of(u_s: torch.Tensor, w: torch.Tensor, order: int, m0: torch.Tensor) -> list[torch.Tensor]:
    """Weighted cumulants k1..k_order of ``u_s`` along the last dim (finite; ``w`` normalised,
    0 off the support); differentiable in ``u_s`` and ``w``.

    ``m0`` (per row, constant, e.g. the row's max) is subtracted first: the mean of
    ``u - m0`` rounds at the scale of the spread instead of the scale of ``|u|``, which
    keeps tiny variances of large values exact (a mean off by one ulp of ``u`` would add
    its square to the variance).
    """
    m0 = torch.where(torch.isfinite(m0), m0, torch.zeros_like(m0)).detach().unsqueeze(-1)
    v = u_s - m0
    d1 = (w * v).sum(dim=-1)
    k1 = m0.squeeze(-1) + d1
    if order == 1:
        return [k1]
    c = v - d1.unsqueeze(-1)
    # Central moments (centring first keeps them free of cancellation).
    mu = {1: torch.zeros_like(k1)}
    cj = c
    for j in range(2, order + 1):
        cj = cj * c
        mu[j] = (w * cj).sum(dim=-1)
    return [k1, *cumulants_from_central_moments(mu, order)[1:]]


def series_value(ks: list[Any], p: Any) -> Any:
    """sum_j k_j p^(j-1) / j! through k_len(ks), by Horner from the highest order."""
    out = ks[-1] / math.factorial(len(ks))
    for j in range(len(ks) - 1, 0, -1):
        out = out * p + ks[j - 1] / math.factorial(j)
    return out


def series_dp(ks: list[Any], p: Any) -> Any:
    """d/dp of :func:`series_value`: sum_{j>=2} (j-1) k_j p^(j-2) / j!."""
    n = len(ks)
    out = (n - 1) * ks[-1] / math.factorial(n)
    for j in range(n - 1, 1, -1):
        out = out * p + (j - 1) * ks[j - 1] / math.factorial(j)
    return out


def _cumulants(pr: Prepared, order: int) -> list[torch.Tensor]:
    """Weighted cumulants of u over the finite support (differentiable in u); NaN for an
    empty support."""
    if pr.n == 0:
        return [torch.full(pr.p.shape, math.nan, dtype=pr.u.dtype, device=pr.u.device) for _ in range(order)]
    ks = cumulants_of(pr.u_s(), pr.w, order, pr.u_max)
    return [torch.where(pr.empty, math.nan, k) for k in ks]


def _check_order(order: Any) -> None:
    if not isinstance(order, int) or isinstance(order, bool) or order < 1:
        raise ValueError(f"order: expected an int >= 1, got {order!r}")


def weighted_cumulants(
    log_x: Any, order: int, dim: int = -1, *, weights: Any = None, mask: Any = None, check: bool = True
) -> list[Any]:
    r"""Weighted cumulants :math:`\kappa_1, \dots, \kappa_{order}` of ``log_x`` along ``dim``.

    :math:`\kappa_1` is the weighted mean, :math:`\kappa_2` the weighted variance
    (population form, normalised weights), :math:`\kappa_3` the third central moment,
    :math:`\kappa_4 = \mu_4 - 3\mu_2^2`, and so on by the moment recursion.
    Zeros (``-inf``) are not allowed: their cumulants are infinite.
    """
    _check_order(order)
    pr = prepare(log_x, 0.0, dim, weights, mask, False, check)
    if check and bool(pr.has_zero.any()):
        raise ValueError("log_x: -inf (a zero) has infinite cumulants")
    return [answer(pr.finish(k), pr.kind) for k in _cumulants(pr, order)]


def cumulant_series(
    log_x: Any, p: Any, order: int, dim: int = -1, *, weights: Any = None, mask: Any = None, check: bool = True
) -> Any:
    r"""Truncated series :math:`\sum_{j=1}^{order} \kappa_j p^{j-1} / j!` for :math:`\log M_p`.

    ``order = 1`` gives :math:`\log G`; ``order = 2`` adds :math:`p\,\mathrm{Var}(u)/2`.
    The truncation error is :math:`O(p^{order})`; compare with :func:`log_power_mean`.
    """
    _check_order(order)
    pr = prepare(log_x, p, dim, weights, mask, False, check)
    if check and bool(pr.has_zero.any()):
        raise ValueError("log_x: -inf (a zero) has no cumulant series")
    if check and bool(torch.isinf(pr.p).any()):
        raise ValueError("p: the cumulant series needs a finite p")
    out = series_value(_cumulants(pr, order), pr.p)
    return answer(pr.finish(out), pr.kind)

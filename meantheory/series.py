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
"""

from __future__ import annotations

import math
from typing import Any

import torch

from meantheory._inputs import answer
from meantheory.power_mean import _cumulants, _finish, _prepare

__all__ = ["weighted_cumulants", "cumulant_series"]


def weighted_cumulants(
    log_x: Any, order: int, dim: int = -1, *, weights: Any = None, mask: Any = None, check: bool = True
) -> list[Any]:
    r"""Weighted cumulants :math:`\kappa_1, \dots, \kappa_{order}` of ``log_x`` along ``dim``.

    :math:`\kappa_1` is the weighted mean, :math:`\kappa_2` the weighted variance
    (population form, normalised weights), :math:`\kappa_3` the third central moment,
    :math:`\kappa_4 = \mu_4 - 3\mu_2^2`, and so on by the moment recursion.
    Zeros (``-inf``) are not allowed: their cumulants are infinite.
    """
    if not isinstance(order, int) or isinstance(order, bool) or order < 1:
        raise ValueError(f"order: expected an int >= 1, got {order!r}")
    pr = _prepare(log_x, 0.0, dim, weights, mask, False, check)
    if check and bool(pr.has_zero.any()):
        raise ValueError("log_x: -inf (a zero) has infinite cumulants")
    return [answer(_finish(k, pr), pr.kind) for k in _cumulants(pr, order)]


def cumulant_series(
    log_x: Any, p: Any, order: int, dim: int = -1, *, weights: Any = None, mask: Any = None, check: bool = True
) -> Any:
    r"""Truncated series :math:`\sum_{j=1}^{order} \kappa_j p^{j-1} / j!` for :math:`\log M_p`.

    ``order = 1`` gives :math:`\log G`; ``order = 2`` adds :math:`p\,\mathrm{Var}(u)/2`.
    The truncation error is :math:`O(p^{order})`; compare with :func:`log_power_mean`.
    """
    if not isinstance(order, int) or isinstance(order, bool) or order < 1:
        raise ValueError(f"order: expected an int >= 1, got {order!r}")
    pr = _prepare(log_x, p, dim, weights, mask, False, check)
    if check and bool(pr.has_zero.any()):
        raise ValueError("log_x: -inf (a zero) has no cumulant series")
    if check and bool(torch.isinf(pr.p).any()):
        raise ValueError("p: the cumulant series needs a finite p")
    ks = _cumulants(pr, order)
    out = ks[-1] / math.factorial(order)
    for j in range(order - 1, 0, -1):
        out = out * pr.p + ks[j - 1] / math.factorial(j)
    out = torch.where(pr.empty, torch.full_like(out, math.nan), out)
    return answer(_finish(out, pr), pr.kind)

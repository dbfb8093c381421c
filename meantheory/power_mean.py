r"""Exact, differentiable weighted power means for every real exponent, in log space.

For values :math:`x_i \ge 0` with normalised weights :math:`w_i` (``sum w = 1``) the
power mean of exponent :math:`p` is

.. math::

    M_p(x) = \Big(\sum_i w_i x_i^p\Big)^{1/p} \quad (p \ne 0), \qquad
    M_0(x) = \prod_i x_i^{w_i}, \qquad M_{+\infty} = \max_i x_i, \quad M_{-\infty} = \min_i x_i,

the max/min running over entries with positive weight. With :math:`u_i = \log x_i` the
primary quantity is

.. math::

    \log M_p = \frac{1}{p} \log \sum_i w_i e^{p u_i},

which is a cumulant generating function divided by ``p``:
:math:`\log M_p = \kappa_1 + \kappa_2 p/2 + \kappa_3 p^2/6 + \dots` with :math:`\kappa_j`
the weighted cumulants of ``u`` (Hardy, Littlewood and Polya, *Inequalities*, 1934,
ch. II; Bullen, *Handbook of Means and Their Inequalities*, 2003, ch. III).

Evaluation (never ``mean(x**p)**(1/p)``, which overflows, underflows and loses every
digit as p -> 0). Let ``m = max u`` (p > 0) or ``min u`` (p < 0), so that every exponent
``z_i = p (u_i - m) <= 0`` and nothing overflows; ``q = |p| spread(u)``.

* ``p = 0``, or ``q <= SERIES_THRESHOLD`` (1e-6) where ``|p| < 1/2`` or a p-gradient is
  wanted: the cumulant series through :math:`\kappa_4`; the first omitted term is below
  ``spread * q^4 / 120``, far below an ulp.
* ``|p| >= 1/2``: ``log M = m + log(sum w e^z) / p``. The sum is at least the weight of
  the maximum, so its logarithm has an absolute error of a few ulps, and dividing by
  ``|p| >= 1/2`` at most doubles it.
* ``0 < |p| < 1/2`` (and every p whose gradient is wanted): ``log M = m + log1p(s) / p`` with
  ``s = sum w expm1(z)``. All terms of ``s`` have one sign, so ``s`` and hence ``log M - m``
  keep a relative accuracy of a few ulps however small ``p`` is (the reason the naive form
  fails). When ``1 + s < 0.05`` (then ``q > 3``) the logarithm is instead taken of
  ``sum w e^z`` computed directly.
* ``p = +-inf``: the max/min over the support, with ties split by weight.

One kernel makes this decision, per row, and holds every threshold with its reason
(:mod:`meantheory._kernel`); its forward record feeds the closed-form gradients
(:mod:`meantheory._closed_forms`) through one autograd function (:mod:`meantheory._forward`);
the inputs are validated once (:mod:`meantheory._prepared`).

Gradients come from a custom autograd function whose backward uses the closed forms

.. math::

    \frac{\partial \log M_p}{\partial u_i} = \pi_i = \operatorname{softmax}(p u + \log w)_i,
    \qquad \frac{\partial \log M_p}{\partial p} = \frac{\mathrm{KL}(\pi \,\|\, w)}{p^2}
    \;\xrightarrow{p\to 0}\; \tfrac12 \operatorname{Var}_w(u),

which :func:`mean_weights` and :func:`dlog_power_mean_dp` return directly. The KL
divergence is summed as :math:`\sum_i w_i \varphi(r_i)` with
:math:`r_i = \log(\pi_i/w_i)` and :math:`\varphi(r) = r e^r - e^r + 1 \ge 0`: every term is
non-negative, so nothing cancels, unlike ``(E_pi[u] - log M_p) / p`` whose two terms
agree to ``-log10(q)`` digits. Near ``p = 0`` the derivative of the cumulant series is
used. Learned weights get the closed form too: ``d log M_p / d log w_i = w_i expm1(r_i) / p``
for the raw (unnormalised) weights. With ``create_graph=True`` the backward is built from
differentiable operations, so second derivatives (``gradgradcheck``) are exact too.

Conventions, documented once here:

* ``mask`` (bool, True = keep): masked entries may hold anything (NaN, -inf, garbage);
  they are replaced before any arithmetic, so they never reach values or gradients.
* entries with zero weight are outside the support, exactly like masked ones.
* a row with an empty support returns NaN, and its gradient is zero.
* zeros (``log_x = -inf``): ``M_p = 0`` (log -inf) for ``p <= 0``, with zero gradient
  (the mean is identically 0 near such a point); for ``p > 0`` a zero is handled exactly,
  contributing ``w_i 0^p = 0`` to the sum.
* float16/bfloat16 tensors are computed and answered in float32; numpy arrays are computed
  in float64 and answered in NumPy's result dtype of the values and the weights (float32
  stays float32, integers become float64), as ``scipy.stats.pmean`` answers.
"""


from __future__ import annotations

import math
from typing import Any

import torch

from meantheory._closed_forms import grad_p, grad_u, weights_at_zeros
from meantheory._forward import log_power_mean_value
from meantheory._inputs import answer, compute_dtype, first_index, kind_of, to_mask, to_tensor
from meantheory._kernel import SERIES_THRESHOLD, evaluate
from meantheory._prepared import Prepared, normalised, prepare

__all__ = [
    "SERIES_THRESHOLD",
    "log_power_mean",
    "power_mean",
    "arithmetic_mean",
    "geometric_mean",
    "harmonic_mean",
    "mean_weights",
    "dlog_power_mean_dp",
]

_INF = math.inf


def log_power_mean(
    log_x: Any,
    p: Any,
    dim: int = -1,
    *,
    weights: Any = None,
    mask: Any = None,
    keepdim: bool = False,
    check: bool = True,
) -> Any:
    r"""Log of the weighted power mean of ``exp(log_x)`` along ``dim``.

    .. math:: \log M_p = \tfrac{1}{p}\log\textstyle\sum_i w_i e^{p\,u_i},\quad u = \log x,

    with the limits ``p = 0`` (weighted mean of ``u``) and ``p = +-inf`` (max/min of ``u``).

    Args:
      log_x: log-values ``u``; finite or ``-inf`` (a zero) in unmasked positions.
      p: exponent, any real (``0``, ``+-inf`` and tiny values included): a Python number
        or a tensor broadcastable to the reduced shape (one ``p`` per row); may require grad.
      dim: the dimension reduced.
      weights: non-negative weights broadcastable to ``log_x``; normalised internally.
      mask: bool, broadcastable to ``log_x``; False entries are excluded and may hold NaN.
      keepdim: keep the reduced dimension with size 1.
      check: validate values (NaN, +inf, negative weights); ``False`` skips every check
        and every device synchronisation, for hot training loops.

    Returns:
      ``log M_p`` with the reduced shape, in the kind of ``log_x`` (tensor, ndarray, float);
      an ndarray keeps its floating dtype (see the module docstring).

    Accuracy: in float64 the error is within ``64 eps max(1, max|u|)`` of the exact value
    (tested against mpmath at 60 digits for ``|p| <= 1000``, ``|u| <= 700``, n up to 4096);
    the gradient in ``u`` within 1e-12 of the softmax form, in ``p`` within 1e-7 relative.

    References: Hardy, Littlewood, Polya, *Inequalities* (1934), ch. II and III;
    Bullen, *Handbook of Means and Their Inequalities* (2003), ch. III.
    """
    pr = prepare(log_x, p, dim, weights, mask, keepdim, check)
    return answer(pr.finish(log_power_mean_value(pr)), pr.kind)


def power_mean(
    x: Any,
    p: Any,
    dim: int = -1,
    *,
    weights: Any = None,
    mask: Any = None,
    keepdim: bool = False,
    check: bool = True,
) -> Any:
    r"""Weighted power mean :math:`M_p(x) = (\sum_i w_i x_i^p)^{1/p}` of ``x >= 0`` along ``dim``.

    Computed as ``exp(log_power_mean(log x))`` (see :func:`log_power_mean` for every
    convention). The gradient with respect to an entry that is exactly 0 is the one-sided
    limit of :math:`\partial M_p/\partial x_i = w_i x_i^{p-1} M_p^{1-p}`: ``+inf`` for
    ``0 < p < 1``, ``w_i`` for ``p = 1``, ``0`` for ``p > 1`` and for ``p <= 0`` (where
    ``M_p`` is identically 0 near such a point).

    Raises:
      ValueError: a negative, NaN or +inf entry in an unmasked position, and every error
        of :func:`log_power_mean`.
    """
    kind = kind_of(x, weights)
    xt = to_tensor(x, "x")
    dtype = compute_dtype(xt.dtype)
    xt = xt.to(dtype)
    m = to_mask(mask, xt.shape, xt.device) if mask is not None else None
    if check:
        sel = xt if m is None else torch.where(m, xt, torch.ones((), dtype=dtype, device=xt.device))
        bad = ~(torch.isfinite(sel) & (sel >= 0))
        if bool(bad.any()):
            idx = first_index(bad)
            raise ValueError(
                f"x: power means need finite values >= 0; got {xt[idx].item()} at unmasked index {idx}"
            )
    one = torch.ones((), dtype=dtype, device=xt.device)
    x_s = xt if m is None else torch.where(m, xt, one)
    pos = x_s > 0
    # log of the positives only, so that d log / dx = 1/x is never evaluated at 0.
    u = torch.where(pos, torch.log(torch.where(pos, x_s, one)), torch.full((), -math.inf, dtype=dtype, device=xt.device))
    pr = prepare(u, p, dim, weights, m, keepdim, check, name="x")
    log_m = log_power_mean_value(pr)
    out = torch.exp(log_m)
    is_inf = torch.isinf(pr.p)
    if pr.n > 0 and (pr.p_float is not None and math.isinf(pr.p_float) or pr.p_float is None and pr.maybe(is_inf)):
        # M_{+-inf} is an entry of x: return it exactly (exp(log x) can be 1 ulp off),
        # keeping the gradient of the log path.
        x_last = xt.detach().movedim(pr.dim, -1)
        sup = pr.valid if pr.valid is not None else torch.ones_like(x_last, dtype=torch.bool)
        hi = torch.where(sup, x_last, -_INF).amax(-1)
        lo = torch.where(sup, x_last, _INF).amin(-1)
        exact = torch.where(pr.p > 0, hi, lo)
        out = torch.where(is_inf & ~pr.empty, out + (exact - out).detach(), out)
    if xt.requires_grad and (not check or bool(pr.has_zero.any())):
        out = out + _zero_entry_grad(xt.movedim(pr.dim, -1), pr, log_m)
    return answer(pr.finish(out), kind)


def _zero_entry_grad(x: torch.Tensor, pr: Prepared, log_m: torch.Tensor) -> torch.Tensor:
    """A term of value 0 whose gradient is dM/dx_i = w_i x_i^(p-1) M^(1-p) at zeros, 0 < p <= 1.

    The log path cannot carry it (its sensitivity there is exactly 0, and 0 * inf is NaN).
    For p > 1 the derivative at 0 is 0, which the log path already gives.
    """
    p = pr.p.detach()
    active = (p > 0) & (p <= 1) & torch.isfinite(log_m).detach()
    p_a = torch.where(active, p, torch.ones_like(p)).unsqueeze(-1)
    coef = pr.w.detach() * torch.exp((1 - p_a) * torch.where(active, log_m, torch.zeros_like(log_m)).detach().unsqueeze(-1))
    xz = torch.where(pr.is_zero & active.unsqueeze(-1), x, torch.zeros_like(x))
    # 0**p = 0 for p > 0, so every term is exactly 0; the gradient p 0^(p-1) / p is the limit above.
    terms = torch.where(pr.is_zero & active.unsqueeze(-1), coef * torch.pow(xz, p_a) / p_a, torch.zeros_like(x))
    return terms.sum(dim=-1)


def arithmetic_mean(x: Any, dim: int = -1, *, weights: Any = None, mask: Any = None, keepdim: bool = False, check: bool = True) -> Any:
    r"""Weighted arithmetic mean :math:`A = \sum_i w_i x_i` (the power mean with p = 1)."""
    return power_mean(x, 1.0, dim, weights=weights, mask=mask, keepdim=keepdim, check=check)


def geometric_mean(x: Any, dim: int = -1, *, weights: Any = None, mask: Any = None, keepdim: bool = False, check: bool = True) -> Any:
    r"""Weighted geometric mean :math:`G = \prod_i x_i^{w_i}` (the power mean with p = 0)."""
    return power_mean(x, 0.0, dim, weights=weights, mask=mask, keepdim=keepdim, check=check)


def harmonic_mean(x: Any, dim: int = -1, *, weights: Any = None, mask: Any = None, keepdim: bool = False, check: bool = True) -> Any:
    r"""Weighted harmonic mean :math:`H = 1/\sum_i (w_i/x_i)` (the power mean with p = -1)."""
    return power_mean(x, -1.0, dim, weights=weights, mask=mask, keepdim=keepdim, check=check)


def mean_weights(
    log_x: Any,
    p: Any,
    dim: int = -1,
    *,
    weights: Any = None,
    mask: Any = None,
    check: bool = True,
) -> Any:
    r"""Sensitivities :math:`\pi = \partial \log M_p / \partial \log x = \operatorname{softmax}(p \log x + \log w)`.

    Same shape as ``log_x``; 0 outside the support. Limits: ``p = 0`` gives ``w``;
    ``p = +-inf`` gives ``w`` restricted to the argmax/argmin set. For a row whose value
    is 0 because of a zero entry with ``p < 0``, the limit puts all mass on the zeros
    (``softmax`` of ``+inf`` logits), although autograd reports 0 there (see module doc).
    An empty row gives zeros. Reference: the gradient of log-sum-exp (Boyd and
    Vandenberghe, *Convex Optimization*, 2004, sec. 3.1.5).
    """
    pr = prepare(log_x, p, dim, weights, mask, False, check)
    if pr.n == 0:
        return answer(pr.finish(torch.zeros_like(pr.u), per_entry=True), pr.kind)
    graph = _wants_graph(pr)
    with torch.set_grad_enabled(graph):
        fwd = evaluate(pr, pr.u, pr.p, _logw(pr, graph), graph=graph)
        pi = weights_at_zeros(fwd, pr, pr.p, grad_u(fwd, pr, pr.p, torch.ones_like(pr.p)))
    return answer(pr.finish(pi, per_entry=True), pr.kind)


def _wants_graph(pr: Prepared) -> bool:
    """Whether the closed forms must be built with a graph: grad mode is on and an input
    requires grad. Otherwise they are built without one (and in place where cheaper)."""
    wanted = pr.u.requires_grad or pr.p.requires_grad or pr.log_weights is not None
    return torch.is_grad_enabled() and wanted


def _logw(pr: Prepared, graph: bool) -> torch.Tensor | None:
    """The normalised log-weights, with their graph when the weights require grad and one is built."""
    return normalised(pr.log_weights) if graph and pr.log_weights is not None else pr.logw


def dlog_power_mean_dp(
    log_x: Any,
    p: Any,
    dim: int = -1,
    *,
    weights: Any = None,
    mask: Any = None,
    keepdim: bool = False,
    check: bool = True,
) -> Any:
    r"""Derivative in the exponent: :math:`\partial \log M_p / \partial p = \mathrm{KL}(\pi_p \,\|\, w) / p^2 \ge 0`.

    With :math:`\pi_p = \operatorname{softmax}(p u + \log w)`. The textbook form
    :math:`(\mathbb{E}_{\pi_p}[u] - \log M_p)/p` cancels catastrophically as ``p -> 0``;
    here the divergence is summed as :math:`\sum_i w_i \varphi(\log(\pi_i/w_i))` with
    :math:`\varphi(r) = r e^r - e^r + 1 \ge 0` (no cancellation), and for
    ``|p| spread <= SERIES_THRESHOLD`` the derivative of the cumulant series
    :math:`\kappa_2/2 + \kappa_3 p/3 + \kappa_4 p^2/8 + \dots` is used, whose value at
    ``p = 0`` is :math:`\operatorname{Var}_w(u)/2`. It is 0 at ``p = +-inf``, for rows that
    are 0 because of a zero entry with ``p <= 0``, and for empty rows.
    Reference: Hardy, Littlewood, Polya, *Inequalities* (1934), thm. 16 (monotonicity).
    """
    pr = prepare(log_x, p, dim, weights, mask, keepdim, check)
    if pr.n == 0:  # empty rows: 0, as for a row whose entries are all masked
        return answer(pr.finish(torch.zeros_like(pr.p)), pr.kind)
    graph = _wants_graph(pr)
    with torch.set_grad_enabled(graph):
        fwd = evaluate(pr, pr.u, pr.p, _logw(pr, graph), p_grad=True, graph=graph)
        dp = grad_p(fwd, pr, pr.u, pr.p, torch.ones_like(pr.p))
    return answer(pr.finish(dp), pr.kind)

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

* ``p = 0``, or ``q <= SERIES_THRESHOLD`` (1e-6): the cumulant series through
  :math:`\kappa_4`; the first omitted term is below ``spread * q^4 / 120``, far below an ulp.
* ``|p| >= 1/2``: ``log M = m + log(sum w e^z) / p``. The sum is at least the weight of
  the maximum, so its logarithm has an absolute error of a few ulps, and dividing by
  ``|p| >= 1/2`` at most doubles it.
* ``0 < |p| < 1/2``: ``log M = m + log1p(s) / p`` with ``s = sum w expm1(z)``. All terms of
  ``s`` have one sign, so ``s`` and hence ``log M - m`` keep a relative accuracy of a few
  ulps however small ``p`` is (the reason the naive form fails). When ``1 + s < 0.05``
  (then ``q > 3``) the logarithm is instead taken of ``sum w e^z`` computed directly.
* ``p = +-inf``: the max/min over the support, with ties split by weight.

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
used. With ``create_graph=True`` the backward is built from differentiable operations, so
second derivatives (``gradgradcheck``) are exact too.

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

from meantheory._inputs import (
    Kind,
    answer,
    broadcast_to,
    check_p_scalar,
    compute_dtype,
    first_index,
    kind_of,
    normalize_dim,
    to_mask,
    to_tensor,
)

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

#: ``|p| * spread(log x)`` at or below which the cumulant series is used.
SERIES_THRESHOLD = 1e-6

# |p| at or above which the plain exp/log form is used (its log error is divided by |p|).
_EXP_FORM_P = 0.5
# The log1p form is used while 1 + sum w expm1(z) >= this; below it the direct sum.
_LOG1P_MIN = 0.05
# Series orders: the forward value (error spread q^4/120 at q <= 1e-6) and the closed
# forms of the slow paths (derivatives lose one order).
_VALUE_SERIES_ORDER = 4
_SERIES_ORDER = 6
# phi(r) = r e^r - expm1(r) by its Taylor series (through r^7) below this |r|; above it the
# direct form, whose cancellation costs at most 2 eps / |r| = 5e-13 relative.
_PHI_SERIES_R = 1e-3
_PHI_TERMS = 7

_INF = math.inf


class _Prepared:
    """Validated inputs with the reduced dimension last, and lazily derived masks.

    ``u`` is the raw log-value tensor (graph-connected; may hold anything outside the
    support), ``valid`` the support (mask and positive weight; None when everything is
    in it), ``logw`` the normalised log-weights (-inf outside the support) or None for
    uniform weights over the support, ``nv`` the support size per row.
    """

    def __init__(self, *, kind: Kind, u: torch.Tensor, valid: torch.Tensor | None, logw: torch.Tensor | None,
                 p: torch.Tensor, p_float: float | None, dim: int, keepdim: bool, check: bool) -> None:
        self.kind = kind
        self.u = u
        self.valid = valid
        self.logw = logw
        self.p = p
        self.p_float = p_float
        self.dim = dim
        self.keepdim = keepdim
        self.check = check
        self._cache: dict[str, Any] = {}

    def _get(self, key: str, fn) -> Any:
        if key not in self._cache:
            with torch.no_grad():
                self._cache[key] = fn()
        return self._cache[key]

    # --- support and weights (no graph) ---
    @property
    def n(self) -> int:
        return self.u.shape[-1]

    @property
    def inv_valid(self) -> torch.Tensor | None:
        return None if self.valid is None else self._get("inv", lambda: ~self.valid)

    @property
    def nv(self) -> torch.Tensor:
        def f():
            if self.valid is None:
                return torch.full(self.u.shape[:-1], float(self.n), dtype=self.u.dtype, device=self.u.device)
            # Summing the bytes is several times faster than a bool sum on a CPU.
            return self.valid.view(torch.uint8).sum(dim=-1, dtype=torch.int32).to(self.u.dtype)
        return self._get("nv", f)

    @property
    def logw_full(self) -> torch.Tensor:
        """Normalised log-weights on every entry (-inf outside the support)."""
        if self.logw is not None:
            return self.logw

        def f():
            lw = -torch.log(self.nv).unsqueeze(-1).expand(self.u.shape)
            if self.valid is None:
                return lw
            return lw.masked_fill(self.inv_valid, -_INF)
        return self._get("logw_full", f)

    @property
    def w(self) -> torch.Tensor:
        return self._get("w", lambda: torch.exp(self.logw_full))

    @property
    def finite(self) -> torch.Tensor:
        def f():
            fin = torch.isfinite(self.u)
            return fin if self.valid is None else fin & self.valid
        return self._get("finite", f)

    @property
    def is_zero(self) -> torch.Tensor:
        def f():
            z = self.u == -_INF
            return z if self.valid is None else z & self.valid
        return self._get("is_zero", f)

    @property
    def has_zero(self) -> torch.Tensor:
        return self._get("has_zero", lambda: self.is_zero.any(dim=-1))

    @property
    def empty(self) -> torch.Tensor:
        return self._get("empty", lambda: self.nv == 0)

    @property
    def no_finite(self) -> torch.Tensor:
        return self._get("no_finite", lambda: ~self.finite.any(dim=-1))

    @property
    def u_max(self) -> torch.Tensor:
        """Max of u over the finite support (-inf if none); detached."""
        return self._get("u_max", lambda: torch.where(self.finite, self.u, -_INF).amax(dim=-1))

    @property
    def u_min(self) -> torch.Tensor:
        return self._get("u_min", lambda: torch.where(self.finite, self.u, _INF).amin(dim=-1))

    @property
    def spread(self) -> torch.Tensor:
        def f():
            d = self.u_max - self.u_min
            return torch.where(self.no_finite, torch.zeros_like(d), d)
        return self._get("spread", f)

    def u_s(self, u: torch.Tensor | None = None) -> torch.Tensor:
        """u on the finite support, 0 elsewhere; differentiable in ``u`` (default: self.u)."""
        u = self.u if u is None else u
        return torch.where(self.finite, u, torch.zeros((), dtype=u.dtype, device=u.device))


def _prepare(
    log_x: Any,
    p: Any,
    dim: int,
    weights: Any,
    mask: Any,
    keepdim: bool,
    check: bool,
    *,
    name: str = "log_x",
) -> _Prepared:
    kind = kind_of(log_x, weights)
    u = to_tensor(log_x, name)
    w_in = None if weights is None else to_tensor(weights, "weights")
    p_float: float | None = None
    if isinstance(p, bool):
        raise ValueError("p: expected a real number or tensor, got a bool")
    if isinstance(p, int | float):
        p_float = float(p)
        check_p_scalar(p_float)
        p_t = None
    else:
        p_t = to_tensor(p, "p")
    dtype = compute_dtype(u.dtype, None if w_in is None else w_in.dtype, None if p_t is None else p_t.dtype)
    if p_float is not None and dtype != torch.float64:
        # p as the arithmetic will see it: every decision (p == 0, |p| >= 1/2) then agrees
        # with it (in float32, 1e-300 is 0: the geometric mean, not NaN from -inf * 0)
        p_float = torch.tensor(p_float, dtype=dtype).item()
    u = u.to(dtype)
    d = normalize_dim(dim, u.ndim)
    shape = u.shape
    device = u.device
    m = to_mask(mask, shape, device)
    valid = m

    logw = None
    if w_in is not None:
        w_b = broadcast_to(w_in.to(device=device, dtype=dtype), shape, "weights", "input")
        if check:
            bad = ~(torch.isfinite(w_b) & (w_b >= 0))
            if valid is not None:
                bad = bad & valid
            if bool(bad.any()):
                idx = first_index(bad)
                raise ValueError(f"weights: must be finite and non-negative; got {w_b[idx].item()} at index {idx}")
        support = w_b > 0
        if valid is not None:
            support = support & valid
        if check:
            some = support.any(dim=d)
            # a row with entries, all of them weighted 0 (a row of length 0 is merely empty)
            had = torch.full_like(some, shape[d] > 0) if valid is None else valid.any(dim=d)
            empty_w = had & ~some
            if bool(empty_w.any()):
                raise ValueError(f"weights: all weights of a row are zero (first such row {first_index(empty_w)})")
        valid = support
        one = torch.ones((), dtype=dtype, device=device)
        lw = torch.where(support, torch.log(torch.where(support, w_b, one)), -_INF)
        norm = torch.logsumexp(lw, dim=d, keepdim=True)
        logw = lw - torch.where(torch.isfinite(norm), norm, torch.zeros_like(norm))

    if check:
        # NaN and +inf are exactly the values that fail u < inf.
        bad = ~(u < _INF)
        if valid is not None:
            bad = bad & valid
        if bool(bad.any()):
            idx = first_index(bad)
            what = "NaN" if torch.isnan(u[idx]) else "+inf"
            raise ValueError(f"{name}: {what} at unmasked index {idx}; only finite values or -inf (a zero) are allowed")

    u = u.movedim(d, -1)
    if valid is not None:
        valid = valid.movedim(d, -1)
    if logw is not None:
        logw = logw.movedim(d, -1)
    reduced = u.shape[:-1]

    if p_t is None:
        p_b = torch.full(reduced, p_float, dtype=dtype, device=device)
    else:
        p_t = p_t.to(device=device, dtype=dtype)
        try:
            p_b = torch.broadcast_to(p_t, reduced)
        except RuntimeError:
            keep_shape = list(shape)
            keep_shape[d] = 1
            try:
                p_b = torch.broadcast_to(p_t, torch.Size(keep_shape)).movedim(d, -1).squeeze(-1)
            except RuntimeError as exc:
                raise ValueError(
                    f"p: shape {tuple(p_t.shape)} does not broadcast to the reduced shape {tuple(reduced)}"
                ) from exc
        if check and bool(torch.isnan(p_b).any()):
            raise ValueError(f"p: NaN at index {first_index(torch.isnan(p_b))}")
    return _Prepared(kind=kind, u=u, valid=valid, logw=logw, p=p_b, p_float=p_float, dim=d, keepdim=keepdim,
                     check=check)


# ----------------------------------------------------------------------------- series


def _cumulants_of(u_s: torch.Tensor, w: torch.Tensor, order: int, m0: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Weighted cumulants k1..k_order of u_s (finite; w = 0 off the support).

    ``m0`` (per row, constant, e.g. the row's max) is subtracted first: the mean of
    ``u - m0`` rounds at the scale of the spread instead of the scale of ``|u|``, which
    keeps tiny variances of large values exact (a mean off by one ulp of ``u`` would add
    its square to the variance).
    """
    if m0 is None:
        k1 = (w * u_s).sum(dim=-1)
        if order == 1:
            return [k1]
        c = u_s - k1.unsqueeze(-1)
    else:
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


def _cumulants(pr: _Prepared, order: int) -> list[torch.Tensor]:
    """Weighted cumulants k1..k_order of u over the finite support (differentiable in u);
    NaN for an empty support."""
    if pr.n == 0:
        return [torch.full(pr.p.shape, math.nan, dtype=pr.u.dtype, device=pr.u.device) for _ in range(order)]
    ks = _cumulants_of(pr.u_s(), pr.w, order, pr.u_max)
    return [torch.where(pr.empty, math.nan, k) for k in ks]


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


def _series_value(ks: list[torch.Tensor], p: torch.Tensor) -> torch.Tensor:
    # log M_p = sum_j k_j p^(j-1) / j!, by Horner from the highest order.
    out = ks[-1] / math.factorial(len(ks))
    for j in range(len(ks) - 1, 0, -1):
        out = out * p + ks[j - 1] / math.factorial(j)
    return out


def _series_dp(ks: list[torch.Tensor], p: torch.Tensor) -> torch.Tensor:
    # d/dp sum_j k_j p^(j-1)/j! = sum_{j>=2} (j-1) k_j p^(j-2) / j!
    n = len(ks)
    out = (n - 1) * ks[-1] / math.factorial(n)
    for j in range(n - 1, 1, -1):
        out = out * p + (j - 1) * ks[j - 1] / math.factorial(j)
    return out


# ------------------------------------------------------------------ forward (no graph)


def _fill(t: torch.Tensor, valid: torch.Tensor | None, value: float) -> torch.Tensor:
    """``t`` on the support, ``value`` off it (``torch.where``: on a CPU about twice as fast as
    ``masked_fill``, and it needs no inverted mask)."""
    return t if valid is None else torch.where(valid, t, value)


def _nonfinite(x: torch.Tensor) -> torch.Tensor:
    """``~isfinite(x)`` in two kernels (``x - x`` is 0 exactly when x is finite, NaN otherwise);
    ``torch.isfinite`` is a composite of four, which shows in the per-call cost of small rows."""
    return (x - x) != 0


def _maybe(pr: _Prepared, flags: torch.Tensor) -> bool:
    """Whether any flag is set. On an accelerator with ``check=False`` asking would cost a
    device synchronisation, so the branch is computed unconditionally instead."""
    if pr.check or flags.device.type == "cpu":
        return bool(flags.any())
    return True


def _row_log_mean_exp(z: torch.Tensor, pr: _Prepared) -> torch.Tensor:
    """log sum_i w_i e^{z_i} for z <= 0 with max 0 on the support (-inf off it)."""
    if pr.logw is None:
        return torch.log(torch.exp(z).sum(dim=-1)) - torch.log(pr.nv)
    return torch.logsumexp(z + pr.logw, dim=-1)


def _row_mean_expm1(z: torch.Tensor, pr: _Prepared) -> torch.Tensor:
    """sum_i w_i expm1(z_i) over the support: log1p of it is log sum w e^z to relative eps."""
    em1 = torch.expm1(z)
    if pr.logw is None:
        if pr.valid is not None:
            em1 = torch.where(pr.valid, em1, 0.0)
        return em1.sum(-1) / pr.nv
    return (em1 * pr.w).sum(-1)


def _extreme_weights(pr: _Prepared, plus: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
    """Weights of the limit p -> +-inf: w restricted to the argmax/argmin set, normalised."""
    u = pr.u if u is None else u
    with torch.no_grad():
        ext = torch.where(plus, pr.u_max, pr.u_min).unsqueeze(-1)
        hit = pr.finite & (u == ext)
        wh = torch.where(hit, pr.w, torch.zeros_like(pr.w))
        tot = wh.sum(dim=-1, keepdim=True)
        return wh / torch.where(tot > 0, tot, torch.ones_like(tot))


def _fast_forward(u: torch.Tensor, p: torch.Tensor, pr: _Prepared) -> tuple[torch.Tensor, dict]:
    """Value of log M_p and what the first-order backward needs (finite p and +-inf rows)."""
    pf = pr.p_float
    valid = pr.valid
    dtype = u.dtype

    if pf is not None and pf == 0.0:
        # Geometric: the weighted mean of u. A zero gives -inf, an empty row 0/0 = NaN.
        u0 = _fill(u, pr.valid, 0.0)
        val = (u0.sum(-1) / pr.nv) if pr.logw is None else (torch.where(pr.valid, u, 0.0) * pr.w).sum(-1)
        if pr.logw is not None and _maybe(pr, pr.empty):
            val = torch.where(pr.empty, math.nan, val)  # no weight to sum: NaN, as 0/0 is without weights
        dead = _nonfinite(val)
        return val, {"kind": "zero", "dead": dead, "any_dead": _maybe(pr, dead)}

    if pf is not None and math.isinf(pf):
        ext = pr.u_max if pf > 0 else pr.u_min
        zero = pr.has_zero if pf < 0 else torch.zeros_like(pr.empty)
        val = torch.where(zero, -_INF, ext)
        val = torch.where(pr.empty, math.nan, val)
        dead = pr.empty | zero | pr.no_finite
        return val, {"kind": "inf", "dead": dead}

    if pf is not None and abs(pf) >= _EXP_FORM_P:
        # One exponential per entry; the support's extreme m shifts every exponent to <= 0.
        uf = _fill(u, pr.valid, -_INF if pf > 0 else _INF)
        m = uf.amax(-1) if pf > 0 else uf.amin(-1)
        dead = _nonfinite(m)  # empty row, all zeros (p > 0), any zero (p < 0)
        # Rows without a finite extreme are rare; on a CPU asking is cheaper than the
        # handful of small kernels that handle them (see _maybe for accelerators).
        any_dead = _maybe(pr, dead)
        m_s = torch.where(dead, 0.0, m) if any_dead else m
        z = (uf - m_s.unsqueeze(-1)).mul_(pf)
        if pf < 0 and any_dead:
            z = z.masked_fill_(dead.unsqueeze(-1), -_INF)
        if pr.logw is None:
            e = torch.exp_(z)
            t = e.sum(-1)
            val = m_s + (torch.log(t) - torch.log(pr.nv)) / pf
        else:
            y = z.add_(pr.logw)
            lse = torch.logsumexp(y, -1)
            val = m_s + lse / pf
        if any_dead:
            val = torch.where(dead, torch.where(pr.empty | torch.isnan(m), math.nan, -_INF), val)
        if pr.logw is None:
            return val, {"kind": "exp", "dead": dead, "any_dead": any_dead, "e": e, "t": t}
        return val, {"kind": "expw", "dead": dead, "any_dead": any_dead, "y": y, "lse": lse}

    if pf is not None:
        return _small_p_forward(u, pf, pr)

    # General: per-row exponents (tensor p).
    u_max = _fill(u, pr.valid, -_INF).amax(-1)  # over the support, zeros included
    u_min = _fill(u, pr.valid, _INF).amin(-1)
    is_inf = torch.isinf(p)
    p_z = torch.where(is_inf, 1.0, p)  # the exponent used for z (0 allowed)
    pos = p_z >= 0
    m = torch.where(pos, u_max, u_min)
    has_zero = u_min == -_INF
    empty = pr.empty
    zero_res = has_zero & (p <= 0) | (u_max == -_INF)
    dead = zero_res | empty | torch.isnan(m)
    m_s = torch.where(torch.isfinite(m), m, 0.0)
    spread = u_max - u_min
    series = ((p.abs() * spread <= SERIES_THRESHOLD) & torch.isfinite(spread) | (p == 0)) & ~is_inf
    shift = ~series & ~is_inf & ~dead
    z = (u - m_s.unsqueeze(-1)) * p_z.unsqueeze(-1)
    if valid is not None:
        z = torch.where(valid, z, -_INF)
    if _maybe(pr, dead | is_inf):
        z = z.masked_fill_((dead | is_inf).unsqueeze(-1), -_INF)
    p_div = torch.where(shift, p, 1.0)
    lse = torch.zeros_like(m_s)
    if _maybe(pr, shift):
        # The p-gradient needs log sum w e^z to a relative accuracy (see _fast_dlogdp):
        # then the log1p form serves every row where it applies.
        big = p.abs() >= _EXP_FORM_P if not p.requires_grad else torch.zeros_like(shift)
        small = shift & ~big
        need_direct = shift & big
        if _maybe(pr, small):
            s = _row_mean_expm1(z, pr)
            ok = s >= _LOG1P_MIN - 1.0
            lse = torch.where(small & ok, torch.log1p(torch.where(ok, s, 0.0)), lse)
            need_direct = need_direct | (small & ~ok)
        if _maybe(pr, need_direct):
            lse = torch.where(need_direct, _row_log_mean_exp(z, pr), lse)
    val = m_s + lse / p_div
    if _maybe(pr, series & ~dead):
        ks = _cumulants_of(torch.where(pr.finite, u, 0.0), pr.w, _VALUE_SERIES_ORDER, u_max)
        v_ser = _series_value(ks, torch.where(series, p, 0.0))
        val = torch.where(series, v_ser, val)
        # log sum w e^z for the backward's softmax. p (log M - m) would multiply the value's
        # rounding by p; here every |z| <= 1e-6, so log1p of the expm1 sum is exact to eps.
        s_ser = _row_mean_expm1(torch.where(series.unsqueeze(-1), z, 0.0), pr)
        lse = torch.where(series, torch.log1p(s_ser), lse)
    val = torch.where(is_inf, torch.where(p > 0, u_max, u_min), val)
    val = torch.where(zero_res, -_INF, val)
    val = torch.where(empty | torch.isnan(m), math.nan, val)
    lse = torch.where(dead | is_inf, 0.0, lse)
    return val.to(dtype), {"kind": "general", "dead": dead, "is_inf": is_inf, "z": z, "lse": lse,
                           "series": series & ~dead, "shift": shift}


def _small_p_forward(u: torch.Tensor, pf: float, pr: _Prepared) -> tuple[torch.Tensor, dict]:
    """0 < |p| < 1/2 given as a Python number: the log1p(sum w expm1(z)) form, the series
    for rows with |p| spread <= SERIES_THRESHOLD, the direct sum where 1 + s < 0.05."""
    valid = pr.valid
    plus = pf > 0
    uf = _fill(u, pr.valid, -_INF if plus else _INF)
    m = uf.amax(-1) if plus else uf.amin(-1)
    dead = ~torch.isfinite(m)  # empty, all zeros (p > 0), a zero (p < 0), NaN
    m_s = torch.where(dead, 0.0, m)
    # Masked entries take the value m: their exponent is 0 and expm1 gives exactly 0.
    uo = u if valid is None else torch.where(valid, u, m_s.unsqueeze(-1))
    other = uo.amin(-1) if plus else uo.amax(-1)
    spread = (m_s - other).abs()  # +inf with a zero (p > 0)
    series = (abs(pf) * spread <= SERIES_THRESHOLD) & ~dead
    z = (uo - m_s.unsqueeze(-1)).mul_(pf)
    if not plus and _maybe(pr, dead):
        z = z.masked_fill_(dead.unsqueeze(-1), 0.0)
    em1 = torch.expm1(z)
    s = em1.sum(-1) / pr.nv if pr.logw is None else (em1 * pr.w).sum(-1)
    ok = s >= _LOG1P_MIN - 1.0
    lse = torch.log1p(torch.where(ok, s, 0.0))
    direct = ~ok & ~dead
    if _maybe(pr, direct):
        e = torch.exp(z)
        if pr.logw is None:
            t = _fill(e, pr.valid, 0.0).sum(-1) / pr.nv
        else:
            t = (e * pr.w).sum(-1)
        lse = torch.where(direct, torch.log(t), lse)
    val = m_s + lse / pf
    if _maybe(pr, series):
        ks = _cumulants_of(torch.where(pr.finite, u, 0.0), pr.w, _VALUE_SERIES_ORDER, m_s)
        v_ser = _series_value(ks, torch.full_like(m_s, pf))
        val = torch.where(series, v_ser, val)
        lse = torch.where(series, pf * (v_ser - m_s), lse)
    val = torch.where(dead, torch.where(pr.empty | torch.isnan(m), math.nan, -_INF), val)
    lse = torch.where(dead, 0.0, lse)
    return val, {"kind": "general", "dead": dead, "is_inf": torch.zeros_like(dead), "z": z, "lse": lse,
                 "fill_inv": True}


def _fast_grad_u(g: torch.Tensor, saved: dict, pr: _Prepared) -> torch.Tensor:
    """g * softmax(p u + log w) from the forward's saved exponentials (first order only)."""
    kind = saved["kind"]
    dead = saved["dead"]
    any_dead = saved.get("any_dead", True)
    if any_dead:
        g = torch.where(dead, 0.0, g)
    if kind == "zero":
        if pr.logw is None:
            out = (g / pr.nv).unsqueeze(-1).expand(pr.u.shape)
            return out.clone() if pr.valid is None else torch.where(pr.valid, out, 0.0)
        return g.unsqueeze(-1) * pr.w
    if kind == "inf":
        return g.unsqueeze(-1) * _extreme_weights(pr, torch.full_like(dead, pr.p_float > 0))
    if kind == "exp":
        t = torch.where(dead, 1.0, saved["t"]) if any_dead else saved["t"]
        return saved["e"] * (g / t).unsqueeze(-1)
    if kind == "expw":
        lse = torch.where(dead, 0.0, saved["lse"]) if any_dead else saved["lse"]
        return torch.exp(saved["y"] - lse.unsqueeze(-1)) * g.unsqueeze(-1)
    raise AssertionError(f"unknown forward kind {kind}")  # pragma: no cover


class _LogPowerMeanFn(torch.autograd.Function):
    """log M_p with a closed-form backward (see the module docstring)."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, p: torch.Tensor, pr: _Prepared) -> torch.Tensor:  # type: ignore[override]
        val, saved = _fast_forward(u, p, pr)
        ctx.pr = pr
        ctx.saved = saved
        ctx.save_for_backward(u, p)
        return val

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        u, p = ctx.saved_tensors
        pr: _Prepared = ctx.pr
        need_u, need_p = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gu = gp = None
        if torch.is_grad_enabled():
            # create_graph: differentiable closed forms, so double backward is exact.
            if need_u:
                # mean_weights' limits at zeros (mass on the zeros) are not the gradient, which
                # is 0 on a row that is 0 because of a zero (p <= 0), as in the first order
                zero_result = (pr.has_zero & ((p <= 0) | pr.no_finite)).unsqueeze(-1)
                gu = torch.where(zero_result, 0.0, g.unsqueeze(-1) * _mean_weights_core(pr, u, p))
            if need_p:
                gp = g * _dlogdp_core(pr, u, p)
            return gu, gp, None
        if need_u:
            gu = _fast_grad_u_full(g, ctx.saved, pr)
        if need_p:
            gp = g * _fast_dlogdp(ctx.saved, pr, u, p)
        return gu, gp, None


def _fast_dlogdp(saved: dict, pr: _Prepared, u: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """KL(pi || w) / p^2 from the forward's exponents z and log sum w e^z (first order)."""
    if saved["kind"] != "general":  # a Python-number p never requires grad
        return _dlogdp_core(pr, u, p)
    series, shift = saved["series"], saved["shift"]
    out = torch.zeros_like(p)
    if _maybe(pr, shift):
        r = saved["z"] - saved["lse"].unsqueeze(-1)
        kl = (_phi_fast(r) * pr.w).sum(-1)
        p_sh = torch.where(shift, p, 1.0)
        out = torch.where(shift, kl / (p_sh * p_sh), out)
    if _maybe(pr, series):
        ks = _cumulants_of(torch.where(pr.finite, u, 0.0), pr.w, _SERIES_ORDER, pr.u_max)
        out = torch.where(series, _series_dp(ks, torch.where(series, p, 0.0)), out)
    return out


def _fast_grad_u_full(g: torch.Tensor, saved: dict, pr: _Prepared) -> torch.Tensor:
    if saved["kind"] != "general":
        return _fast_grad_u(g, saved, pr)
    dead = saved["dead"]
    is_inf = saved["is_inf"]
    g_live = torch.where(dead | is_inf, 0.0, g)
    z, lse = saved["z"], saved["lse"]
    if pr.logw is None:
        # log of the support size; empty rows (dead, gradient 0) must not make inf - inf.
        log_nv = torch.log(torch.where(pr.nv > 0, pr.nv, 1.0))
        pi = torch.exp(z - (lse + log_nv).unsqueeze(-1))
    else:
        pi = torch.exp(z + pr.logw - lse.unsqueeze(-1))
    if saved.get("fill_inv") and pr.valid is not None:
        pi = torch.where(pr.valid, pi, 0.0)
    out = pi.mul_(g_live.unsqueeze(-1))
    if _maybe(pr, is_inf):
        g_inf = torch.where(is_inf & ~dead, g, 0.0)
        ext = _extreme_weights(pr, pr.p > 0)
        out = out + ext * g_inf.unsqueeze(-1)
    return out


# ------------------------------------------------- differentiable closed forms (slow)


def _mean_weights_core(pr: _Prepared, u: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """softmax(p u + log w) with every limit; differentiable in u and p."""
    is_inf = torch.isinf(p)
    p_fin = torch.where(is_inf, torch.zeros_like(p), p)
    m = torch.where(p_fin > 0, pr.u_max, pr.u_min)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    z = p_fin.unsqueeze(-1) * (pr.u_s(u) - m.unsqueeze(-1))
    logits = torch.where(pr.finite, z, -_INF) + pr.logw_full
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    pi = torch.exp(logits - lse)
    if _maybe(pr, is_inf):
        pi = torch.where(is_inf.unsqueeze(-1), _extreme_weights(pr, p > 0), pi)
    # p <= 0 with zeros: all mass on the zeros (p = 0: the weights themselves).
    if _maybe(pr, pr.has_zero):
        w = pr.w
        wz = torch.where(pr.is_zero, w, torch.zeros_like(w))
        tot = wz.sum(-1, keepdim=True)
        wz = wz / torch.where(tot > 0, tot, torch.ones_like(tot))
        pi = torch.where((pr.has_zero & (p < 0)).unsqueeze(-1), wz, pi)
        pi = torch.where((pr.has_zero & (p == 0)).unsqueeze(-1), w, pi)
    return torch.where(pr.empty.unsqueeze(-1), torch.zeros_like(pi), pi)


def _phi(r: torch.Tensor) -> torch.Tensor:
    r"""phi(r) = r e^r - e^r + 1 = sum_{k>=2} (k-1) r^k / k! >= 0, accurate for every finite r."""
    small = r.abs() < _PHI_SERIES_R
    rs = torch.where(small, r, torch.zeros_like(r))
    ser = torch.zeros_like(r)
    for k in range(_PHI_TERMS, 1, -1):
        ser = (ser + (k - 1) / math.factorial(k)) * rs
    ser = ser * rs  # Horner leaves one factor r; the series starts at r^2
    rd = torch.where(small, torch.ones_like(r), r)
    direct = rd * torch.exp(rd) - torch.expm1(rd)
    return torch.where(small, ser, direct)


def _phi_fast(r: torch.Tensor) -> torch.Tensor:
    """_phi without building a graph; r = -inf (a zero) gives the limit 1."""
    fin = torch.isfinite(r)
    rd = torch.where(fin, r, 0.0)
    out = rd * torch.exp(rd) - torch.expm1(rd)
    out = out.masked_fill_(~fin, 1.0)
    small = (rd.abs() < _PHI_SERIES_R) & fin  # r = -inf (a zero) keeps its limit 1
    if small.device.type == "cpu":
        if bool(small.any()):
            out[small] = _phi(rd[small])
        return out
    return torch.where(small, _phi(rd), out)


def _dlogdp_core(pr: _Prepared, u: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """KL(pi || w) / p^2 (series near 0); differentiable in u and p."""
    is_inf = torch.isinf(p)
    zero = torch.zeros_like(p)
    one = torch.ones_like(p)
    use_series = ((p.abs() * pr.spread <= SERIES_THRESHOLD) & ~pr.has_zero & ~is_inf) | (p == 0)
    u_s = pr.u_s(u)
    w = pr.w
    out = zero
    if bool(use_series.any()):
        ks = _cumulants_of(u_s, w, _SERIES_ORDER, pr.u_max)
        out = _series_dp(ks, torch.where(use_series, p, zero))
    use_shift = ~use_series & ~is_inf
    if bool(use_shift.any()):
        p_sh = torch.where(use_shift, p, one)
        m = torch.where(p_sh > 0, pr.u_max, pr.u_min)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        z = torch.where(pr.finite, p_sh.unsqueeze(-1) * (u_s - m.unsqueeze(-1)), -_INF)
        s = (w * torch.expm1(z)).sum(dim=-1)
        ok = s >= _LOG1P_MIN - 1.0
        lse_a = torch.log1p(torch.where(ok, s, zero))
        logits = z + pr.logw_full
        lse_b = torch.logsumexp(logits, dim=-1)
        lse_b = torch.where(torch.isfinite(lse_b), lse_b, zero)
        lse = torch.where(ok, lse_a, lse_b)
        r = z - lse.unsqueeze(-1)
        r_f = torch.where(pr.finite, r, torch.zeros_like(r))
        # Zeros (r = -inf) contribute phi(-inf) = 1; entries off the support have w = 0.
        phi = torch.where(pr.finite, _phi(r_f), torch.ones_like(r))
        kl = (w * phi).sum(dim=-1)
        out = torch.where(use_shift, kl / (p_sh * p_sh), out)
    out = torch.where(is_inf, zero, out)
    zero_result = pr.has_zero & ((p <= 0) | pr.no_finite)
    return torch.where(zero_result | pr.empty, zero, out)


# ------------------------------------------- differentiable value (weights with grad)


def _value_autograd(pr: _Prepared) -> torch.Tensor:
    """log M_p by plain autograd-tracked operations; used when the weights require grad."""
    p = pr.p
    u_s = pr.u_s()
    w = torch.exp(pr.logw_full)
    logw = pr.logw_full
    is_inf = torch.isinf(p)
    zero = torch.zeros((), dtype=p.dtype, device=p.device)
    one = torch.ones((), dtype=p.dtype, device=p.device)
    # A wider series region here: autograd differentiates the value, and the expm1 form's
    # p-derivative cancels for small q (order 6 keeps the value exact to q^6 / 5040).
    use_series = ((p.abs() * pr.spread <= 1e-3) & ~pr.has_zero & ~is_inf) | (p == 0)
    ks = _cumulants_of(u_s, w, _SERIES_ORDER, pr.u_max)
    val = _series_value(ks, torch.where(use_series, p, zero))
    use_shift = ~use_series & ~is_inf
    p_sh = torch.where(use_shift, p, one)
    m = torch.where(p_sh > 0, pr.u_max, pr.u_min)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    z = torch.where(pr.finite, p_sh.unsqueeze(-1) * (u_s - m.unsqueeze(-1)), -_INF)
    s = (w * torch.expm1(z)).sum(dim=-1)
    ok = s > -0.5
    lse = torch.where(ok, torch.log1p(torch.where(ok, s, zero)), torch.logsumexp(z + logw, dim=-1))
    val = torch.where(use_shift, m + lse / p_sh, val)
    if bool(is_inf.any()):
        plus = p > 0
        ext = torch.where(plus, pr.u_max, pr.u_min)
        pi = _extreme_weights(pr, plus)
        v_inf = ext + (pi * (u_s - u_s.detach())).sum(dim=-1)
        val = torch.where(is_inf, v_inf, val)
    zero_result = pr.has_zero & ((p <= 0) | pr.no_finite)
    val = torch.where(zero_result, -_INF, val)
    return torch.where(pr.empty, math.nan, val)


def _geometric_uniform(pr: _Prepared) -> torch.Tensor:
    """p = 0 (a Python number) with uniform weights: the mean of u over the support, by plain
    autograd operations. Their gradient, 1/n on the support, is already the closed form and
    their second derivative (0) is exact, so the custom function would add only its per-call
    cost (a third of the whole at B = 64, T = 1024 on a CPU; benchmarks/bench_losses.py).
    A row whose value is not finite (a zero, an empty row) gets zero gradient, as elsewhere."""
    val = _fill(pr.u, pr.valid, 0.0).sum(-1) / pr.nv
    with torch.no_grad():
        dead = _nonfinite(val)
    if _maybe(pr, dead):
        val = torch.where(dead, val.detach(), val)
    return val


def _zero_length(pr: _Prepared) -> torch.Tensor:
    """A reduced dimension of length 0: every row is empty, NaN with zero gradient. The sums
    over nothing (0) tie the value to the inputs, so that their gradients are zeros."""
    val = torch.full(pr.p.shape, math.nan, dtype=pr.u.dtype, device=pr.u.device)
    val = val + 0 * pr.u.sum(-1) + 0 * pr.p
    return val if pr.logw is None else val + 0 * pr.logw.sum(-1)


def _value(pr: _Prepared) -> torch.Tensor:
    if pr.n == 0:
        return _zero_length(pr)
    if pr.logw is not None and pr.logw.requires_grad:
        return _value_autograd(pr)
    if pr.p_float == 0.0 and pr.logw is None:
        return _geometric_uniform(pr)
    logw = pr.logw
    if logw is not None:
        pr.logw = logw.detach()
    return _LogPowerMeanFn.apply(pr.u, pr.p, pr)


def _finish(out: torch.Tensor, pr: _Prepared, *, per_entry: bool = False) -> torch.Tensor:
    if per_entry:
        return out.movedim(-1, pr.dim)
    if pr.keepdim:
        out = out.unsqueeze(pr.dim)
    return out


# ----------------------------------------------------------------------------- public


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
    pr = _prepare(log_x, p, dim, weights, mask, keepdim, check)
    return answer(_finish(_value(pr), pr), pr.kind)


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
    pr = _prepare(u, p, dim, weights, m, keepdim, check, name="x")
    log_m = _value(pr)
    out = torch.exp(log_m)
    is_inf = torch.isinf(pr.p)
    if pr.n > 0 and (pr.p_float is not None and math.isinf(pr.p_float) or pr.p_float is None and _maybe(pr, is_inf)):
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
    return answer(_finish(out, pr), kind)


def _zero_entry_grad(x: torch.Tensor, pr: _Prepared, log_m: torch.Tensor) -> torch.Tensor:
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
    pr = _prepare(log_x, p, dim, weights, mask, False, check)
    if pr.n == 0:
        return answer(_finish(torch.zeros_like(pr.u), pr, per_entry=True), pr.kind)
    pi = _weights_from_forward(pr)
    if pi is None:
        pi = _mean_weights_core(pr, pr.u, pr.p)
    return answer(_finish(pi, pr, per_entry=True), pr.kind)


def _weights_from_forward(pr: _Prepared) -> torch.Tensor | None:
    """The weights as log_power_mean's first-order backward computes them (unit gradient): one
    exponential pass, ``e^z / sum e^z`` (``z = p (u - m) <= 0``), where the differentiable
    closed form takes several times as long (a logsumexp, an exp, and masks for every limit).

    Only where no graph is wanted, for a Python p with ``|p| >= 1/2`` (the one-pass forward), and
    when every row has a finite extreme; otherwise None, and the caller uses the closed form
    (its limits for zeros, empty rows and infinite p)."""
    pf = pr.p_float
    if pf is None or math.isinf(pf) or abs(pf) < _EXP_FORM_P:
        return None
    if torch.is_grad_enabled() and (pr.u.requires_grad or (pr.logw is not None and pr.logw.requires_grad)):
        return None
    with torch.no_grad():
        val, saved = _fast_forward(pr.u, pr.p, pr)
        if saved["any_dead"]:
            return None
        return _fast_grad_u(torch.ones_like(val), saved, pr)


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
    pr = _prepare(log_x, p, dim, weights, mask, keepdim, check)
    if pr.n == 0:  # empty rows: 0, as for a row whose entries are all masked
        return answer(_finish(torch.zeros_like(pr.p), pr), pr.kind)
    return answer(_finish(_dlogdp_core(pr, pr.u, pr.p), pr), pr.kind)

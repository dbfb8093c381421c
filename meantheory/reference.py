r"""mpmath oracles: the ground truth of every accuracy test and benchmark.

Each function works on one row of values at ``dps`` decimal digits (default 60) and
returns an ``mpmath.mpf``; the ``*_rows`` helpers map them over the last axis of an
array and return float64 numpy arrays. The definitions are the textbook ones, evaluated
where they are well conditioned:

* ``p = 0``: ``sum w u``; ``p = +-inf``: max/min over entries with positive weight;
* ``|p| spread(u) < 1e-12``: the cumulant series through ``kappa_12`` (error far below
  ``10^-dps`` relative), since ``(1/p) log sum w e^{p u}`` would need ``dps + |log10 p|``
  digits to survive its own cancellation;
* otherwise ``m + log(sum w exp(p (u - m))) / p`` with ``m`` the max (p > 0) or min (p < 0),
  computed at ``dps + 20`` digits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import mpmath
import numpy as np

__all__ = [
    "DEFAULT_DPS",
    "mp_log_power_mean",
    "mp_power_mean",
    "mp_mean_weights",
    "mp_dlog_power_mean_dp",
    "mp_cumulants",
    "mp_cumulant_series",
    "mp_arithmetic_harmonic",
    "mp_gauss_agm",
    "mp_agm_elliptic",
    "log_power_mean_rows",
    "dlog_power_mean_dp_rows",
    "mean_weights_rows",
]

DEFAULT_DPS = 60
_SERIES_ORDER = 12


def _row(log_x: Sequence[Any], weights: Sequence[Any] | None, mask: Sequence[bool] | None):
    """Support entries (u_i, w_i) with normalised weights, as mpf; -inf kept for zeros."""
    n = len(log_x)
    ws = [1] * n if weights is None else list(weights)
    ms = [True] * n if mask is None else list(mask)
    us, wv = [], []
    for u, w, keep in zip(log_x, ws, ms, strict=True):
        if not keep or w == 0:
            continue
        us.append(mpmath.mpf(u) if math.isfinite(float(u)) else mpmath.mpf("-inf"))
        wv.append(mpmath.mpf(w))
    total = mpmath.fsum(wv)
    return us, [w / total for w in wv]


def mp_cumulants(log_x, order: int, weights=None, mask=None, dps: int = DEFAULT_DPS) -> list[mpmath.mpf]:
    """Weighted cumulants kappa_1..kappa_order of u (finite entries only)."""
    with mpmath.workdps(dps + 20):
        us, ws = _row(log_x, weights, mask)
        # Moments about the first entry first: a constant row then has exactly zero
        # central moments (1/n weights make the mean itself inexact at any precision).
        u0 = us[0] if us else mpmath.mpf(0)
        vs = [u - u0 for u in us]
        d1 = mpmath.fsum(w * v for v, w in zip(vs, ws))
        k1 = u0 + d1
        mu = {1: mpmath.mpf(0)}
        for j in range(2, order + 1):
            mu[j] = mpmath.fsum(w * (v - d1) ** j for v, w in zip(vs, ws))
        ks = [k1]
        for n in range(2, order + 1):
            kn = mu[n]
            for j in range(2, n - 1):
                kn -= math.comb(n - 1, j - 1) * ks[j - 1] * mu[n - j]
            ks.append(kn)
        return [+k for k in ks]


def mp_cumulant_series(log_x, p, order: int, weights=None, mask=None, dps: int = DEFAULT_DPS) -> mpmath.mpf:
    """sum_{j=1}^{order} kappa_j p^(j-1) / j!."""
    with mpmath.workdps(dps + 20):
        ks = mp_cumulants(log_x, order, weights, mask, dps)
        p = mpmath.mpf(p)
        return +mpmath.fsum(k * p ** (j - 1) / mpmath.factorial(j) for j, k in enumerate(ks, start=1))


def mp_log_power_mean(log_x, p, weights=None, mask=None, dps: int = DEFAULT_DPS) -> mpmath.mpf:
    """log M_p of exp(log_x) at ``dps`` digits; NaN for an empty support."""
    with mpmath.workdps(dps + 20):
        us, ws = _row(log_x, weights, mask)
        if not us:
            return mpmath.mpf("nan")
        p = mpmath.mpf(p)
        has_zero = any(mpmath.isinf(u) for u in us)
        fin = [(u, w) for u, w in zip(us, ws) if not mpmath.isinf(u)]
        if has_zero and (p <= 0 or not fin):
            return mpmath.mpf("-inf")
        if mpmath.isinf(p):
            vals = [u for u, _ in fin]
            return max(vals) if p > 0 else min(vals)
        if p == 0:
            return mpmath.fsum(w * u for u, w in fin)
        spread = max(u for u, _ in fin) - min(u for u, _ in fin)
        if not has_zero and abs(p) * spread < mpmath.mpf("1e-12"):
            return mp_cumulant_series(log_x, p, _SERIES_ORDER, weights, mask, dps)
        m = max(u for u, _ in fin) if p > 0 else min(u for u, _ in fin)
        s = mpmath.fsum(w * mpmath.exp(p * (u - m)) for u, w in fin)
        return +(m + mpmath.log(s) / p)


def mp_power_mean(x, p, weights=None, mask=None, dps: int = DEFAULT_DPS) -> mpmath.mpf:
    """M_p(x) for x >= 0."""
    with mpmath.workdps(dps + 20):
        log_x = [mpmath.log(v) if v > 0 else mpmath.mpf("-inf") for v in (mpmath.mpf(v) for v in x)]
        return +mpmath.exp(mp_log_power_mean(log_x, p, weights, mask, dps))


def mp_mean_weights(log_x, p, weights=None, mask=None, dps: int = DEFAULT_DPS) -> list[mpmath.mpf]:
    """softmax(p u + log w) over the full row (0 outside the support), finite p, no zeros."""
    with mpmath.workdps(dps + 20):
        n = len(log_x)
        ws = [1] * n if weights is None else list(weights)
        ms = [True] * n if mask is None else list(mask)
        keep = [bool(k) and w != 0 for k, w in zip(ms, ws)]
        p = mpmath.mpf(p)
        us = [mpmath.mpf(u) if k else None for u, k in zip(log_x, keep)]
        m = max(p * u for u in us if u is not None)
        num = [mpmath.mpf(w) * mpmath.exp(p * u - m) if u is not None else mpmath.mpf(0) for u, w in zip(us, ws)]
        tot = mpmath.fsum(num)
        return [+(v / tot) for v in num]


def mp_dlog_power_mean_dp(log_x, p, weights=None, mask=None, dps: int = DEFAULT_DPS) -> mpmath.mpf:
    """d log M_p / dp = KL(pi_p || w) / p^2; its series near 0; 0 at +-inf."""
    with mpmath.workdps(dps + 20):
        us, ws = _row(log_x, weights, mask)
        p = mpmath.mpf(p)
        if mpmath.isinf(p):
            return mpmath.mpf(0)
        spread = max(us) - min(us)
        if abs(p) * spread < mpmath.mpf("1e-12"):
            ks = mp_cumulants(log_x, _SERIES_ORDER, weights, mask, dps)
            return +mpmath.fsum((j - 1) * k * p ** (j - 2) / mpmath.factorial(j) for j, k in enumerate(ks, start=1) if j >= 2)
        # Extra digits absorb the cancellation of (E_pi u - log M)/p for small p.
        extra = int(max(0, -mpmath.log10(abs(p) * spread))) * 2 + 10
        with mpmath.workdps(dps + 20 + extra):
            lm = mp_log_power_mean(log_x, p, weights, mask, dps + extra)
            m = max(p * u for u in us)
            num = [w * mpmath.exp(p * u - m) for u, w in zip(us, ws)]
            tot = mpmath.fsum(num)
            e_u = mpmath.fsum(v * u for v, u in zip(num, us)) / tot
            return +((e_u - lm) / p)


def mp_arithmetic_harmonic(a, b, steps: int, dps: int = DEFAULT_DPS) -> list[tuple[mpmath.mpf, mpmath.mpf]]:
    """The pairs (a_k, h_k), k = 0..steps, of the arithmetic-harmonic iteration."""
    with mpmath.workdps(dps + 20):
        a, b = mpmath.mpf(a), mpmath.mpf(b)
        out = [(a, b)]
        for _ in range(steps):
            a, b = (a + b) / 2, 2 * a * b / (a + b)
            out.append((a, b))
        return out


def mp_gauss_agm(a, b, dps: int = DEFAULT_DPS) -> mpmath.mpf:
    """Gauss's arithmetic-geometric mean (mpmath.agm)."""
    with mpmath.workdps(dps):
        return mpmath.agm(mpmath.mpf(a), mpmath.mpf(b))


def mp_agm_elliptic(a, b, dps: int = DEFAULT_DPS) -> mpmath.mpf:
    """pi (a + b) / (4 K(k^2)), k = (a - b)/(a + b): Gauss's closed form of agm(a, b)."""
    with mpmath.workdps(dps + 10):
        a, b = mpmath.mpf(a), mpmath.mpf(b)
        k = (a - b) / (a + b)
        return +(mpmath.pi * (a + b) / (4 * mpmath.ellipk(k * k)))


def _rows(fn, log_x, p, weights, mask, dps) -> np.ndarray:
    arr = np.asarray(log_x, dtype=np.float64)
    lead = arr.shape[:-1]
    flat = arr.reshape(-1, arr.shape[-1])
    w = None if weights is None else np.broadcast_to(np.asarray(weights, dtype=np.float64), arr.shape).reshape(flat.shape)
    m = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), arr.shape).reshape(flat.shape)
    ps = np.broadcast_to(np.asarray(p, dtype=np.float64), lead).reshape(-1)
    out = []
    for i, row in enumerate(flat):
        out.append(fn(row.tolist(), float(ps[i]), None if w is None else w[i].tolist(), None if m is None else m[i].tolist(), dps))
    return out, lead


def log_power_mean_rows(log_x, p, weights=None, mask=None, dps: int = DEFAULT_DPS) -> np.ndarray:
    """mp_log_power_mean over the last axis, rounded to float64 (p broadcast per row)."""
    out, lead = _rows(mp_log_power_mean, log_x, p, weights, mask, dps)
    return np.array([float(v) for v in out], dtype=np.float64).reshape(lead)


def dlog_power_mean_dp_rows(log_x, p, weights=None, mask=None, dps: int = DEFAULT_DPS) -> np.ndarray:
    """mp_dlog_power_mean_dp over the last axis, rounded to float64."""
    out, lead = _rows(mp_dlog_power_mean_dp, log_x, p, weights, mask, dps)
    return np.array([float(v) for v in out], dtype=np.float64).reshape(lead)


def mean_weights_rows(log_x, p, weights=None, mask=None, dps: int = DEFAULT_DPS) -> np.ndarray:
    """mp_mean_weights over the last axis, rounded to float64 (same shape as log_x)."""
    out, lead = _rows(mp_mean_weights, log_x, p, weights, mask, dps)
    arr = np.asarray(log_x, dtype=np.float64)
    return np.array([[float(v) for v in row] for row in out], dtype=np.float64).reshape(arr.shape)

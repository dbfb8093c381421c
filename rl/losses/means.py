r"""Sequence importance ratios as means of token ratios, in log space.

For one sequence with token log-ratios :math:`\ell_t = \log \pi_\theta(y_t) - \log \pi_{old}(y_t)`
over its ``n`` unmasked tokens, the sequence ratio of exponent ``p`` is the power mean

.. math::

    \log s_p = \frac1p \log \frac1n \sum_t e^{p \ell_t} \quad (p \ne 0), \qquad
    \log s_0 = \frac1n \sum_t \ell_t \quad \text{(GSPO)},

with sensitivities :math:`\partial \log s_p / \partial \ell_t = \pi_t = \operatorname{softmax}(p\,\ell)_t`
(:func:`meantheory.mean_weights`). ``p = 1`` is the arithmetic mean of the ratios, ``p = -1``
the harmonic mean (HMPO), ``p = 0`` the geometric mean (GSPO; Zheng et al., *Group Sequence
Policy Optimization*, arXiv:2507.18071).

Every exponent is evaluated by meantheory (one implementation of the power mean): a Python
``|p| >= 1/2`` with ``check=False`` (the loss's call) by :func:`meantheory.masked_log_power_mean`,
from the zero-filled log-ratios, the mask as numbers and the counts the loss holds anyway (no
``exp(-inf)`` on padding, whose slow path on a CPU doubled the cost of the exponentials; the
weights' sum of squares, for the ESS metric, from the same exponentials); every other p (any
real including ``+-inf`` and tiny ``|p|``, one p per row, p a tensor that requires grad) by
:func:`meantheory.log_power_mean`. The weights, when asked for, are ``d log_s / d l``: from the
fast path's exponentials, meantheory's closed-form backward when ``l`` carries a graph (no second
exponential pass), else :func:`meantheory.mean_weights`.

The one exception is a Python ``p == 0``: GSPO's masked mean of the token log-ratios, written
out as TRL and verl write it (a sum and a division, not a second algorithm), which can take the
masked row sums the loss already holds (``row_sum``). Through meantheory instead, the whole loss
(forward+backward, B = 64, float32, one CPU thread) cost 1.33x as much at T = 1024 and 1.5-1.6x
at T = 8192 (meantheory's general input handling, a second pass that masks the log-ratios and a
second count of the mask). ``benchmarks/bench_losses.py`` times the loss against TRL; the tests
hold every path to mpmath (``tests/meantheory/test_paths.py``).

Also here: the recursive mean iteration of seed 000 (:func:`rmi_log_ratio`), the
multi-scale mean (:func:`multiscale_log_ratio`), and :func:`sequence_log_ratio`, which picks
one of them (or an adaptive p, :mod:`rl.losses.adaptive`, or PMPO's p per sequence,
:mod:`rl.losses.pmpo`) by name. Every function answers
``(log_s, pi)``: ``log_s`` ``[B]`` differentiable (0 for a row with no unmasked token, and for
every row of a ``[B, 0]`` batch), ``pi`` ``[B, T]`` the detached per-token sensitivities
``d log s / d l`` (rows sum to 1; 0 on padding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

import meantheory
from meantheory import MaskedRows
from rl.losses.adaptive import ADAPTIVE_PS, ADAPTIVE_THRESHOLDS, adaptive_signal, check_ps, check_thresholds, select_p
from rl.losses.pmpo import pmpo_p

__all__ = [
    "PowerRatio",
    "power_log_ratio",
    "power_ratio",
    "rmi_log_ratio",
    "multiscale_log_ratio",
    "sequence_log_ratio",
]


def _counts(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Tokens per row, ``[B, 1]`` (summing the bytes is several times faster than a bool sum on CPU)."""
    return mask.view(torch.uint8).sum(dim=-1, keepdim=True, dtype=torch.int32).to(dtype)


def _no_tokens(l: torch.Tensor, weights: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A ``[B, 0]`` batch: every row is empty; ``log_s = 0`` that still depends on ``l`` (gradient 0)."""
    return l.sum(dim=-1), (torch.zeros_like(l.detach()) if weights else None)


def _masked_mean(
    l: torch.Tensor, mask: torch.Tensor, n: torch.Tensor | None = None, weights: bool = True,
    row_sum: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    n1 = (_counts(mask, l.dtype) if n is None else n.to(l.dtype).reshape(-1, 1)).clamp(min=1.0)
    if row_sum is None:
        row_sum = torch.where(mask, l, 0.0).sum(dim=-1)
    log_s = row_sum / n1.squeeze(-1)
    pi = mask.view(torch.uint8).to(l.dtype).div_(n1) if weights else None
    return log_s, pi


def power_log_ratio(
    l: torch.Tensor,
    mask: torch.Tensor,
    p: Any,
    *,
    check: bool = True,
    n: torch.Tensor | None = None,
    weights: bool = True,
    row_sum: torch.Tensor | None = None,
    rows: MaskedRows | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Log power-mean sequence ratio ``log s_i = log M_p(exp(l_i))`` over each row's unmasked tokens.

    Args:
      l: token log-ratios ``[B, T]`` (float32/float64; padding may hold anything).
      mask: ``[B, T]`` bool, True = token counts.
      p: a Python float (any real, ``+-inf`` included), or a tensor ``[]``/``[B]`` (one p per
        row) which may require grad (learnable p).
      check: forwarded to meantheory (False: no value checks and no device sync; the values on
        the mask must then be finite).
      n: optional token counts per row ``[B]`` (saves recounting the mask).
      weights: False to skip computing ``pi`` (it is then None).
      row_sum: optional ``sum_t m_it l_it`` [B] (differentiable), when the caller holds it: the
        geometric mean (a Python ``p == 0``) is then ``row_sum / n`` without another pass.
      rows: optional :class:`meantheory.MaskedRows` of ``l`` (mask as numbers, counts, the
        zero-filled copy), when the caller holds them: with ``check=False`` and a Python
        ``|p| >= 1/2`` the mean is then :func:`meantheory.masked_log_power_mean` (no ``-inf``
        on padding; see there); built here when not given.

    Returns:
      ``(log_s [B], pi [B, T])`` with ``pi = softmax(p l)`` over each row's tokens, detached;
      a row without tokens answers ``log_s = 0`` (gradient 0) and ``pi = 0``.
    """
    r = power_ratio(l, mask, p, check=check, n=n, weights=weights, row_sum=row_sum, rows=rows)
    return r.log_s, r.pi


@dataclass(frozen=True, eq=False)
class PowerRatio:
    """The power-mean sequence ratio of :func:`power_ratio`: ``log_s`` [B] (differentiable, 0 for a
    row without tokens), ``pi`` [B, T] (detached weights ``d log_s / d l``) when asked for, and
    ``pi_sum_sq`` [B] (``sum_t pi_t^2``, detached) when asked for."""

    log_s: torch.Tensor
    pi: torch.Tensor | None = None
    pi_sum_sq: torch.Tensor | None = None


def power_ratio(
    l: torch.Tensor,
    mask: torch.Tensor,
    p: Any,
    *,
    check: bool = True,
    n: torch.Tensor | None = None,
    weights: bool = True,
    sum_sq: bool = False,
    row_sum: torch.Tensor | None = None,
    rows: MaskedRows | None = None,
) -> PowerRatio:
    """:func:`power_log_ratio` as a record, with ``sum_t pi_t^2`` on request (``sum_sq``): from the
    forward's exponentials on the masked fast path (no ``[B, T]`` weights are formed), else from
    ``pi``. The geometric mean's weights are ``1/n_i``: ``sum pi^2 = 1/n_i`` (0 for an empty row)."""
    B = l.shape[0]
    if l.shape[-1] == 0:
        log_s, pi = _no_tokens(l, weights)
        return PowerRatio(log_s, pi, torch.zeros_like(log_s.detach()) if sum_sq else None)
    if isinstance(p, float | int) and not isinstance(p, bool) and p == 0:
        log_s, pi = _masked_mean(l, mask, n, weights, row_sum)
        sq = None
        if sum_sq:
            cnt = _counts(mask, l.dtype).squeeze(-1) if n is None else n.to(l.dtype).reshape(B)
            sq = torch.where(cnt > 0, 1.0 / cnt.clamp(min=1.0), 0.0)
        return PowerRatio(log_s, pi, sq)
    if not check and meantheory.masked_fast_path(p) and l.dtype in (torch.float32, torch.float64):
        if rows is None:
            rows = meantheory.MaskedRows.of(l, mask)
        rec = meantheory.masked_log_power_mean(l, p, rows)
        # meantheory's NaN for an empty row becomes 0 (no where where the caller knows there is none)
        log_s = rec.value if rows.every_row_nonempty else torch.where(rows.rows_with_support(), rec.value, 0.0)
        return PowerRatio(log_s, rec.weights() if weights else None, rec.sum_sq_weights() if sum_sq else None)
    if isinstance(p, torch.Tensor):
        if not p.requires_grad:
            # One p per row in the loss's dtype (a float64 p must not promote a float32 batch).
            p = p.to(l.dtype)
        if p.ndim == 0:
            p = p.expand(B)
    nonempty = mask.any(dim=-1) if n is None else n.reshape(B) > 0
    raw = meantheory.log_power_mean(l, p, mask=mask, check=check)
    log_s = torch.where(nonempty, raw, 0.0)  # meantheory's NaN for an empty row
    pi = None
    if weights or sum_sq:
        if l.requires_grad and torch.is_grad_enabled():
            # pi = d log_s / d l by definition: meantheory's closed-form backward (one product
            # with the exponentials its forward kept) instead of a second exponential pass. From
            # meantheory's own output (an empty row gets gradient 0 there): one node fewer to run.
            (pi,) = torch.autograd.grad(raw, l, torch.ones_like(raw), retain_graph=True)
        else:
            with torch.no_grad():
                p_det = p.detach() if isinstance(p, torch.Tensor) else p
                pi = meantheory.mean_weights(l.detach(), p_det, mask=mask, check=check)
    sq = torch.linalg.vector_norm(pi, dim=-1).square_() if sum_sq else None
    return PowerRatio(log_s, pi if weights else None, sq)


def rmi_log_ratio(
    l: torch.Tensor, mask: torch.Tensor, steps: int = 5, *, check: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Recursive mean iteration (seed 000, "RMI-PO"): ``k`` arithmetic-harmonic steps from ``(A, H)``.

    With ``a_0 = A(r)``, ``h_0 = H(r)`` the arithmetic and harmonic means of a sequence's
    token ratios, ``a_{k+1} = (a_k + h_k)/2``, ``h_{k+1} = 2 a_k h_k / (a_k + h_k)``, done in
    log space (``log a' = logaddexp(log a, log h) - log 2``, ``log h' = log a + log h - log a'``,
    so nothing is exponentiated). Returns ``log a_k`` as the seed does.

    The product ``a_k h_k = A H`` is invariant and the gap closes quadratically, so
    ``a_k -> sqrt(A H)``: the geometric mean of the *pair* (A, H), **not** the geometric mean
    of the token ratios. They agree only when ``sum_t sinh(l_t - mean l) = 0`` (e.g. log-ratios
    symmetric about their mean); for ratios (1, 1, 4), ``sqrt(A H) = 1.633`` while ``G = 1.587``.
    Reference: Borwein and Borwein, *Pi and the AGM* (1987), ch. 8; ``meantheory.iterations``.

    The weights are ``pi = c_A softmax(l) + c_H softmax(-l)`` with ``(c_A, c_H)`` the
    derivatives of ``log a_k`` in ``(log A, log H)`` (``c_A + c_H = 1``).
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"rmi_steps: expected an int >= 0, got {steps!r}")
    la, pi_a = power_log_ratio(l, mask, 1.0, check=check)
    lh, pi_h = power_log_ratio(l, mask, -1.0, check=check)
    log2 = math.log(2.0)
    with torch.no_grad():
        # Jacobian of (log a_k, log h_k) in (log A, log H), row vectors.
        da = torch.stack([torch.ones_like(la), torch.zeros_like(la)], dim=-1)
        dh = torch.stack([torch.zeros_like(la), torch.ones_like(la)], dim=-1)
    for _ in range(steps):
        lse = torch.logaddexp(la, lh)
        with torch.no_grad():
            sa = torch.exp(la - lse).unsqueeze(-1)  # a / (a + h)
            da, dh = sa * da + (1 - sa) * dh, (1 - sa) * da + sa * dh
        la, lh = lse - log2, la + lh - (lse - log2)
    pi = da[..., :1] * pi_a + da[..., 1:] * pi_h
    return la, pi


def multiscale_log_ratio(
    l: torch.Tensor,
    mask: torch.Tensor,
    p: Any,
    *,
    chunk_size: int,
    chunk_p: float = 0.0,
    check: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Two-scale mean: tokens -> chunks of ``chunk_size`` ("phrases") -> sequence.

    .. math:: \log s = \log M_{p}\big(\{ M_{p_c}(r_{\text{chunk } j}) \}_j;\ w_j \propto n_j\big)

    Each chunk of consecutive positions is reduced with exponent ``chunk_p``; the chunk means
    are reduced with exponent ``p``, weighted by their number of unmasked tokens ``n_j`` so
    that ``chunk_p = p`` = 0 gives exactly the geometric mean of all tokens (GSPO), and
    ``chunk_size = 1`` gives the plain power mean of exponent ``p``. Chunks without tokens are
    left out. ``p`` may be a learnable tensor; ``chunk_p`` is a float. Weights: ``pi_t =
    pi_chunk(j) * pi_token(t | j)``.
    """
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected an int >= 1, got {chunk_size!r}")
    if isinstance(chunk_p, bool) or not isinstance(chunk_p, float | int) or math.isnan(chunk_p):
        raise ValueError(f"chunk_p: expected a real number, got {chunk_p!r}")
    B, T = l.shape
    if T == 0:
        return _no_tokens(l, True)  # type: ignore[return-value]
    C = -(-T // chunk_size)
    pad = C * chunk_size - T
    ls = torch.where(mask, l, torch.zeros((), dtype=l.dtype, device=l.device))
    if pad:
        ls = torch.nn.functional.pad(ls, (0, pad))
        mask = torch.nn.functional.pad(mask, (0, pad), value=False)
    lc = ls.reshape(B * C, chunk_size)
    mc = mask.reshape(B * C, chunk_size)
    v, pi_in = power_log_ratio(lc, mc, float(chunk_p), check=check)
    v = v.reshape(B, C)
    n_c = mc.sum(-1).reshape(B, C).to(l.dtype)
    cmask = n_c > 0
    nonempty = cmask.any(dim=-1)
    weights = torch.where(nonempty.unsqueeze(-1), n_c, torch.ones_like(n_c))
    cm = cmask | ~nonempty.unsqueeze(-1)  # an empty row keeps its (zero) chunks so meantheory sees a support
    log_s = meantheory.log_power_mean(v, p, weights=weights, mask=cm, check=check)
    log_s = torch.where(nonempty, log_s, torch.zeros_like(log_s))
    p_det = p.detach() if isinstance(p, torch.Tensor) else p
    with torch.no_grad():
        pi_out = meantheory.mean_weights(v.detach(), p_det, weights=weights, mask=cm, check=check)
        pi_out = torch.where(nonempty.unsqueeze(-1), pi_out, torch.zeros_like(pi_out))
        pi = (pi_out.unsqueeze(-1) * pi_in.reshape(B, C, chunk_size)).reshape(B, C * chunk_size)[:, :T]
    return log_s, pi


MEANS = ("power", "adaptive", "pmpo", "rmi", "multiscale")


def sequence_log_ratio(
    l: torch.Tensor,
    mask: torch.Tensor,
    p: Any = 0.0,
    *,
    mean: str = "power",
    check: bool = True,
    n: torch.Tensor | None = None,
    weights: bool = True,
    adv_seq: torch.Tensor | None = None,
    log_lo: float = math.log(0.8),
    log_hi: float = math.log(1.2),
    row_sum: torch.Tensor | None = None,
    clip_l: torch.Tensor | None = None,
    rows: MaskedRows | None = None,
    **opts: Any,
) -> tuple[torch.Tensor, torch.Tensor | None, Any, dict[str, torch.Tensor]]:
    """The sequence log-ratio of the chosen mean: ``(log_s [B], pi [B, T], p_in_force, extra)``.

    ``mean="power"``: :func:`power_log_ratio` with exponent ``p``.
    ``mean="adaptive"``: p chosen by :mod:`rl.losses.adaptive` from the signal ``adaptive_signal``
    (thresholds ``adaptive_thresholds``, exponents ``adaptive_ps``; ``adv_seq``, ``log_lo``,
    ``log_hi`` feed the ``"clip"`` signal); ``p`` must be left at 0.
    ``mean="pmpo"``: one p per row in [0, 1] by PMPO's clip-aware ESS rule (:mod:`rl.losses.pmpo`)
    from ``adv_seq``, ``log_lo``, ``log_hi`` and the clip fraction of ``clip_l`` (the unclipped
    log-ratios when ``l`` are GMPO's clipped ones; default ``l``); ``p`` must be left at 0.
    ``mean="rmi"``: :func:`rmi_log_ratio` with ``rmi_steps`` (``p`` must be left at 0; no p in force).
    ``mean="multiscale"``: :func:`multiscale_log_ratio`, ``p`` across chunks of ``chunk_size``
    tokens, ``chunk_p`` within them.
    ``weights=False`` skips ``pi`` where the mean allows it; ``extra`` holds detached
    diagnostics (the adaptive signal); ``row_sum`` and ``rows`` are handed to :func:`power_log_ratio`.
    """
    zero_p = isinstance(p, float | int) and not isinstance(p, bool) and p == 0
    if mean == "power":
        log_s, pi = power_log_ratio(l, mask, p, check=check, n=n, weights=weights, row_sum=row_sum, rows=rows)
        return log_s, pi, p, {}
    if mean == "adaptive":
        if not zero_p:
            raise ValueError("p: mean='adaptive' chooses p itself; leave p at 0.0")
        signal = opts.get("adaptive_signal", "spread")
        thr = opts.get("adaptive_thresholds")
        thr = check_thresholds(ADAPTIVE_THRESHOLDS.get(signal, (0.0, 0.0)) if thr is None else thr)
        ps = check_ps(opts.get("adaptive_ps", ADAPTIVE_PS))
        u = adaptive_signal(l, mask, signal, adv_seq=adv_seq, log_lo=log_lo, log_hi=log_hi)
        p_t = select_p(u, thr, ps)
        log_s, pi = power_log_ratio(l, mask, p_t.expand(l.shape[0]), check=check, n=n, weights=weights)
        return log_s, pi, p_t, {"adaptive_signal": u}
    if mean == "pmpo":
        if not zero_p:
            raise ValueError("p: mean='pmpo' chooses p itself (one per sequence); leave p at 0.0")
        if adv_seq is None:
            raise ValueError("mean='pmpo' needs the sequence advantages (adv_seq): its clip fraction reads their signs")
        p_rows, _ = pmpo_p(l, mask, adv_seq, log_lo, log_hi, clip_l=clip_l)
        log_s, pi = power_log_ratio(l, mask, p_rows, check=check, n=n, weights=weights)
        return log_s, pi, p_rows, {}
    if mean == "rmi":
        if not zero_p:
            raise ValueError("p: mean='rmi' has no exponent (it iterates arithmetic and harmonic means); leave p at 0.0")
        log_s, pi = rmi_log_ratio(l, mask, opts.get("rmi_steps", 5), check=check)
        return log_s, pi, None, {}
    if mean == "multiscale":
        k = opts.get("chunk_size")
        if k is None:
            raise ValueError("chunk_size: mean='multiscale' needs chunk_size (tokens per chunk)")
        log_s, pi = multiscale_log_ratio(l, mask, p, chunk_size=k, chunk_p=opts.get("chunk_p", 0.0), check=check)
        return log_s, pi, p, {}
    raise ValueError(f"mean: unknown mean {mean!r}; expected one of {', '.join(MEANS)}")

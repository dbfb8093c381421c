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

Two evaluation paths, one definition:

* :func:`meantheory.log_power_mean` is the general path (every real p including ``+-inf``,
  p a tensor that requires grad, zeros): used for learnable p and infinite p.
* the hot path for a finite p that does not require grad (a Python float or one p per row):
  ``p = 0`` is the masked mean (exactly the GSPO formula of TRL and verl); ``p != 0`` is a
  fused autograd function with the same log-space algorithm as meantheory (shift by the
  extreme token so every exponent ``p (l_t - m) <= 0``, then ``m + log1p(mean expm1(.)) / p``
  while that mean is above -1/2, ``m + log(mean exp(.)) / p`` otherwise) whose backward is the
  closed form ``grad * softmax(p l)``. It exists because the general path costs 3-7 times
  the GSPO loss in forward+backward (see ``benchmarks/bench_losses.py``); the tests hold it
  to meantheory's value and weights within float rounding. ``|p| < 1e-20`` is treated as 0
  (the difference, ``p Var / 2``, is below 1e-20 times the variance).

Also here: the recursive mean iteration of seed 000 (:func:`rmi_log_ratio`) and the
multi-scale mean (:func:`multiscale_log_ratio`). Every function answers ``(log_s, pi)``:
``log_s`` ``[B]`` differentiable (0 for a row with no unmasked token), ``pi`` ``[B, T]`` the
detached per-token sensitivities ``d log s / d l`` (rows sum to 1; 0 on padding).
"""

from __future__ import annotations

import math
from typing import Any

import torch

import meantheory

__all__ = [
    "P_ZERO_TOL",
    "power_log_ratio",
    "rmi_log_ratio",
    "multiscale_log_ratio",
]

#: ``|p|`` below which the exponent is treated as exactly 0 (geometric mean).
P_ZERO_TOL = 1e-20

_LOG1P_SWITCH = -0.5


def _counts(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Tokens per row, ``[B, 1]`` (summing the bytes is several times faster than a bool sum on CPU)."""
    return mask.view(torch.uint8).sum(dim=-1, keepdim=True, dtype=torch.int32).to(dtype)


def _masked_mean(
    l: torch.Tensor, mask: torch.Tensor, n: torch.Tensor | None = None, weights: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    n1 = (_counts(mask, l.dtype) if n is None else n.to(l.dtype).reshape(-1, 1)).clamp(min=1.0)
    log_s = torch.where(mask, l, 0.0).sum(dim=-1) / n1.squeeze(-1)
    pi = mask.view(torch.uint8).to(l.dtype).div_(n1) if weights else None
    return log_s, pi


class _PowerMeanRows(torch.autograd.Function):
    """log M_p over the unmasked entries of each row, for finite p != 0 without grad.

    Forward: shift by the extreme entry ``m`` (max for p > 0, min for p < 0) so that every
    exponent ``z = p (l - m) <= 0`` and the extreme entry contributes exactly ``e^0 = 1``
    (a row of equal values, or of one token, returns that value bit for bit); ``em = expm1(z)``
    (relative accuracy for the small exponents of a near on-policy batch), ``e = em + 1``
    (exactly 0 on padding, where ``z = -inf``); then ``m + log1p(mean em) / p`` while
    ``mean em > -1/2`` and ``m + log(mean e) / p`` otherwise.
    Backward: ``grad_l = grad * pi`` with ``pi = e / sum e = softmax(p l)``. Rows without an unmasked entry return 0 with zero weights. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx: Any, l: torch.Tensor, mask: torch.Tensor, p: Any, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        # Few, mostly in-place kernels: on a GPU this function is bound by launches, on a CPU by passes.
        if isinstance(p, float):
            pc: Any = p
            if p > 0:
                v = torch.where(mask, l, -math.inf)
                m = v.amax(dim=-1, keepdim=True)
            else:
                v = torch.where(mask, l, math.inf)
                m = v.amin(dim=-1, keepdim=True)
        else:
            pc = p.unsqueeze(-1)
            pos = pc > 0
            v = torch.where(mask, l, torch.where(pos, -math.inf, math.inf))
            m = torch.where(pos, v.amax(dim=-1, keepdim=True), v.amin(dim=-1, keepdim=True))
        m = m.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)  # rows without tokens
        em = v.sub_(m).mul_(pc).expm1_()  # padding: -inf -> -1
        e = em + 1.0  # exactly 0 on padding
        se = e.sum(dim=-1, keepdim=True).clamp_(min=1.0)  # >= 1 on rows with a token
        n1 = n.clamp(min=1.0)
        # Masked, not "sum of all + number of padding entries": that cancels catastrophically
        # when the unmasked sum is tiny (|p| * spread small), exactly where expm1 is needed.
        s = torch.where(mask, em, 0.0).sum(dim=-1, keepdim=True).div_(n1)
        # s >= -1 exactly (each em >= -1 and rounding is monotone), so log1p never sees s < -1.
        log_sum = torch.where(s > _LOG1P_SWITCH, torch.log1p(s), torch.log(se / n1))
        log_s = log_sum.div_(pc).add_(m).squeeze(-1)
        pi = e.div_(se)
        ctx.save_for_backward(pi)
        ctx.mark_non_differentiable(pi)
        ctx.set_materialize_grads(False)
        return log_s, pi

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _grad_pi: Any) -> tuple[Any, ...]:  # type: ignore[override]
        (pi,) = ctx.saved_tensors
        if grad is None:
            return None, None, None, None
        return grad.unsqueeze(-1) * pi, None, None, None


def _is_learnable(p: Any) -> bool:
    return isinstance(p, torch.Tensor) and p.requires_grad


def power_log_ratio(
    l: torch.Tensor,
    mask: torch.Tensor,
    p: Any,
    *,
    check: bool = True,
    n: torch.Tensor | None = None,
    weights: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Log power-mean sequence ratio ``log s_i = log M_p(exp(l_i))`` over each row's unmasked tokens.

    Args:
      l: token log-ratios ``[B, T]`` (float32/float64; padding may hold anything).
      mask: ``[B, T]`` bool, True = token counts.
      p: a Python float (any real, ``+-inf`` included), or a tensor ``[]``/``[B]`` (one p per
        row) which may require grad (learnable p).
      check: forwarded to meantheory on the general path (False: no device sync; a tensor p
        must then be finite, since routing an infinite row to the general path needs a sync).
      n: optional token counts per row ``[B]`` (saves recounting the mask).
      weights: False to skip building ``pi`` where it costs a pass (p = 0); it is then None.

    Returns:
      ``(log_s [B], pi [B, T])`` with ``pi = softmax(p l)`` over each row's tokens, detached.
    """
    B = l.shape[0]
    n = _counts(mask, l.dtype) if n is None else n.to(l.dtype).reshape(B, 1)
    if isinstance(p, float | int) and not isinstance(p, bool):
        pf = float(p)
        if math.isinf(pf):
            return _general(l, mask, pf, check)
        if abs(pf) < P_ZERO_TOL:
            return _masked_mean(l, mask, n, weights)
        return _PowerMeanRows.apply(l, mask, pf, n)
    pt = torch.as_tensor(p, dtype=l.dtype, device=l.device)
    if _is_learnable(pt):
        return _general(l, mask, pt.expand(B) if pt.ndim == 0 else pt, check)
    pt = (pt.expand(B) if pt.ndim == 0 else pt).to(l.dtype)
    if check and bool(torch.isinf(pt).any()):
        return _general(l, mask, pt, check)
    zero = pt.abs() < P_ZERO_TOL
    p_safe = torch.where(zero, torch.ones_like(pt), pt)
    log_pow, pi_pow = _PowerMeanRows.apply(l, mask, p_safe, n)
    log_mean, pi_mean = _masked_mean(l, mask, n)
    return torch.where(zero, log_mean, log_pow), torch.where(zero.unsqueeze(-1), pi_mean, pi_pow)


def _general(l: torch.Tensor, mask: torch.Tensor, p: Any, check: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """meantheory's general path: every real p, p requiring grad; empty rows answer 0."""
    ls = torch.where(mask, l, torch.zeros((), dtype=l.dtype, device=l.device))
    nonempty = mask.any(dim=-1)
    log_s = meantheory.log_power_mean(ls, p, mask=mask, check=check)
    log_s = torch.where(nonempty, log_s, torch.zeros_like(log_s))
    p_det = p.detach() if isinstance(p, torch.Tensor) else p
    with torch.no_grad():
        pi = meantheory.mean_weights(ls.detach(), p_det, mask=mask, check=check)
    return log_s, pi


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

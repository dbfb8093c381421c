"""log M_p as an autograd-aware value: the kernel's forward record and the closed-form
backward, joined by one autograd function.

* a Python ``p = 0`` is the weighted mean of ``u``, in plain autograd operations: their
  gradient (``w``, and ``w (u - log G)`` for learned weights) is already the closed form and
  their second derivative (0) exact, so the autograd function would add only its per-call
  cost (a third of the whole at B = 64, T = 1024 on a CPU; benchmarks/bench_losses.py);
* a reduced dimension of length 0 is an empty row: NaN, zero gradients;
* everything else goes through :class:`_PowerMeanFn`: the forward keeps the record
  (:func:`meantheory._kernel.evaluate`), the first-order backward reads it; a backward that
  builds a graph (``create_graph=True``) runs the same forward again with a graph from the
  saved inputs, so that the closed forms are differentiable and double backward is exact.
"""

from __future__ import annotations

import math

import torch

from meantheory._closed_forms import grad_log_weights, grad_p, grad_u
from meantheory._kernel import evaluate
from meantheory._prepared import Prepared, fill, nonfinite, normalised

__all__ = ["log_power_mean_value"]


def log_power_mean_value(pr: Prepared) -> torch.Tensor:
    """log M_p of every row of ``pr``, differentiable in log_x, p and the weights."""
    if pr.n == 0:
        return _zero_length(pr)
    if pr.p_float == 0.0:
        return _geometric(pr)
    return _PowerMeanFn.apply(pr.u, pr.p, pr.log_weights, pr)


def _zero_length(pr: Prepared) -> torch.Tensor:
    """A reduced dimension of length 0: every row is empty, NaN with zero gradient. The sums
    over nothing (0) tie the value to the inputs, so that their gradients are zeros."""
    val = torch.full(pr.p.shape, math.nan, dtype=pr.u.dtype, device=pr.u.device)
    val = val + 0 * pr.u.sum(-1) + 0 * pr.p
    return val if pr.log_weights is None else val + 0 * pr.log_weights.sum(-1)


def _geometric(pr: Prepared) -> torch.Tensor:
    """p = 0 (a Python number): the weighted mean of u over the support. A zero gives -inf,
    an empty row NaN; a row whose value is not finite gets zero gradient, as elsewhere."""
    if pr.log_weights is not None:
        # Learned weights: d/d log w_i = w_i (u_i - log G) through the normalisation. Zeros
        # are masked before the product, whose gradient would be 0 * -inf otherwise.
        w = torch.exp(normalised(pr.log_weights))
        val = (pr.u_s() * w).sum(-1)
        if pr.maybe(pr.has_zero):
            val = torch.where(pr.has_zero, -math.inf, val)
    elif pr.logw is None:
        val = fill(pr.u, pr.valid, 0.0).sum(-1) / pr.nv
    else:
        val = (fill(pr.u, pr.valid, 0.0) * pr.w).sum(-1)
    if pr.logw is not None and pr.maybe(pr.empty):
        val = torch.where(pr.empty, math.nan, val)  # no weight to sum: NaN, as 0/0 is without weights
    with torch.no_grad():
        dead = nonfinite(val)
    if pr.maybe(dead):
        val = torch.where(dead, val.detach(), val)
    return val


class _PowerMeanFn(torch.autograd.Function):
    """log M_p with the closed-form backward (meantheory._closed_forms)."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, p: torch.Tensor, log_weights: torch.Tensor | None,  # type: ignore[override]
                pr: Prepared) -> torch.Tensor:
        fwd = evaluate(pr, u, p, pr.logw, p_grad=ctx.needs_input_grad[1])
        ctx.pr = pr
        ctx.fwd = fwd
        ctx.save_for_backward(u, p, log_weights)
        # The record keeps its own value: ctx must not hold the output (a reference cycle
        # through the graph that the garbage collector cannot see).
        return fwd.value.clone()

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        u, p, log_weights = ctx.saved_tensors
        pr: Prepared = ctx.pr
        need_u, need_p, need_w = ctx.needs_input_grad[:3]
        fwd = ctx.fwd
        if torch.is_grad_enabled():
            # create_graph: the same forward with a graph, so the closed forms below are
            # differentiable and double backward is exact.
            logw = pr.logw if log_weights is None else normalised(log_weights)
            fwd = evaluate(pr, u, p, logw, p_grad=need_p, graph=True)
        gu = grad_u(fwd, pr, p, g) if need_u else None
        gp = grad_p(fwd, pr, u, p, g) if need_p else None
        gw = grad_log_weights(fwd, pr, u, p, g) if need_w else None
        return gu, gp, gw, None

r"""``chunked_policy_loss``: the policy loss from last hidden states, without the ``[B, T, V]`` logits.

At language-model scale the memory of a policy loss is its logits: ``hidden @ weight.T`` is
``[B, T, V]``, and log-softmax and its backward keep two or three tensors of that size alive.
Here the log-probabilities of the sampled tokens are computed ``chunk_size`` token rows at a time,

.. math:: z = h W^\top / \tau \,(+\, b / \tau), \qquad
          \log \pi(y_t) = z_{t, y_t} - \operatorname{logsumexp}_v z_{t, v}, \qquad
          H_t = \operatorname{logsumexp}_v z_{t,v} - \textstyle\sum_v \pi_v z_{t,v},

so at most one chunk of logits exists at any time; then :func:`rl.losses.policy_loss` runs on
the ``[B, T]`` log-probabilities as it would on materialised ones. Every level, every p, KL to a
reference and the entropy bonus therefore have exactly the unfused semantics: the sequence
statistics (power mean, its softmax weights, clipping) are computed by ``policy_loss`` itself.

Why the backward recomputes the logits. For sequence-level p != 0 the gradient of token t is
``-A s pi_t`` with ``pi = softmax(p log r)`` over the *whole* sequence, so ``d loss / d logp`` is
not known until every token of the sequence has its log-prob, i.e. not while a chunk's logits are
in hand (Liger-Kernel can fold the gradient into the forward only because its loss decomposes
over tokens). The forward therefore keeps only two floats per token (``logsumexp``, and the
entropy when asked), and the backward, given ``g = d loss / d logp`` and ``g_H = d loss / d H``,
recomputes each chunk's logits once (one extra ``[C, H] x [H, V]`` product per chunk; rows whose
upstream gradient is exactly 0, such as clipped or zero-advantage sequences, are skipped) and forms

.. math:: \frac{\partial L}{\partial z_{tv}} = g_t (1[v = y_t] - \pi_{tv})
          - g^H_t \pi_{tv} (\log \pi_{tv} + H_t),

then ``d h = (dL/dz) W / tau``, ``d W = (dL/dz)^T h / tau``, ``d b = sum_t dL/dz / tau``. The time
cost is that fourth product (forward + recompute + two gradient products, against three for the
unfused path); the memory is ``O(chunk_size * V)`` instead of ``O(B T V)``.

Rows: the ``B * T`` positions are flattened; positions where ``mask`` is False are skipped (their
token id may be anything, even out of range; their log-prob and entropy are 0 and receive no
gradient). Dtypes: ``hidden``, ``weight`` and ``bias`` share one dtype; in float16/bfloat16 the
products are taken in that dtype (as the unfused ``hidden @ weight.T`` would be), then everything
from the logits on, and the accumulation of ``d W`` and ``d b`` over chunks, is float32; the
log-probs come out float32 (float64 for float64 input).

References: Liger-Kernel's fused linear losses (Hsu et al., arXiv:2410.10989) chunk the same way;
TRL's ``ChunkedLogProbFunction`` tiles tokens and vocabulary for per-token log-probs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from meantheory._inputs import _LOW_PRECISION, first_index
from rl.losses.config import CALL_TENSORS, LossConfig
from rl.losses.policy import policy_loss

__all__ = ["chunked_logprobs", "chunked_policy_loss", "default_chunk_size"]

#: policy_loss's keyword options beyond the positional tensors and the window (LossConfig's
#: fields, and the per-call tensors)
_OPTIONS = {f.name for f in dataclasses.fields(LossConfig) if f.init} - {"level", "p", "eps_low", "eps_high", "agg"} \
    | set(CALL_TENSORS)

#: Elements of one chunk's float32 logits when ``chunk_size`` is left to us: 2**25 floats = 128 MiB,
#: a few of which (logits, their exponentials, the gradient) are alive at once.
_CHUNK_ELEMENTS = 2**25


def default_chunk_size(vocab_size: int) -> int:
    """Rows per chunk when none is given: ``max(1, 2**25 // V)`` (1024 rows for V = 32768)."""
    return max(1, _CHUNK_ELEMENTS // max(int(vocab_size), 1))


def _logits_into(buf: torch.Tensor, lp_buf: torch.Tensor | None, h: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None, inv_t: float) -> torch.Tensor:
    """One chunk's ``(h W^T + b) / tau`` written into ``buf[:C]`` (float32, or float64 for float64 input).

    The chunk buffers are allocated once per call and reused: on CPU every fresh ``[C, V]`` tensor is
    a fresh mapping whose pages fault in on first touch, a cost the size of an elementwise pass.
    For float16/bfloat16 input the product is taken in that dtype into ``lp_buf``, then widened.
    """
    c = h.shape[0]
    z = buf[:c]
    if lp_buf is not None:
        z.copy_(torch.mm(h, weight.t(), out=lp_buf[:c]))
        if bias is not None:
            z.add_(bias)
        if inv_t != 1.0:
            z.mul_(inv_t)
    elif bias is not None:
        torch.addmm(bias, h, weight.t(), beta=inv_t, alpha=inv_t, out=z)
    else:
        torch.mm(h, weight.t(), out=z)
        if inv_t != 1.0:
            z.mul_(inv_t)
    return z


def _chunk_buffers(hidden: torch.Tensor, weight: torch.Tensor, rows: int, n_float: int,
                   dtype: torch.dtype) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """``n_float`` reusable ``[rows, V]`` buffers in ``dtype``, and one in the input dtype when it is low precision."""
    shape = (rows, weight.shape[0])
    bufs = [torch.empty(shape, dtype=dtype, device=hidden.device) for _ in range(n_float)]
    lp = torch.empty(shape, dtype=hidden.dtype, device=hidden.device) if hidden.dtype in _LOW_PRECISION else None
    return bufs, lp


class _ChunkedTokenLogProb(torch.autograd.Function):
    """(hidden [N_all, H], weight [V, H], bias [V] | None) -> (logp [N_all], entropy [N_all] | None).

    ``rows`` [N] are the flat positions to score (the mask's True entries), ``targets`` [N] their
    token ids; other positions get 0. See the module doc for what the backward recomputes.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, rows, targets, inv_t, chunk_size, want_entropy):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        out_dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        n_all, n = hidden.shape[0], rows.shape[0]
        logp = hidden.new_zeros(n_all, dtype=out_dtype)
        ent = hidden.new_zeros(n_all, dtype=out_dtype) if want_entropy else None
        lse = hidden.new_empty(n, dtype=out_dtype)
        ent_rows = hidden.new_empty(n, dtype=out_dtype) if want_entropy else None
        (buf, *rest), lp_buf = _chunk_buffers(hidden, weight, min(chunk_size, n), 2 if want_entropy else 1, out_dtype)
        for c0 in range(0, n, chunk_size):
            c1 = min(c0 + chunk_size, n)
            r, y = rows[c0:c1], targets[c0:c1]
            z = _logits_into(buf, lp_buf, hidden.index_select(0, r), weight, bias, inv_t)
            target = z.gather(1, y.unsqueeze(1)).squeeze(1)
            m = z.amax(dim=1, keepdim=True)
            if want_entropy:
                # u = exp(z - max), s = sum u: lse = max + log s and H = lse - sum_v u_v z_v / s.
                u = torch.sub(z, m, out=rest[0][: c1 - c0]).exp_()
                s = u.sum(dim=1)
                lse_c = m.squeeze(1) + s.log()
                e_c = lse_c - u.mul_(z).sum(dim=1) / s
                ent_rows[c0:c1] = e_c
                ent[r] = e_c
            else:
                lse_c = m.squeeze(1) + z.sub_(m).exp_().sum(dim=1).log()
            lse[c0:c1] = lse_c
            logp[r] = target - lse_c
        ctx.save_for_backward(hidden, weight, bias, rows, targets, lse, ent_rows)
        ctx.inv_t, ctx.chunk_size = inv_t, chunk_size
        return logp, ent

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_logp, g_ent):  # type: ignore[override]
        hidden, weight, bias, rows, targets, lse, ent_rows = ctx.saved_tensors
        inv_t, chunk_size = ctx.inv_t, ctx.chunk_size
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        no_grad_args = (None,) * 5  # rows, targets, inv_t, chunk_size, want_entropy
        # Rows whose upstream gradient is exactly 0 (clipped sequences, zero-advantage groups) add nothing to
        # any gradient: their logits are not recomputed.
        live = torch.zeros(rows.shape, dtype=torch.bool, device=rows.device)
        for g_up in (g_logp, g_ent):
            if g_up is not None:
                live |= g_up[rows] != 0
        keep = live.nonzero().squeeze(1)
        rows, targets, lse = rows[keep], targets[keep], lse[keep]
        ent_rows = ent_rows[keep] if ent_rows is not None else None
        n = rows.shape[0]
        if (g_logp is None and g_ent is None) or not (need_h or need_w or need_b) or n == 0:
            return (torch.zeros_like(hidden) if need_h else None, torch.zeros_like(weight) if need_w else None,
                    torch.zeros_like(bias) if need_b else None, *no_grad_args)
        low = hidden.dtype in _LOW_PRECISION
        acc_dtype = torch.float32 if low else hidden.dtype
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc_dtype, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=acc_dtype, device=bias.device) if need_b else None
        (buf, *rest), lp_buf = _chunk_buffers(hidden, weight, min(chunk_size, n), 2 if g_ent is not None else 1,
                                              lse.dtype)
        for c0 in range(0, n, chunk_size):
            c1 = min(c0 + chunk_size, n)
            r, y = rows[c0:c1], targets[c0:c1]
            h = hidden.index_select(0, r)
            log_pi = _logits_into(buf, lp_buf, h, weight, bias, inv_t).sub_(lse[c0:c1].unsqueeze(1))
            g = g_logp[r].to(lse.dtype) if g_logp is not None else None
            if g_ent is not None:
                ge = g_ent[r].to(lse.dtype)
                pi = torch.exp(log_pi, out=rest[0][: c1 - c0])
                # dL/dz = -pi * (g + g_H H + g_H log pi) + g 1[v = y]
                shift = ge * ent_rows[c0:c1] if g is None else g + ge * ent_rows[c0:c1]
                dz = pi.mul_(log_pi.mul_(ge.unsqueeze(1)).add_(shift.unsqueeze(1))).mul_(-inv_t)
            else:
                dz = log_pi.exp_().mul_((-inv_t * g).unsqueeze(1))
            if g is not None:
                dz.scatter_add_(1, y.unsqueeze(1), (inv_t * g).unsqueeze(1))
            # dz is now dL/d(h W^T + b): the 1/tau is folded in above.
            if need_h:
                grad_h.index_copy_(0, r, torch.mm(lp_buf[: c1 - c0].copy_(dz) if low else dz, weight))
            if need_w:
                grad_w.addmm_(dz.t(), h.float() if low else h)
            if need_b:
                grad_b.add_(dz.sum(0))
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(bias.dtype)
        return (grad_h, grad_w, grad_b, *no_grad_args)


def _check_inputs(hidden: Any, weight: Any, tokens: Any, mask: Any, bias: Any, temperature: Any,
                  chunk_size: Any) -> tuple[int, float]:
    """Shapes, dtypes and scalars of :func:`chunked_logprobs`; returns ``(chunk_size, 1 / temperature)``."""
    for name, t in (("hidden", hidden), ("weight", weight), ("tokens", tokens), ("mask", mask)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if not hidden.is_floating_point() or hidden.ndim != 3:
        raise ValueError(f"hidden: expected a floating [B, T, H] tensor, got {hidden.dtype} of shape {tuple(hidden.shape)}")
    B, T, H = hidden.shape
    if not weight.is_floating_point() or weight.ndim != 2:
        raise ValueError(f"weight: expected a floating [V, H] tensor (the LM head), got {weight.dtype} of shape "
                         f"{tuple(weight.shape)}")
    if weight.shape[1] != H:
        raise ValueError(f"weight: shape {tuple(weight.shape)} does not match hidden's size H = {H} "
                         f"(hidden is {tuple(hidden.shape)}; weight must be [V, {H}])")
    if weight.dtype != hidden.dtype:
        raise ValueError(f"weight: dtype {weight.dtype} differs from hidden's {hidden.dtype}; cast one of them")
    V = weight.shape[0]
    if V == 0:
        raise ValueError("weight: the vocabulary is empty (V = 0)")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (V,):
            got = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
            raise ValueError(f"bias: expected a [V] = ({V},) tensor, got {got}")
        if bias.dtype != hidden.dtype:
            raise ValueError(f"bias: dtype {bias.dtype} differs from hidden's {hidden.dtype}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise ValueError(f"tokens: expected an integer tensor of token ids, got {tokens.dtype}")
    if tuple(tokens.shape) != (B, T):
        raise ValueError(f"tokens: shape {tuple(tokens.shape)} does not match hidden's [B, T] = {(B, T)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask: expected a bool tensor (True = keep), got {mask.dtype}")
    if tuple(mask.shape) != (B, T):
        raise ValueError(f"mask: shape {tuple(mask.shape)} does not match hidden's [B, T] = {(B, T)}")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not math.isfinite(temperature) \
            or temperature <= 0:
        raise ValueError(f"temperature: expected a finite number > 0, got {temperature!r}")
    if chunk_size is None:
        chunk_size = default_chunk_size(V)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int (token rows per chunk), got {chunk_size!r}")
    return chunk_size, 1.0 / float(temperature)


def chunked_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    entropy: bool = False,
    check: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Per-token ``log softmax(hidden @ weight.T / temperature)[tokens]`` ``[B, T]``, chunked (module doc).

    Args:
      hidden: ``[B, T, H]``, the last hidden states; position ``t`` predicts ``tokens[:, t]``.
      weight: ``[V, H]``, the LM head; ``bias``: ``[V]`` or None. Same dtype as ``hidden``.
      tokens: ``[B, T]`` integer token ids, in ``[0, V)`` wherever ``mask`` is True.
      mask: ``[B, T]`` bool, False = padding (skipped; any token id; log-prob 0, no gradient).
      temperature: ``tau > 0``, the divisor of the logits.
      chunk_size: token rows per chunk (default :func:`default_chunk_size`).
      entropy: also return the per-token entropy of ``softmax(z)`` (differentiable), else None.
      check: validate token ids on the mask (one device sync); ``False`` skips it.

    Returns:
      ``(logp, entropy)``, float32 (float64 for float64 input), 0 on padding; differentiable in
      ``hidden``, ``weight`` and ``bias`` (first order).
    """
    chunk_size, inv_t = _check_inputs(hidden, weight, tokens, mask, bias, temperature, chunk_size)
    B, T, H = hidden.shape
    V = weight.shape[0]
    if check:
        bad = mask & ((tokens < 0) | (tokens >= V))
        if bool(bad.any()):
            i = first_index(bad)
            raise ValueError(f"tokens: id {int(tokens[i])} at index {i} is outside the vocabulary [0, {V}) "
                             "of weight (on an unmasked position)")
    rows = mask.reshape(-1).nonzero().squeeze(1)
    targets = tokens.reshape(-1).index_select(0, rows).long()
    logp, ent = _ChunkedTokenLogProb.apply(hidden.reshape(B * T, H), weight, bias, rows, targets, inv_t, chunk_size,
                                           bool(entropy))
    return logp.view(B, T), (ent.view(B, T) if ent is not None else None)


def chunked_policy_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    tokens: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    level: str = "sequence",
    p: Any = 0.0,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    agg: str = "seq-mean-token-mean",
    **options: Any,
) -> tuple[torch.Tensor, dict[str, float]]:
    r""":func:`rl.losses.policy_loss` of ``log softmax(hidden @ weight.T / temperature)[tokens]``, chunked.

    The same value and the same gradients in ``hidden``, ``weight`` and ``bias`` as materialising
    the logits, taking log-softmax, gathering ``tokens`` and calling
    ``policy_loss(logp, old_logp, advantages, mask, level=level, p=p, ...)``, for every level,
    mean and p, with peak memory ``O(chunk_size * V)`` instead of ``O(B * T * V)`` (module doc:
    the backward recomputes each chunk's logits once, because a sequence-level power mean needs
    every token's log-prob before any token's gradient is known).

    Args:
      hidden, weight, tokens, mask, bias, temperature, chunk_size: as :func:`chunked_logprobs`.
      old_logp, advantages, level, p, eps_low, eps_high, agg: as :func:`rl.losses.policy_loss`
        (its messages call the ``[B, T]`` log-probs of ``tokens`` "logp").
      options: every option of ``policy_loss`` (``ref_logp``, ``kl_coef``, ``entropy_coef``, ...),
        except that ``entropy`` is a bool here: True computes the per-token entropy from the
        logits (the ``entropy`` metric); a non-zero ``entropy_coef`` implies it (the bonus, with
        gradient). ``mean="multiscale"`` takes its tokens per chunk as ``mean_chunk_size``
        (``chunk_size`` here is the row chunk of the logits).

    Returns:
      ``(loss, metrics)`` exactly as ``policy_loss`` returns them.

    Raises:
      ValueError: shapes or dtypes of ``hidden``/``weight``/``bias``/``tokens``/``mask`` that do
        not fit, a token id outside ``[0, V)`` on the mask (with ``check``), a bad temperature or
        chunk size, and everything ``policy_loss`` rejects.
    """
    opts = dict(options)
    unknown = sorted(set(opts) - _OPTIONS - {"mean_chunk_size"})
    if unknown:
        raise ValueError(f"chunked_policy_loss: unknown option(s) {', '.join(unknown)}; valid options: "
                         f"{', '.join(sorted(_OPTIONS - {'chunk_size'} | {'mean_chunk_size'}))}")
    if "mean_chunk_size" in opts:
        opts["chunk_size"] = opts.pop("mean_chunk_size")
    want_entropy = opts.pop("entropy", False)
    if not isinstance(want_entropy, bool) and want_entropy is not None:
        raise ValueError("entropy: chunked_policy_loss computes the entropy from the logits; pass entropy=True "
                         f"(or False), got {type(want_entropy).__name__}")
    coef = opts.get("entropy_coef", 0.0)
    want_entropy = bool(want_entropy) or (isinstance(coef, int | float) and not isinstance(coef, bool) and coef != 0.0)
    logp, ent = chunked_logprobs(hidden, weight, tokens, mask, bias=bias, temperature=temperature,
                                 chunk_size=chunk_size, entropy=want_entropy, check=bool(opts.get("check", True)))
    return policy_loss(logp, old_logp, advantages, mask, level=level, p=p, eps_low=eps_low, eps_high=eps_high,
                       agg=agg, entropy=ent, **opts)

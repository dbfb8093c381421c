"""MuonClip: any optimizer followed by per-head QK-clip (Kimi K2, arXiv:2507.20534, sec. 2.1).

For every attention module and every query head h, QK-clip measures on live activations

    S_max^h = max over the batch rows b and the causal pairs j <= i of  q_i^h . k_j^{g(h)} * s

with s the module's softmax scale (``scaling``, default 1/sqrt(d_head)) and g(h) the key head
that query head h reads (g(h) = h // (H / H_kv), HF's ``repeat_kv`` layout). After the
wrapped optimizer's step, with gamma_h = min(1, tau / S_max^h), it rescales the output rows
(weights and bias) of q_proj and k_proj so that head h's logits are multiplied by gamma_h:

    multi-head (H_kv = H):   W_q^h <- sqrt(gamma_h) W_q^h,  W_k^h <- sqrt(gamma_h) W_k^h.
    grouped ("exact"):       W_k^g <- sqrt(m_g) W_k^g with m_g = min_{h in g} gamma_h, and
                             W_q^h <- gamma_h / sqrt(m_g) W_q^h, so every head's logits
                             are scaled by exactly its own gamma_h (S_max^h -> min(S_max^h, tau));
                             a query head of a clipped group that was below tau is scaled *up*
                             by 1/sqrt(m_g) to undo the shared key's shrinkage.
    grouped ("conservative"): W_k^g <- sqrt(m_g) W_k^g, W_q^h <- sqrt(gamma_h) W_q^h; head h's
                             logits shrink by sqrt(gamma_h m_g) <= gamma_h (never scales up).

Heads with S_max^h <= tau, in groups where no head exceeds tau, are not touched (bit for bit).

Measurement. Forward hooks on q_proj and k_proj capture their outputs in forward passes run
with gradients enabled (training passes; sampling under ``no_grad`` is ignored); the maxima
accumulate over every such pass since the previous ``step``. Where the two outputs have the
same length the causal mask j <= i is applied (assumes a causal decoder without padding
between real tokens; padded keys, if any, are included, which can only over-estimate S).
Rotary positions rotate q_i and k_j after the projections, so the projection outputs do not
give the logits; for rotary modules the measurement is the bound |q_i . R k_j| <= |q_i| |k_j|
(``rotary="auto"`` detects them), which makes the clip conservative but keeps the guarantee.

Guarantee. With ``recheck=False`` (Kimi K2's procedure) S_max is measured with the weights
*before* the step, so the next forward's logits are <= tau only up to the change the step
itself makes to q, k and the inputs of each layer (O(lr) relative; a first Adam step on
small embeddings moves them by several percent). With ``recheck=True`` (the default) the
outermost module that ran the attention in the training forward passes since the last step
is re-run after the step on the same inputs, without gradients, and each attention module
is measured *and clipped during that pass*, before its q and k are used (the hooked q/k
outputs are rescaled in place, so later layers see the clipped activations): on those
inputs every head's logit is then <= tau under the new weights, at the cost of one extra
forward pass per step. This needs q_proj and k_proj to be called before their outputs
are consumed, as in Llama-style attention. Several forward passes between two steps
(gradient accumulation) are re-run in order; a clip in an early layer can then, in
principle, raise a later layer's logits on an earlier pass.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["MuonClip", "ChainedOptimizer", "muon_with_adamw", "AttentionSpec", "find_attention_modules"]


# ---------------------------------------------------------------------------------------
# optimizers
# ---------------------------------------------------------------------------------------


class ChainedOptimizer:
    """Several optimizers over disjoint parameter sets, stepped together.

    ``param_groups`` concatenates the inner groups (the dicts are shared, so setting
    ``group["lr"]`` reaches the inner optimizer); ``state_dict`` nests the inner ones.
    """

    def __init__(self, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        self.optimizers = list(optimizers)
        seen: set[int] = set()
        for opt in self.optimizers:
            for g in opt.param_groups:
                for p in g["params"]:
                    if id(p) in seen:
                        raise ValueError("ChainedOptimizer: a parameter appears in two optimizers")
                    seen.add(id(p))

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        inner = state.get("optimizers")
        if inner is None or len(inner) != len(self.optimizers):
            raise ValueError("ChainedOptimizer.load_state_dict: state has a different number of optimizers")
        for opt, s in zip(self.optimizers, inner):
            opt.load_state_dict(s)


def muon_with_adamw(
    model: nn.Module,
    *,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    momentum: float = 0.95,
    betas: tuple[float, float] = (0.9, 0.95),
    adjust_lr_fn: str = "match_rms_adamw",
) -> ChainedOptimizer:
    """``torch.optim.Muon`` for the 2-D weights of hidden layers, AdamW for everything else.

    Embeddings (and weights tied to them) and a module named ``lm_head`` go to AdamW, as in
    Keller Jordan's Muon and Moonshot's "Muon is scalable" (arXiv:2502.16982); with
    ``adjust_lr_fn="match_rms_adamw"`` (update RMS matched to AdamW's) one ``lr`` serves both.
    """
    embed_ids = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    muon, rest, seen = [], [], set()
    for name, p in model.named_parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        if p.ndim == 2 and id(p) not in embed_ids and "lm_head" not in name.split("."):
            muon.append(p)
        else:
            rest.append(p)
    opts: list[torch.optim.Optimizer] = []
    if muon:
        opts.append(torch.optim.Muon(muon, lr=lr, weight_decay=weight_decay, momentum=momentum,
                                     adjust_lr_fn=adjust_lr_fn))
    if rest:
        opts.append(torch.optim.AdamW(rest, lr=lr, weight_decay=weight_decay, betas=betas))
    return ChainedOptimizer(opts)


# ---------------------------------------------------------------------------------------
# attention discovery
# ---------------------------------------------------------------------------------------


@dataclass
class AttentionSpec:
    """An attention module MuonClip can clip: projections, head layout and softmax scale."""

    name: str
    module: nn.Module
    q_proj: nn.Linear
    k_proj: nn.Linear
    num_heads: int
    num_kv_heads: int
    head_dim: int
    scaling: float
    rotary: bool
    smax: torch.Tensor = field(default=None)  # running S_max per query head, float32 [H]

    @property
    def group(self) -> int:
        return self.num_heads // self.num_kv_heads


def _first_attr(m: nn.Module, names: tuple[str, ...]):
    for n in names:
        v = getattr(m, n, None)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    cfg = getattr(m, "config", None)
    for n in names:
        v = getattr(cfg, n, None) if cfg is not None else None
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _looks_like_attention(m: nn.Module) -> bool:
    if isinstance(m, nn.MultiheadAttention):
        return True
    cls = type(m).__name__.lower()
    if "attention" in cls or cls.endswith("attn"):
        return True
    return any(hasattr(m, a) for a in ("qkv", "qkv_proj", "c_attn", "in_proj_weight", "Wqkv", "query_key_value"))


def _detect_rotary(m: nn.Module) -> bool:
    flag = getattr(m, "rotary", None)
    if isinstance(flag, bool):
        return flag
    if hasattr(m, "rotary_emb"):
        return True
    cfg = getattr(m, "config", None)
    if cfg is not None and any(getattr(cfg, a, None) is not None for a in ("rope_theta", "rope_parameters", "rope_scaling")):
        return True
    return False


def find_attention_modules(
    model: nn.Module,
    *,
    heads: dict[str, tuple[int, int, int]] | None = None,
    rotary: bool | str = "auto",
) -> tuple[list[AttentionSpec], list[str]]:
    """(clippable attention modules, names of attention-like modules that are not clippable).

    A module is clippable when it has ``q_proj`` and ``k_proj`` children that are
    ``nn.Linear``; its head layout comes from ``heads[name] = (H, H_kv, d)`` when given, else
    from attributes ``num_heads``/``num_attention_heads``, ``num_key_value_heads``/
    ``num_kv_heads``, ``head_dim`` (on the module or its ``config``). Attention-like modules
    (class name contains "Attention", ``nn.MultiheadAttention``, fused ``qkv``/``c_attn``
    projections) without separate q/k projections are returned as unsupported.
    """
    heads = heads or {}
    specs, unsupported = [], []
    for name, m in model.named_modules():
        q, k = getattr(m, "q_proj", None), getattr(m, "k_proj", None)
        if isinstance(q, nn.Linear) and isinstance(k, nn.Linear):
            if name in heads:
                H, Hkv, d = heads[name]
            else:
                H = _first_attr(m, ("num_heads", "num_attention_heads", "n_heads"))
                d = _first_attr(m, ("head_dim",))
                if H is None and d is not None:
                    H = q.out_features // d
                if H is None:
                    raise ValueError(
                        f"attention module {name!r}: cannot tell the number of heads; pass heads={{{name!r}: (H, H_kv, d)}}"
                    )
                d = d if d is not None else q.out_features // H
                Hkv = _first_attr(m, ("num_key_value_heads", "num_kv_heads", "n_kv_heads"))
                Hkv = Hkv if Hkv is not None else k.out_features // d
            if q.out_features != H * d or k.out_features != Hkv * d or Hkv < 1 or H % Hkv:
                raise ValueError(
                    f"attention module {name!r}: q_proj out {q.out_features} / k_proj out {k.out_features} do not "
                    f"match H={H}, H_kv={Hkv}, head_dim={d}"
                )
            scaling = getattr(m, "scaling", None)
            scaling = float(scaling) if isinstance(scaling, (int, float)) else d**-0.5
            rot = _detect_rotary(m) if rotary == "auto" else bool(rotary)
            specs.append(AttentionSpec(name, m, q, k, H, Hkv, d, scaling, rot))
        elif _looks_like_attention(m) and not any(name.startswith(s.name + ".") for s in specs if s.name):
            unsupported.append(name or type(m).__name__)
    return specs, unsupported


# ---------------------------------------------------------------------------------------
# MuonClip
# ---------------------------------------------------------------------------------------


@torch.no_grad()
def _max_logits(q: torch.Tensor, k: torch.Tensor, spec: AttentionSpec, causal: bool) -> torch.Tensor:
    """S_max per query head, float32 [H], from projection outputs q [.., Tq, H d], k [.., Tk, Hkv d]."""
    q = q.detach().float()
    k = k.detach().float()
    if q.dim() == 2:
        q, k = q[None], k[None]
    q = q.reshape(-1, q.shape[-2], spec.num_kv_heads, spec.group, spec.head_dim)  # [B, Tq, Hkv, G, d]
    k = k.reshape(-1, k.shape[-2], spec.num_kv_heads, spec.head_dim)  # [B, Tk, Hkv, d]
    if spec.rotary:
        s = torch.einsum("bihg,bjh->bhgij", q.norm(dim=-1), k.norm(dim=-1))
    else:
        s = torch.einsum("bihgd,bjhd->bhgij", q, k)
    s = s * spec.scaling
    Tq, Tk = s.shape[-2], s.shape[-1]
    if causal and Tq == Tk:
        s = s.masked_fill(~torch.ones(Tq, Tk, dtype=torch.bool, device=s.device).tril(), float("-inf"))
    return s.amax(dim=(0, 3, 4)).reshape(spec.num_heads)


class MuonClip:
    """Wraps an optimizer; after each of its steps applies per-head QK-clip (module docstring).

    Args:
        model: the model whose attention modules are clipped (hooks are registered here).
        optimizer: any object with ``step``/``zero_grad``/``state_dict``; default
            :func:`muon_with_adamw` (Muon for 2-D hidden weights, AdamW for the rest) with
            ``lr`` and ``weight_decay``.
        tau: the logit threshold (Kimi K2 uses 100).
        heads: explicit head layouts ``{module name: (H, H_kv, head_dim)}``.
        rotary: "auto" (detect), True or False: whether q/k are rotated after projection.
        gqa: "exact" or "conservative" (module docstring).
        causal: apply the causal mask j <= i when measuring.
        on_unsupported: "raise" (ValueError naming them) or "warn" for attention-like modules
            that cannot be clipped; "raise" also when no clippable module is found.
        recheck: re-run the step's training forward after the step and clip during it, so
            the logits on that batch end <= tau under the new weights (module docstring);
            False: Kimi K2's clip from the pre-step measurement.

    After ``step``, ``last_stats`` holds {"max_logit", "clipped_heads", "measured_heads"}.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer=None,
        *,
        tau: float = 100.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        heads: dict[str, tuple[int, int, int]] | None = None,
        rotary: bool | str = "auto",
        gqa: str = "exact",
        causal: bool = True,
        on_unsupported: str = "raise",
        recheck: bool = True,
    ) -> None:
        if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
            raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
        if gqa not in ("exact", "conservative"):
            raise ValueError(f"gqa must be 'exact' or 'conservative', got {gqa!r}")
        if on_unsupported not in ("raise", "warn"):
            raise ValueError(f"on_unsupported must be 'raise' or 'warn', got {on_unsupported!r}")
        if rotary not in ("auto", True, False):
            raise ValueError(f"rotary must be 'auto', True or False, got {rotary!r}")
        self.specs, self.unsupported = find_attention_modules(model, heads=heads, rotary=rotary)
        if self.unsupported:
            msg = (
                "MuonClip cannot clip attention modules without separate q_proj/k_proj: "
                + ", ".join(self.unsupported)
            )
            if on_unsupported == "raise":
                raise ValueError(msg + " (pass on_unsupported='warn' to train them unclipped)")
            warnings.warn(msg + "; they are trained without QK-clip", UserWarning, stacklevel=2)
        if not self.specs and on_unsupported == "raise":
            raise ValueError("MuonClip found no attention module with q_proj and k_proj children")
        self.optimizer = optimizer if optimizer is not None else muon_with_adamw(model, lr=lr, weight_decay=weight_decay)
        self.tau, self.gqa, self.causal, self.recheck = float(tau), gqa, causal, bool(recheck)
        self.last_stats: dict[str, float] = {}
        self._pending: dict[int, dict[str, torch.Tensor]] = {}
        self._handles = []
        self._calls: list[tuple[nn.Module, tuple, dict]] = []  # outermost training forwards
        self._stack: list[nn.Module] = []
        self._replaying = False
        for i, spec in enumerate(self.specs):
            spec.smax = torch.full((spec.num_heads,), float("-inf"))
            self._handles.append(spec.q_proj.register_forward_hook(self._hook(i, "q")))
            self._handles.append(spec.k_proj.register_forward_hook(self._hook(i, "k")))
        if self.recheck:
            names = {s.name for s in self.specs}
            for name, m in model.named_modules():
                if any(n == name or name == "" or n.startswith(name + ".") for n in names):
                    self._handles.append(m.register_forward_pre_hook(self._enter, with_kwargs=True))
                    self._handles.append(m.register_forward_hook(self._leave))

    def _enter(self, module, args, kwargs):
        if not self._stack and torch.is_grad_enabled() and not self._replaying:
            self._calls.append((module, args, kwargs))
        self._stack.append(module)

    def _leave(self, module, _args, _output):
        if self._stack and self._stack[-1] is module:
            self._stack.pop()

    # -- measurement ---------------------------------------------------------------------
    def _hook(self, i: int, which: str):
        def hook(_module, _inputs, output):
            if not self._replaying and (self.recheck or not torch.is_grad_enabled()):
                return  # sampling passes are not measured; with recheck the replay measures
            slot = self._pending.setdefault(i, {})
            slot[which] = output.detach()
            if "q" in slot and "k" in slot:
                spec = self.specs[i]
                q, k = slot.pop("q"), slot.pop("k")
                s = _max_logits(q, k, spec, self.causal).to(spec.smax.device)
                spec.smax = torch.maximum(spec.smax, s)
                if self._replaying:
                    scales = self._scales(spec, s)
                    if scales is not None:
                        # Clip now, and the activations already computed with the old
                        # weights too, so that later layers see the clipped attention.
                        q_scale, k_scale = scales
                        self._scale_rows(spec.q_proj, q_scale, spec.head_dim)
                        self._scale_rows(spec.k_proj, k_scale, spec.head_dim)
                        self._scale_out(q, q_scale, spec.head_dim)
                        self._scale_out(k, k_scale, spec.head_dim)
                        self._clipped += int((s > self.tau).sum())

        return hook

    def max_logits(self) -> dict[str, torch.Tensor]:
        """S_max per head of each module, measured since the last step (-inf if not measured)."""
        return {s.name: s.smax.clone() for s in self.specs}

    def reset(self) -> None:
        """Forget the measurements (called by ``step``)."""
        self._pending.clear()
        self._calls.clear()
        self._stack.clear()
        for s in self.specs:
            s.smax.fill_(float("-inf"))

    # -- clipping ------------------------------------------------------------------------
    def _scales(self, spec: AttentionSpec, smax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(q scale per query head, k scale per key head), or None when no head exceeds tau."""
        over = torch.isfinite(smax) & (smax > self.tau)
        if not bool(over.any()):
            return None
        group = spec.group
        gamma = torch.where(over, self.tau / smax, torch.ones_like(smax)).double()  # [H]
        gmin = gamma.view(-1, group).amin(dim=1)  # [Hkv]
        k_scale = gmin.sqrt()
        q_scale = gamma / k_scale.repeat_interleave(group) if self.gqa == "exact" else gamma.sqrt()
        return q_scale, k_scale

    @torch.no_grad()
    def clip_(self) -> dict[str, float]:
        """Apply QK-clip with the current measurements (Kimi K2 order); returns the stats."""
        clipped = 0
        for spec in self.specs:
            scales = self._scales(spec, spec.smax)
            if scales is None:
                continue
            clipped += int((torch.isfinite(spec.smax) & (spec.smax > self.tau)).sum())
            self._scale_rows(spec.q_proj, scales[0], spec.head_dim)
            self._scale_rows(spec.k_proj, scales[1], spec.head_dim)
        return self._stats(clipped)

    def _stats(self, clipped: int) -> dict[str, float]:
        measured, top = 0, float("-inf")
        for spec in self.specs:
            seen = torch.isfinite(spec.smax)
            measured += int(seen.sum())
            if bool(seen.any()):
                top = max(top, float(spec.smax[seen].max()))
        self.last_stats = {"max_logit": top, "clipped_heads": float(clipped), "measured_heads": float(measured)}
        return self.last_stats

    @torch.no_grad()
    def _replay(self) -> dict[str, float]:
        """Re-run the recorded training forwards under the new weights, clipping as they go."""
        self._replaying, self._clipped = True, 0
        try:
            for module, args, kwargs in self._calls:
                self._pending.clear()
                module(*args, **kwargs)
        finally:
            self._replaying = False
            self._stack.clear()
        return self._stats(self._clipped)

    @staticmethod
    def _scale_out(out: torch.Tensor, scale: torch.Tensor, head_dim: int) -> None:
        for h in torch.nonzero(scale != 1.0).flatten().tolist():
            out[..., h * head_dim : (h + 1) * head_dim].mul_(float(scale[h]))

    @staticmethod
    def _scale_rows(lin: nn.Linear, scale: torch.Tensor, head_dim: int) -> None:
        """Multiply the output rows of head h (weight and bias) by scale[h]; rows with scale 1
        are left untouched."""
        for h in torch.nonzero(scale != 1.0).flatten().tolist():
            sl = slice(h * head_dim, (h + 1) * head_dim)
            f = float(scale[h])
            lin.weight[sl].mul_(f)
            if lin.bias is not None:
                lin.bias[sl].mul_(f)

    # -- optimizer interface -------------------------------------------------------------
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """The wrapped optimizer's step, then QK-clip from the measurements since the last
        step, then reset the measurements."""
        loss = self.optimizer.step(closure) if closure is not None else self.optimizer.step()
        if self.recheck:
            self._replay()
        else:
            self.clip_()
        self.reset()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "tau": self.tau}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    def remove_hooks(self) -> None:
        """Unregister the forward hooks (the optimizer keeps working, without clipping)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

r"""Learnable exponent p for the power-mean sequence ratio (seed 000, section 4).

``LearnablePowerMean`` holds p as a parameter trained by the same optimizer as the policy:

.. math:: p = p_{min} + (p_{max} - p_{min})\,\sigma(\theta),

so p stays in the open interval ``(p_min, p_max)`` (default ``(-2, 2)``: harmonic, geometric,
arithmetic and quadratic means inside) and ``dp/dtheta = (p_max - p_min) sigma (1 - sigma)``
fades at the ends instead of letting p run away. With ``length_buckets = (b_1, ..., b_k)``
(strictly increasing token counts) it holds ``k + 1`` exponents, and a sequence of ``n``
tokens uses bucket ``j`` with ``b_j <= n < b_{j+1}`` (``b_0 = 0``, ``b_{k+1} = inf``).

The gradient p receives through the loss is, for an unclipped sequence under
``"seq-mean-token-mean"``, ``-(1/B) A_i s_i d log M_p / dp`` with
``d log M_p / dp = KL(softmax(p l) || uniform) / p^2 >= 0`` (proofs: theorem on
``dlog_power_mean_dp``): a positive advantage pushes p up (toward the max), a negative one
down (toward the min), and clipped sequences contribute nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["LearnablePowerMean"]


class LearnablePowerMean(torch.nn.Module):
    """Exponent(s) p of the sequence power mean, as a trainable module.

    Args:
      p_init: initial p, strictly inside ``(p_min, p_max)``.
      p_min, p_max: the open range of p (finite, ``p_min < p_max``).
      length_buckets: optional strictly increasing positive token counts; one p per bucket.

    ``forward(mask)`` returns p for each row of ``mask`` ``[B, T]`` (shape ``[B]``), or a 0-d
    tensor without buckets when ``mask`` is None. Pass the module itself (or its output) as
    ``p`` to :func:`rl.losses.policy_loss`.
    """

    def __init__(
        self,
        p_init: float = 0.0,
        *,
        p_min: float = -2.0,
        p_max: float = 2.0,
        length_buckets: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        for name, v in (("p_init", p_init), ("p_min", p_min), ("p_max", p_max)):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"{name}: expected a finite number, got {v!r}")
        if not p_min < p_max:
            raise ValueError(f"p_min, p_max: expected p_min < p_max, got ({p_min}, {p_max})")
        if not p_min < p_init < p_max:
            raise ValueError(f"p_init: {p_init} is not strictly inside (p_min, p_max) = ({p_min}, {p_max})")
        buckets: list[int] = []
        if length_buckets is not None:
            buckets = list(length_buckets)
            if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in buckets) or any(
                a >= b for a, b in zip(buckets, buckets[1:], strict=False)
            ):
                raise ValueError(f"length_buckets: expected strictly increasing positive ints, got {length_buckets!r}")
        self.p_min = float(p_min)
        self.p_max = float(p_max)
        frac = (p_init - p_min) / (p_max - p_min)
        theta = math.log(frac) - math.log1p(-frac)
        self.theta = torch.nn.Parameter(torch.full((len(buckets) + 1,), theta, dtype=torch.float32))
        self.register_buffer("boundaries", torch.tensor(buckets, dtype=torch.long), persistent=True)

    @property
    def p(self) -> torch.Tensor:
        """All exponents, one per bucket (differentiable)."""
        return self.p_min + (self.p_max - self.p_min) * torch.sigmoid(self.theta)

    def forward(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        p = self.p
        if mask is None:
            if p.numel() != 1:
                raise ValueError("LearnablePowerMean: a mask is needed to pick length buckets")
            return p[0]
        if mask.dtype != torch.bool or mask.ndim != 2:
            raise ValueError(f"mask: expected a bool [B, T] tensor, got {mask.dtype} {tuple(mask.shape)}")
        if p.numel() == 1:
            return p.expand(mask.shape[0])
        lengths = mask.sum(-1)
        idx = torch.bucketize(lengths, self.boundaries.to(lengths.device), right=True)
        return p[idx]

    def extra_repr(self) -> str:
        return f"p_min={self.p_min}, p_max={self.p_max}, buckets={self.boundaries.tolist()}"

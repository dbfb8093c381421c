r"""Group-relative advantages (GRPO; Shao et al., *DeepSeekMath*, arXiv:2402.03300, sec. 4.1).

Rewards arrive as ``[B]`` with the ``G = group_size`` samples of each prompt contiguous
(rows ``g*G .. g*G + G - 1`` belong to prompt ``g``). For each group,

.. math:: A_i = \frac{r_i - \bar r}{\operatorname{std}(r) + \epsilon}\quad(\texttt{std\_normalize=True}),
          \qquad A_i = r_i - \bar r\quad(\texttt{False}, \text{Dr. GRPO})

with ``std`` the unbiased (``ddof=1``) standard deviation of the group, as TRL and verl use, and
``eps = 1e-6``. Dr. GRPO (Liu et al., arXiv:2503.20783) drops the division by the std, which
biases updates toward low-variance (too easy or too hard) prompts. Either way each group's
advantages sum to zero (exactly up to rounding), and a group whose rewards are all equal gets
advantages exactly 0.
"""

from __future__ import annotations

import torch

__all__ = ["group_advantages"]


def group_advantages(
    rewards: torch.Tensor, group_size: int, *, std_normalize: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """Group-normalised advantages ``[B]`` from rewards ``[B]`` in contiguous groups of ``group_size``.

    Raises:
      ValueError: rewards not a 1-d floating tensor, NaN/inf rewards, ``group_size`` not a
        positive int dividing ``B``, ``group_size == 1`` with ``std_normalize`` (std undefined),
        or ``eps < 0``.
    """
    if not isinstance(rewards, torch.Tensor) or not rewards.is_floating_point() or rewards.ndim != 1:
        desc = f"{rewards.dtype} {tuple(rewards.shape)}" if isinstance(rewards, torch.Tensor) else type(rewards).__name__
        raise ValueError(f"rewards: expected a 1-d floating tensor [B], got {desc}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size: expected a positive int, got {group_size!r}")
    B = rewards.shape[0]
    if B % group_size:
        raise ValueError(f"group_size: {group_size} does not divide the batch size {B}")
    if std_normalize and group_size == 1:
        raise ValueError("group_size: 1 leaves the group std undefined; use std_normalize=False or larger groups")
    if not (isinstance(eps, int | float) and eps >= 0):
        raise ValueError(f"eps: expected a number >= 0, got {eps!r}")
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError("rewards: NaN or inf reward")
    dtype = torch.float64 if rewards.dtype == torch.float64 else torch.float32
    r = rewards.detach().to(dtype).reshape(-1, group_size)
    centred = r - r.mean(dim=-1, keepdim=True)
    if std_normalize:
        std = r.std(dim=-1, keepdim=True, unbiased=True)
        centred = centred / (std + eps)
    return centred.reshape(B)

r"""Per-token estimators of KL(pi_theta || pi_ref) from tokens sampled by the policy.

With :math:`\delta_t = \log \pi_{ref}(y_t) - \log \pi_\theta(y_t)` (Schulman, *Approximating
KL Divergence*, 2020, http://joschu.net/blog/kl-approx.html):

* ``"k1"``: :math:`-\delta` (unbiased, high variance, can be negative);
* ``"k2"``: :math:`\delta^2 / 2` (biased, low variance, >= 0);
* ``"k3"``: :math:`e^{\delta} - 1 - \delta` (unbiased, low variance, >= 0; TRL's GRPO
  ``beta`` term and verl's ``low_var_kl``).

k3 exponentiates ``delta``, which is unbounded, so ``delta`` is capped at ``max_log_ratio``
(default 20: ``e^20 = 4.9e8``) before the exponential; beyond the cap the estimate is
constant and its gradient 0. It is computed as ``expm1(delta) - delta``, exact for small ``delta``.
"""

from __future__ import annotations

import torch

__all__ = ["KL_ESTIMATORS", "kl_estimate"]

KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_estimate(
    logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3", *, max_log_ratio: float | None = 20.0
) -> torch.Tensor:
    """Per-token KL estimate ``[B, T]`` (see module doc); ``ref_logp`` is treated as a constant."""
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator: unknown estimator {estimator!r}; expected one of {', '.join(KL_ESTIMATORS)}")
    delta = ref_logp.detach() - logp
    if estimator == "k1":
        return -delta
    if estimator == "k2":
        return 0.5 * delta * delta
    if max_log_ratio is not None:
        delta = torch.clamp(delta, max=max_log_ratio)
    return torch.expm1(delta) - delta

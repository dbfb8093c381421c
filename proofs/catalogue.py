"""The catalogue: every theorem, in the order ``hmpo verify`` runs and reports them."""

from __future__ import annotations

from proofs.core import Theorem
from proofs.theorems_estimator import THEOREMS as _ESTIMATOR
from proofs.theorems_iterations import THEOREMS as _ITER
from proofs.theorems_losses import THEOREMS as _LOSS
from proofs.theorems_means import THEOREMS as _MEANS

__all__ = ["THEOREMS", "BY_ID"]

THEOREMS: list[Theorem] = [*_MEANS, *_ITER, *_LOSS, *_ESTIMATOR]
BY_ID: dict[str, Theorem] = {th.id: th for th in THEOREMS}

if len(BY_ID) != len(THEOREMS):  # pragma: no cover - guards the data
    raise RuntimeError("duplicate theorem ids in the catalogue")

"""Strict JSON for metrics and CLI output."""

from __future__ import annotations

import math
from typing import Any

import torch


def jsonable(v: Any) -> Any:
    """Recursively make ``v`` strict-JSON safe: one-element tensors become numbers,
    +-inf the strings "inf"/"-inf", NaN null (``json.dumps(..., allow_nan=False)`` then works)."""
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    return v

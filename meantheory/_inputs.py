"""Input conversion and validation shared by the public mean functions.

Public functions accept torch tensors, numpy arrays and (nested) Python lists or
scalars, and answer in kind: a tensor for a tensor, an ndarray for an ndarray, a
float or a list for Python input. Everything is computed in torch, in at least
float32 (float16/bfloat16 are promoted because their 3-4 significant digits
cannot carry a log-sum-exp reduction); numpy input in float64. The answer's dtype: a
tensor's is the compute dtype; an ndarray's is NumPy's result dtype of the value and
weight arrays, integers and bools counting as float64 (float32 stays float32), as
``scipy.stats.pmean`` answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

_LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Kind:
    """How the caller's primary input arrived, so the answer can be given in kind."""

    kind: str  # "tensor" | "numpy" | "python"
    dtype: torch.dtype | None = None
    np_dtype: np.dtype | None = None  # numpy: the dtype of the answer


def free_reads(device: torch.device) -> bool:
    """Whether reading a value back to the host is free of a device synchronisation (a CPU).

    Code that may skip work after a cheap read (is a rare branch needed? is every value
    finite?) asks this, and computes unconditionally where it is False. The one place that
    decides it: tests patch it to run the accelerator branches on a CPU. Call it through the
    module (``_inputs.free_reads``) so that the patch is seen."""
    return device.type == "cpu"


def kind_of(x: Any, *others: Any) -> Kind:
    """The kind of ``x``; for an ndarray also the answer's dtype, from ``x`` and the numpy
    arrays among ``others`` (the weights)."""
    if isinstance(x, torch.Tensor):
        return Kind("tensor", x.dtype)
    if isinstance(x, np.ndarray | np.generic):
        floats = [a.dtype if a.dtype.kind == "f" else np.dtype(np.float64)
                  for a in (x, *others) if isinstance(a, np.ndarray | np.generic)]
        return Kind("numpy", np_dtype=np.result_type(*floats))
    return Kind("python")


def to_tensor(x: Any, name: str, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Convert ``x`` to a floating tensor without silent coercion of bad types."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - numpy raises many types
            raise ValueError(f"{name}: cannot be read as an array ({exc})") from exc
        if arr.dtype == object:
            raise ValueError(f"{name}: ragged or non-numeric input cannot be read as an array")
        if arr.dtype.kind not in "fiub":
            raise ValueError(f"{name}: expected numbers, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))
    if t.dtype == torch.bool or not (t.is_floating_point() or t.dtype in _INT_TYPES):
        if t.dtype == torch.bool:
            raise ValueError(f"{name}: expected a floating tensor, got torch.bool")
        raise ValueError(f"{name}: expected a real floating tensor, got {t.dtype}")
    if dtype is not None:
        t = t.to(dtype)
    elif not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t


_INT_TYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype the reduction runs in: the widest input float type, at least float32."""
    out = torch.float32
    for d in dtypes:
        if d in _LOW_PRECISION or d is None:
            continue
        out = torch.promote_types(out, d)
    return out


def to_mask(mask: Any, shape: torch.Size, device: torch.device) -> torch.Tensor | None:
    if mask is None:
        return None
    if isinstance(mask, torch.Tensor):
        m = mask
    else:
        arr = np.asarray(mask)
        if arr.dtype != np.bool_:
            raise ValueError(f"mask: expected booleans (True = keep), got dtype {arr.dtype}")
        m = torch.from_numpy(arr)
    if m.dtype != torch.bool:
        raise ValueError(f"mask: expected a bool tensor (True = keep), got {m.dtype}")
    try:
        m = torch.broadcast_to(m.to(device), shape)
    except RuntimeError as exc:
        raise ValueError(
            f"mask: shape {tuple(m.shape)} does not broadcast to the input shape {tuple(shape)}"
        ) from exc
    return m


def broadcast_to(t: torch.Tensor, shape: torch.Size, name: str, what: str) -> torch.Tensor:
    try:
        return torch.broadcast_to(t, shape)
    except RuntimeError as exc:
        raise ValueError(
            f"{name}: shape {tuple(t.shape)} does not broadcast to the {what} shape {tuple(shape)}"
        ) from exc


def first_index(bad: torch.Tensor) -> tuple[int, ...]:
    """Index of the first True entry of a bool tensor that has one (for error messages)."""
    return tuple(int(i) for i in torch.nonzero(bad)[0].tolist())


def normalize_dim(dim: int, ndim: int) -> int:
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise ValueError(f"dim: expected an int, got {type(dim).__name__}")
    if ndim == 0:
        raise ValueError("input: expected at least one dimension to reduce, got a 0-d value")
    if not -ndim <= dim < ndim:
        raise ValueError(f"dim: {dim} is out of range for an input with {ndim} dimensions")
    return dim % ndim


def answer(out: torch.Tensor, kind: Kind) -> Any:
    """Return ``out`` in the caller's kind (tensor, ndarray, or float/list)."""
    if kind.kind == "tensor":
        return out
    arr = out.detach().cpu().to(torch.float64).numpy()
    if kind.kind == "numpy":
        return arr.astype(kind.np_dtype, copy=False)
    if arr.ndim == 0:
        return float(arr)
    return arr.tolist()


def check_p_scalar(p: float) -> None:
    if math.isnan(p):
        raise ValueError("p: NaN is not a valid exponent")

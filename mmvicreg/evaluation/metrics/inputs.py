"""Turn user arrays into checked torch tensors, with one clear error per kind of bad input.

Every evaluation function accepts torch tensors or NumPy arrays. Embeddings become floating tensors (float64
stays float64, anything narrower than float32 is upcast to float32); labels and indices become int64.
"""

from __future__ import annotations

from typing import Any, Iterable, Union

import numpy as np
import torch

ArrayLike = Union[torch.Tensor, np.ndarray]


def shape_str(x: Any) -> str:
    """``"(3, 4)"``: a shape as error messages print it."""
    return "(" + ", ".join(str(s) for s in x.shape) + ")"


def _as_tensor(x: object, name: str, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{name} is a NumPy array of dtype {x.dtype}; pass a numeric array of {what}")
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray of {what}, got {type(x).__name__}")


def embeddings(x: object, name: str) -> torch.Tensor:
    """A finite floating (rows, dim) tensor with at least one row and one column."""
    t = _as_tensor(x, name, "shape (rows, dim)")
    if t.dtype == torch.bool or not (t.is_floating_point() or t.dtype in _INT_DTYPES):
        raise TypeError(f"{name} has dtype {t.dtype}; embeddings must be real numbers (pass a float array)")
    if t.ndim != 2:
        fix = "add a row dimension (x[None])" if t.ndim < 2 else "flatten the features (x.reshape(len(x), -1))"
        raise ValueError(f"{name} must be 2-D (rows, dim), got {t.ndim}-D shape {shape_str(t)}; {fix}")
    if t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"{name} has shape {shape_str(t)}; it needs at least one row and one column")
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    # The sum is finite when every entry is (a cheap test on large arrays); only otherwise look row by row,
    # where a finite-but-huge array whose sum merely overflowed passes.
    finite = torch.isfinite(t).all(dim=1) if not bool(torch.isfinite(t.sum())) else None
    if finite is not None and not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten()
        raise ValueError(
            f"{name} (shape {shape_str(t)}) has NaN or infinite values in {bad.numel()} row(s), the first at row "
            f"{int(bad[0])}; the encoder diverged or read a broken input: fix or drop those rows before evaluating"
        )
    return t


def same_width(a: torch.Tensor, a_name: str, b: torch.Tensor, b_name: str, hint: str) -> None:
    """Raise ValueError (ending with ``hint``) unless ``a`` and ``b`` have the same number of columns."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{a_name} has shape {shape_str(a)} and {b_name} has shape {shape_str(b)}: their widths "
            f"{a.shape[1]} and {b.shape[1]} differ; {hint}"
        )


def common_dtype(*ts: torch.Tensor) -> list[torch.Tensor]:
    """Promote to float64 if any input is float64, else float32, all on the first tensor's device."""
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32
    return [t.to(device=ts[0].device, dtype=dtype) for t in ts]


def _integer_vector(x: object, name: str, length: int, length_name: str) -> torch.Tensor:
    t = _as_tensor(x, name, "integers")
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name} has dtype {t.dtype}; it must hold integers (pass x.astype(int) / x.long())")
    if t.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D with one entry per row of {length_name}, got shape {shape_str(t)}"
            + ("; flatten it (x.reshape(-1))" if t.numel() == length else "")
        )
    if t.shape[0] != length:
        raise ValueError(
            f"{name} has {t.shape[0]} entries but {length_name} has {length} rows; they must match one to one"
        )
    return t.long()


def indices(x: object, name: str, length: int, length_name: str, upper: int, upper_name: str) -> torch.Tensor:
    """A 1-D int64 tensor of ``length`` values in ``[0, upper)``."""
    t = _integer_vector(x, name, length, length_name)
    bad = torch.nonzero((t < 0) | (t >= upper)).flatten()
    if bad.numel():
        i = int(bad[0])
        raise ValueError(
            f"{name}[{i}] = {int(t[i])} is out of range: {bad.numel()} value(s) lie outside [0, {upper}), where "
            f"{upper} is the number of {upper_name}; indices are 0-based rows of {upper_name}"
        )
    return t


def labels(x: object, name: str, length: int, length_name: str) -> torch.Tensor:
    """A 1-D int64 tensor of ``length`` class labels in ``[0, num_classes)``."""
    t = _integer_vector(x, name, length, length_name)
    bad = torch.nonzero(t < 0).flatten()
    if bad.numel():
        i = int(bad[0])
        raise ValueError(
            f"{name}[{i}] = {int(t[i])} is negative ({bad.numel()} negative label(s)); class labels must be "
            f"0-based class indices (map them with np.unique(labels, return_inverse=True))"
        )
    return t


def positive_ints(values: Iterable[object], name: str) -> tuple[int, ...]:
    """``values`` as a non-empty tuple of integers ≥ 1 (TypeError / ValueError naming ``name`` otherwise)."""
    try:
        out = tuple(int(v) for v in values)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of positive integers, got {values!r}") from None
    if not out or any(v < 1 for v in out):
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {values!r}")
    return out


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Rows divided by their L2 norm; an all-zero row stays zero (cosine 0 with everything)."""
    return torch.nn.functional.normalize(x, dim=1)


_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)

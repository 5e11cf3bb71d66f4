"""Batched embedding extraction with a progress bar and an optional ``.npy`` cache.

The model's own state is the caller's business: ``encode_fn`` should put its model in eval mode and run under
``torch.no_grad()`` (or ``inference_mode``). This module only batches, collects, caches.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from mmvicreg.evaluation.metrics.inputs import shape_str
from mmvicreg.files import atomic_write

__all__ = ["extract_embeddings"]

_SLICEABLE = (list, tuple, np.ndarray, torch.Tensor)


def extract_embeddings(
    encode_fn: Callable[[Any], Union[torch.Tensor, np.ndarray]],
    items: Iterable[Any],
    batch_size: int = 256,
    cache: Optional[Union[str, os.PathLike]] = None,
    progress: bool = True,
    *,
    as_tensor: bool = False,
    desc: str = "embedding",
) -> Union[np.ndarray, torch.Tensor]:
    """Encode ``items`` batch by batch into one (n, d) array.

    Args:
        encode_fn: maps a batch to a (batch, d) tensor or array.
        items: how batches are made:
            a list, tuple, NumPy array or tensor is sliced, ``items[i : i + batch_size]``;
            another object with ``len`` and integer indexing (a map-style dataset) gives lists
            ``[items[i], ..., items[i + batch_size - 1]]``;
            anything else (a DataLoader, a generator) is iterated and each element is one batch, as is
            (``batch_size`` is then unused).
        batch_size: items per call of ``encode_fn``.
        cache: a ``.npy`` path. If the file exists and holds a 2-D array with one row per item, it is returned
            without encoding anything; otherwise the result is written there atomically
            (:func:`mmvicreg.files.atomic_write`: a temporary file in the same folder, then a rename), so an
            interrupted run never leaves a truncated cache. The path is the only key: put the model/checkpoint
            and split in the file name.
        progress: show a tqdm bar.
        as_tensor: return a CPU ``torch.Tensor`` instead of a NumPy array.
        desc: the progress bar's label.

    Returns:
        (n, d) embeddings, float32 for half-precision outputs and the encoder's dtype otherwise.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    n = _length(items)
    path = Path(cache) if cache is not None else None
    cached = _load(path, n) if path is not None else None
    if cached is not None:
        out = cached
    else:
        out = _encode(encode_fn, items, batch_size, n, progress, desc)
        if path is not None:
            _save_atomically(path, out)
    return torch.from_numpy(out) if as_tensor else out


def _length(items: object) -> Optional[int]:
    """The number of rows the result will have, when it is known before encoding."""
    if isinstance(items, _SLICEABLE) or _is_map_style(items):
        return len(items)  # type: ignore[arg-type]
    dataset = getattr(items, "dataset", None)  # a DataLoader knows its dataset's size
    try:
        return len(dataset) if dataset is not None else None  # type: ignore[arg-type]
    except TypeError:
        return None


def _is_map_style(items: object) -> bool:
    return hasattr(items, "__len__") and hasattr(items, "__getitem__") and not isinstance(items, (str, bytes, dict))


def _batches(items: Any, batch_size: int):
    if isinstance(items, _SLICEABLE):
        for a in range(0, len(items), batch_size):
            yield items[a : a + batch_size]
    elif _is_map_style(items):
        for a in range(0, len(items), batch_size):
            yield [items[i] for i in range(a, min(a + batch_size, len(items)))]
    else:
        yield from items


def _encode(encode_fn, items, batch_size: int, n: Optional[int], progress: bool, desc: str) -> np.ndarray:
    sliced = isinstance(items, _SLICEABLE) or _is_map_style(items)
    parts: list[np.ndarray] = []
    out: Optional[np.ndarray] = None  # preallocated once the width is known, to avoid a concatenation copy
    done = 0
    with tqdm(total=n, desc=desc, unit="item", disable=not progress) as bar:
        for batch in _batches(items, batch_size):
            emb = _to_numpy(encode_fn(batch))
            expected = len(batch) if sliced else None
            if emb.ndim != 2 or (expected is not None and emb.shape[0] != expected):
                raise ValueError(
                    f"encode_fn returned shape {shape_str(emb)} for a batch of {len(batch) if sliced else '?'} items; "
                    f"it must return one row per item, (batch, dim)"
                )
            if n is not None and out is None:
                out = np.empty((n, emb.shape[1]), dtype=emb.dtype)
            if out is not None:
                if done + len(emb) > n or emb.shape[1] != out.shape[1]:  # type: ignore[operator]
                    raise ValueError(
                        f"encode_fn returned shape {shape_str(emb)} after {done} rows; expected {n} rows of width "
                        f"{out.shape[1]} in all"
                    )
                out[done : done + len(emb)] = emb
            else:
                parts.append(emb)
            done += len(emb)
            bar.update(len(emb))
    if out is None:
        if not parts:
            raise ValueError("items is empty: there is nothing to encode")
        return np.concatenate(parts)
    if done != n:
        raise ValueError(f"encoding produced {done} rows but {n} items were expected")
    return out


def _to_numpy(emb: object) -> np.ndarray:
    if isinstance(emb, torch.Tensor):
        emb = emb.detach()
        if emb.dtype in (torch.float16, torch.bfloat16):
            emb = emb.float()
        return emb.cpu().numpy()
    if isinstance(emb, np.ndarray):
        return emb.astype(np.float32) if emb.dtype == np.float16 else emb
    raise TypeError(f"encode_fn must return a torch.Tensor or numpy.ndarray, got {type(emb).__name__}")


def _load(path: Path, n: Optional[int]) -> Optional[np.ndarray]:
    if not path.exists():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        warnings.warn(f"cannot read the embedding cache {path} ({e}); recomputing and overwriting it", stacklevel=3)
        return None
    if arr.ndim == 2 and (n is None or arr.shape[0] == n):
        return arr
    warnings.warn(
        f"the embedding cache {path} holds shape {shape_str(arr)} but {n} items were given; recomputing and "
        f"overwriting it",
        stacklevel=3,
    )
    return None


def _save_atomically(path: Path, arr: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, arr)

    atomic_write(path, write)

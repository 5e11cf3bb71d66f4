"""Labelled data for evaluation: the labelled reference a k-NN vote or a classifier learns from, and the fixed
labelled subsets of semi-supervised evaluation.

* :func:`labelled_memory`: the training source when it has labels, or a labelled reference of its own
  (``eval.reference``, ``--reference``): self-supervised pretraining may see its images without labels.
* :func:`choose_subset`: a subset file (0-based indices, or image ids such as the ImageNet 1 %/10 % files'
  ``n01440764_10026.JPEG``, one per line) or a seeded per-class draw of ``percent`` % of every class (rounded
  up, at least one image), with the record that lets a run be repeated.

Sources are duck-typed: ``labels`` (0-based ints, ``-1`` for none), optionally ``classes``, ``name`` and
``store.path(i)`` (the file behind image ``i``, or None).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["choose_subset", "is_labelled", "labelled_memory", "per_class_subset", "read_subset_file"]


def is_labelled(source: Any) -> bool:
    """Whether every image of ``source`` has a label (none is ``-1``) and it has at least one image."""
    labels = getattr(source, "labels", None)
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    return len(labels) > 0 and bool((labels >= 0).all())


def labelled_memory(train_source: Any, reference: Any = None, *, split: str = "train") -> Any:
    """The labelled source that k-NN (or a classifier) learns from: ``reference``, else ``train_source``.

    ``reference`` is a data section (a mapping such as ``{"format": "digits", "split": "train"}``, built with
    :func:`mmvicreg.data.build_source` for ``split``) or a source already built. Raises ValueError in one line
    when the result has no labels, naming the fix (``eval.reference``).
    """
    if isinstance(reference, Mapping):
        from mmvicreg.data import build_source

        reference = build_source(reference, split)
    memory = reference if reference is not None else train_source
    if memory is None or not is_labelled(memory):
        what = "eval.reference" if reference is not None else "the training source"
        name = getattr(memory, "name", None) or type(memory).__name__
        raise ValueError(
            f"{what} ({name}) has images without labels, so it cannot be the labelled memory of k-NN or a linear "
            f"classifier; set eval.reference (the knn command: --reference) to a labelled data section, e.g. "
            f"{{format: digits, split: train}} or {{format: folder, images: DIR}}"
        )
    return memory


def choose_subset(
    source: Any, percent: float | None = None, subset: Any = None, seed: int = 0
) -> tuple[list[int] | None, dict[str, Any] | None]:
    """``(indices, record)`` of the labelled training images to use; ``(None, None)`` for all of them.

    ``percent`` draws :func:`per_class_subset`; ``subset`` (a path) reads :func:`read_subset_file`; not both.
    The record names how the subset was made (``kind``, ``percent`` and ``seed``, or ``file``), its size and its
    indices (and the ids read from the file).
    """
    if percent is not None and subset is not None:
        raise ValueError("give a subset file or a train percent, not both")
    if subset is not None:
        indices, ids = read_subset_file(subset, source)
        record: dict[str, Any] = {"kind": "file", "file": str(subset), "num_images": len(indices), "indices": indices}
        return indices, {**record, "ids": ids} if ids is not None else record
    if percent is None:
        return None, None
    indices = per_class_subset(source.labels, percent, seed)
    if len(indices) == len(source.labels):
        return None, None
    labels = np.asarray(source.labels)[indices]
    classes = list(getattr(source, "classes", None) or [])
    counts = {(classes[c] if c < len(classes) else str(c)): int(n) for c, n in zip(*np.unique(labels, return_counts=True))}
    return indices, {"kind": "per_class", "percent": percent, "seed": seed, "num_images": len(indices),
                     "per_class": counts, "indices": indices}


def per_class_subset(labels: Any, percent: float, seed: int = 0) -> list[int]:
    """Sorted indices of ``ceil(percent % of each class)`` images (at least one) drawn with ``seed``.

    Labels ``-1`` (no label) are never drawn. Each class is drawn from its own generator (``seed``, class), so
    a class's draw does not depend on the other classes.
    """
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent <= 100:
        raise ValueError(f"train percent must be a number in (0, 100], got {percent!r}")
    labels = np.asarray(labels, dtype=np.int64)
    chosen: list[int] = []
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        k = max(1, math.ceil(percent / 100 * len(members) - 1e-9))
        rng = np.random.default_rng([seed, int(c)])
        chosen.extend(int(i) for i in rng.choice(members, size=min(k, len(members)), replace=False))
    if not chosen:
        raise ValueError("the training source has no labelled images to draw a subset from")
    return sorted(chosen)


def read_subset_file(path: Any, source: Any) -> tuple[list[int], list[str] | None]:
    """``(indices, ids)`` of the images a subset file lists, in the file's order, duplicates dropped.

    One entry per line (blank lines and ``#`` comments skipped): all 0-based indices (``ids`` is then None), or
    all image ids: a file name (``n01440764_10026.JPEG``), ``class/name`` or the full path of an image of
    ``source``. An entry that is not an image of ``source`` raises ValueError naming the file and line.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"subset file {p} does not exist")
    entries = [(n, line.strip()) for n, line in enumerate(p.read_text().splitlines(), 1)]
    entries = [(n, e) for n, e in entries if e and not e.startswith("#")]
    if not entries:
        raise ValueError(f"subset file {p} lists no images")
    name, size = getattr(source, "name", type(source).__name__), len(source.labels)
    if all(_is_int(e) for _, e in entries):
        for n, e in entries:
            if not 0 <= int(e) < size:
                raise ValueError(f"subset file {p}, line {n}: index {e} is out of range for the {size} images of {name}")
        return list(dict.fromkeys(int(e) for _, e in entries)), None
    lookup = _id_lookup(source)
    indices = []
    for n, e in entries:
        i = lookup.get(e.replace("\\", "/"))
        if i is None or i < 0:
            why = "names more than one image" if i is not None else "is not an image of"
            example = next(iter(lookup), None)
            hint = f" (ids are file names such as {example!r}, or 0-based indices)" if example else (
                "; its images have no file names, so list 0-based indices")
            raise ValueError(f"subset file {p}, line {n}: {e!r} {why} {name}{hint}")
        indices.append(i)
    kept = list(dict.fromkeys(indices))
    return kept, [entries[indices.index(i)][1] for i in kept]


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _id_lookup(source: Any) -> dict[str, int]:
    """``{id: index}`` for every image with a file: its path, ``parent/name`` and ``name`` (-1: ambiguous)."""
    store = getattr(source, "store", None)
    lookup: dict[str, int] = {}
    for i in range(len(source.labels)):
        path = store.path(i) if store is not None and hasattr(store, "path") else None
        if not path:
            continue
        parts = Path(path).parts
        for key in {str(Path(path).as_posix()), "/".join(parts[-2:]), parts[-1]}:
            lookup[key] = i if key not in lookup or lookup[key] == i else -1
    return lookup

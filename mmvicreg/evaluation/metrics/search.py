"""Top-k inner-product search with FAISS: the exact flat index and the approximate HNSW and IVF indexes.

The only module that talks to FAISS. Callers pass L2-normalised rows, so inner product = cosine similarity.

* ``"flat"``  ``IndexFlatIP``: exact; FAISS tiles the query×gallery product internally, so memory stays
  bounded whatever the gallery size.
* ``"hnsw"``  ``IndexHNSWFlat``: graph search; options ``m`` (graph degree, 32), ``ef_construction`` (80),
  ``ef_search`` (128). Build time grows ~ n log n; recall rises with ``ef_search``.
* ``"ivf"``   ``IndexIVFFlat``: k-means cells (10 iterations on at most 64 points per cell); options ``nlist``
  (cells, default 4·√n), ``nprobe`` (cells visited per query, 16). A query scans about ``nprobe / nlist`` of
  the gallery.

Approximate indexes may miss true neighbours (and then return fewer than k hits, padded with id -1).
Measured in benchmarks/RESULTS.md (20,000 images × 100,000 captions, d = 256, 2 CPU cores): building an index
for one evaluation did not beat the exact pass without losing recall (IVF: about as fast, R@K up to 30 points
lower; HNSW: 2 points lower, 7× slower). Cross-modal queries sit far from their targets, which partition-based
search handles badly. Use them only where the exact O(N·M·d) pass is out of reach, and check the loss on a
subsample against ``index="exact"``.

**GPU.** With a GPU build of FAISS (``faiss-gpu``) and a visible GPU, :func:`on_faiss_device` copies a built flat
or IVF index to every GPU for searching (``faiss.index_cpu_to_all_gpus``); otherwise, and always for HNSW (FAISS
has no GPU HNSW), search runs on the CPU. :func:`faiss_device` says which, before anything is built. Indexes are
built, trained and saved on the CPU either way, so a saved index reads on any machine.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Mapping, Optional

import faiss
import numpy as np
import torch

from mmvicreg.choices import INDEX_KINDS, check_choice

_OPTIONS = {"flat": set(), "hnsw": {"m", "ef_construction", "ef_search"}, "ivf": {"nlist", "nprobe"}}
GPU_KINDS = ("flat", "ivf")  # the kinds FAISS can search on a GPU


def as_faiss(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """C-contiguous float32 NumPy rows, the only layout FAISS accepts."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def build_index(vectors: np.ndarray, kind: str = "flat", options: Optional[Mapping[str, Any]] = None):
    """An inner-product FAISS index of ``kind`` holding the rows of ``vectors`` (n, d) float32 (on the CPU)."""
    n, d = vectors.shape
    index = new_index(d, kind, options, n)
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    return index


def new_index(d: int, kind: str = "flat", options: Optional[Mapping[str, Any]] = None, n: int = 0):
    """An empty inner-product FAISS index of ``kind`` for rows of width ``d``, on the CPU.

    ``"ivf"`` must be trained (``index.train(rows)``) before rows are added; ``n`` is the number of training rows,
    which sizes its default ``nlist`` and bounds a given one. Flat and HNSW indexes need no training.
    """
    check_choice(kind, INDEX_KINDS, "index")
    options = dict(options or {})
    unknown = set(options) - _OPTIONS[kind]
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for a {kind!r} index; it takes {sorted(_OPTIONS[kind]) or 'none'}"
        )
    if kind == "flat":
        return faiss.IndexFlatIP(d)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, int(options.get("m", 32)), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(options.get("ef_construction", 80))
        index.hnsw.efSearch = int(options.get("ef_search", 128))
        return index
    # k-means wants ~39 points per cell at least; 4·√n cells is the usual starting point.
    nlist = int(options.get("nlist", max(1, min(int(4 * math.sqrt(n)), n // 39))))
    if not 1 <= nlist <= n:
        raise ValueError(f"ivf nlist must be in [1, {n}] (the gallery size), got {nlist}")
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.spherical = True  # centroids on the unit sphere, matching normalised rows
    # Training cost (k-means: points × nlist × d × iterations) must stay well below an exact search's
    # (queries × n × d) or the index is not worth building: FAISS's 256 points per centroid and 25
    # iterations are tuned for indexes built once and queried forever, not for one evaluation.
    index.cp.max_points_per_centroid = 64
    index.cp.min_points_per_centroid = 1  # small galleries: no warning, k-means copes
    index.cp.niter = 10
    index.nprobe = min(nlist, int(options.get("nprobe", 16)))
    return index


def faiss_device(kind: Optional[str] = None) -> str:
    """``"gpu"`` when FAISS is a GPU build, a GPU is visible and ``kind`` (if given) has a GPU index; else ``"cpu"``."""
    if kind is not None and kind not in GPU_KINDS:
        return "cpu"
    return "gpu" if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0 else "cpu"


def on_faiss_device(index, kind: str):
    """``(index, device)``: the built ``kind`` index copied to every GPU when :func:`faiss_device` says ``"gpu"``,
    else ``index`` itself and ``"cpu"``."""
    device = faiss_device(kind)
    if device == "gpu":
        index = faiss.index_cpu_to_all_gpus(index)
    return index, device


def read_index(path: str | os.PathLike):
    """The FAISS index saved at ``path`` (on the CPU)."""
    return faiss.read_index(os.fspath(path))


def write_index(index, path: str | os.PathLike) -> None:
    """Save a CPU ``index`` to ``path`` (the caller makes the write atomic)."""
    faiss.write_index(index, os.fspath(path))


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar gallery rows per query, best first: (similarities (q, k) float32, ids (q, k) int64).

    ``k`` is clipped to the gallery size. Ids of -1 mark slots an approximate index could not fill.
    """
    k = min(int(k), index.ntotal)
    return index.search(queries, k)


def knn_search(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-``k`` of ``queries`` (q, d) among the rows of ``gallery`` (n, d), both C-contiguous
    float32, searched in place (no index, no copy of the gallery): ``(similarities (q, k), ids (q, k))``, best first.

    ``k`` is clipped to the gallery size. On the GPU (``faiss.knn_gpu``) when :func:`faiss_device` says so, else
    ``faiss.knn``.
    """
    k = min(int(k), gallery.shape[0])
    if faiss_device("flat") == "gpu":
        return faiss.knn_gpu(_gpu_resources(), queries, gallery, k, metric=faiss.METRIC_INNER_PRODUCT)
    return faiss.knn(queries, gallery, k, metric=faiss.METRIC_INNER_PRODUCT)


@functools.lru_cache(maxsize=1)
def _gpu_resources():
    """One set of FAISS GPU resources (temporary memory, streams) for the process: costly to create per call."""
    return faiss.StandardGpuResources()

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
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import faiss
import numpy as np
import torch

from mmvicreg.choices import INDEX_KINDS, check_choice

_OPTIONS = {"flat": set(), "hnsw": {"m", "ef_construction", "ef_search"}, "ivf": {"nlist", "nprobe"}}


def as_faiss(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """C-contiguous float32 NumPy rows, the only layout FAISS accepts."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def build_index(vectors: np.ndarray, kind: str = "flat", options: Optional[Mapping[str, Any]] = None):
    """An inner-product FAISS index of ``kind`` holding the rows of ``vectors`` (n, d) float32."""
    check_choice(kind, INDEX_KINDS, "index")
    options = dict(options or {})
    unknown = set(options) - _OPTIONS[kind]
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for a {kind!r} index; it takes {sorted(_OPTIONS[kind]) or 'none'}"
        )
    n, d = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, int(options.get("m", 32)), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(options.get("ef_construction", 80))
        index.hnsw.efSearch = int(options.get("ef_search", 128))
    else:
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
        index.train(vectors)
        index.nprobe = min(nlist, int(options.get("nprobe", 16)))
    index.add(vectors)
    return index


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar gallery rows per query, best first: (similarities (q, k) float32, ids (q, k) int64).

    ``k`` is clipped to the gallery size. Ids of -1 mark slots an approximate index could not fill.
    """
    k = min(int(k), index.ntotal)
    return index.search(queries, k)

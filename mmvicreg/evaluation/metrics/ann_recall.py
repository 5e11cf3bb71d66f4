"""Approximate indexes that say how approximate they are: the kind chosen from the collection size, and recall@10
against exact search measured on a sample while the index is built, its search breadth raised until it reaches a
target (as autofaiss tunes an index for recall).

* :func:`choose_kind` — ``"flat"`` (exact) below :data:`FLAT_LIMIT` items, ``"ivf"`` from there (k-means cells:
  memory is the vectors alone, build time a k-means on a sample);
* :class:`ExactNeighbours` — the exact top ``k`` of sample rows (of the first chunk) among all rows, kept up to date
  chunk by chunk while the rows stream past (memory: the sample and its k best, never the collection);
* :func:`tune_recall` — recall@k of the built index on those samples; an IVF index's ``nprobe`` (an HNSW index's
  ``efSearch``) doubles until recall reaches ``target`` or cannot grow further.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FLAT_LIMIT = 100_000  # below this many items an exact (flat) index is fast enough on one CPU
RECALL_K = 10
SAMPLE = 500  # sample queries for the recall check
TARGET = 0.95

__all__ = ["ExactNeighbours", "choose_kind", "tune_recall"]


def choose_kind(n: int) -> str:
    """The FAISS index kind for ``n`` items: flat below :data:`FLAT_LIMIT`, else IVF."""
    return "flat" if n < FLAT_LIMIT else "ivf"


class ExactNeighbours:
    """Exact top-``k`` inner products of sample rows among all rows, updated chunk by chunk (:meth:`update`, rows in
    order). The samples are ``sample`` evenly spaced rows of the first chunk: every later row is then compared with
    them as it passes, so nothing but the samples and their k best is kept."""

    def __init__(self, k: int = RECALL_K, sample: int = SAMPLE) -> None:
        self.k, self.sample = k, sample
        self.queries: np.ndarray | None = None
        self.scores: np.ndarray | None = None
        self.ids: np.ndarray | None = None
        self.seen = 0

    def update(self, rows: np.ndarray) -> None:
        if self.queries is None:
            picks = np.unique(np.linspace(0, len(rows) - 1, min(self.sample, len(rows))).astype(np.int64))
            self.queries = np.ascontiguousarray(rows[picks], dtype=np.float32)
            self.scores = np.full((len(picks), self.k), -np.inf, dtype=np.float32)
            self.ids = np.full((len(picks), self.k), -1, dtype=np.int64)
        scores = self.queries @ rows.T  # (s, chunk)
        ids = np.broadcast_to(np.arange(self.seen, self.seen + len(rows)), scores.shape)
        all_scores = np.concatenate([self.scores, scores], axis=1)
        all_ids = np.concatenate([self.ids, ids], axis=1)
        top = np.argsort(-all_scores, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(all_scores, top, axis=1)
        self.ids = np.take_along_axis(all_ids, top, axis=1)
        self.seen += len(rows)


def recall_at_k(index: Any, queries: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """The mean share of each query's exact top ``k`` that ``index`` returns in its top ``k``."""
    from mmvicreg.evaluation.metrics.search import search

    _, found = search(index, np.ascontiguousarray(queries, dtype=np.float32), k)
    hits = [len(set(f[f >= 0]) & set(e)) for f, e in zip(found, exact_ids)]
    return float(np.mean(hits)) / k


def tune_recall(index: Any, kind: str, neighbours: ExactNeighbours, target: float = TARGET) -> dict[str, Any]:
    """Recall@k of ``index`` on the sample; for IVF (``nprobe``) and HNSW (``efSearch``) the breadth doubles until
    recall ≥ ``target`` or it cannot grow. Returns ``{"recall_at_10", "sample", **the breadth chosen}``."""
    q, k = neighbours.queries, min(neighbours.k, neighbours.seen)
    exact = neighbours.ids[:, :k]
    recall = recall_at_k(index, q, exact, k)
    knob: dict[str, int] = {}
    if kind == "ivf":
        while recall < target and index.nprobe < index.nlist:
            index.nprobe = min(index.nlist, 2 * index.nprobe)
            recall = recall_at_k(index, q, exact, k)
        knob = {"nprobe": int(index.nprobe)}
    elif kind == "hnsw":
        while recall < target and index.hnsw.efSearch < 4096:
            index.hnsw.efSearch *= 2
            recall = recall_at_k(index, q, exact, k)
        knob = {"ef_search": int(index.hnsw.efSearch)}
    return {f"recall_at_{RECALL_K}": round(recall, 4), "sample": int(len(q)), **knob}

"""Approximate indexes report their recall@10 against exact search, measured while they are built."""

import numpy as np
import pytest

from mmvicreg.evaluation.metrics.ann_recall import FLAT_LIMIT, ExactNeighbours, choose_kind, recall_at_k, tune_recall
from mmvicreg.evaluation.metrics.search import new_index


def _clustered(n, d=32, clusters=50, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(clusters, d))[rng.integers(clusters, size=n)] + 0.35 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_streamed_exact_neighbours_equal_brute_force():
    rows = _clustered(3000)
    exact = ExactNeighbours(k=10, sample=40)
    for lo in range(0, len(rows), 700):
        exact.update(rows[lo : lo + 700])
    brute = np.argsort(-(exact.queries @ rows.T), axis=1, kind="stable")[:, :10]
    assert exact.queries.shape == (40, 32) and exact.seen == 3000
    assert (np.sort(exact.ids, axis=1) == np.sort(brute, axis=1)).mean() > 0.999  # ties aside, the same rows


def test_ivf_breadth_rises_until_recall_reaches_the_target():
    rows = _clustered(20_000)
    index = new_index(32, "ivf", {"nprobe": 1}, n=len(rows))
    index.train(rows)
    index.add(rows)
    exact = ExactNeighbours()
    for lo in range(0, len(rows), 4096):
        exact.update(rows[lo : lo + 4096])
    before = recall_at_k(index, exact.queries, exact.ids, 10)
    report = tune_recall(index, "ivf", exact)
    assert before < 0.95 <= report["recall_at_10"] and report["nprobe"] > 1 and report["sample"] == 500
    assert recall_at_k(index, exact.queries, exact.ids, 10) == pytest.approx(report["recall_at_10"], abs=1e-4)


def test_the_kind_follows_the_collection_size():
    assert choose_kind(FLAT_LIMIT - 1) == "flat" and choose_kind(FLAT_LIMIT) == "ivf"

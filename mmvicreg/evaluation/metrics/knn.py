"""Weighted k-NN classification on frozen features (the DINO / VICReg k-NN protocol).

For a test feature q whose k most cosine-similar training features have similarities s_1 ≥ … ≥ s_k and
labels y_1 … y_k:

    score(c) = Σ_{i ≤ k, y_i = c} exp(s_i / T),        prediction = argmax_c score(c)

with T = 0.07 by default. Ties in score go to the smallest class index. Neighbours come from an exact FAISS
inner-product search over L2-normalised features (float32, searched in place, no index copy); among training
features exactly as similar as the k-th neighbour, FAISS's order decides which are kept.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from mmvicreg.evaluation.metrics import inputs
from mmvicreg.evaluation.metrics.search import as_faiss, knn_search

__all__ = ["KNNMemory", "knn_classify", "knn_classify_memory", "knn_predict"]

_VOTE_ENTRIES = 2**24  # test rows × classes held at once by the vote


class KNNMemory:
    """The reference side of k-NN, filled batch by batch: L2-normalised float32 features written into one array
    of ``capacity`` rows (allocated at the first batch; the only copy: memory grows by n·d·4 bytes, no more) and
    their labels. Searched in place by :func:`~mmvicreg.evaluation.metrics.search.knn_search` (no index copy)."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.size = int(capacity), 0
        self.features: np.ndarray | None = None
        self.labels = np.empty(self.capacity, dtype=np.int64)

    def add(self, feats: inputs.ArrayLike, labels: inputs.ArrayLike) -> None:
        """Append ``feats`` (b, d) with their 0-based integer ``labels`` (b,)."""
        x = inputs.embeddings(feats, "reference features")
        y = inputs.labels(labels, "reference labels", x.shape[0], "reference features")
        if self.features is None:
            self.features = np.empty((self.capacity, x.shape[1]), dtype=np.float32)
        if x.shape[1] != self.features.shape[1]:
            raise ValueError(f"reference features of width {x.shape[1]} added to a k-NN memory of width "
                             f"{self.features.shape[1]}")
        end = self.size + x.shape[0]
        if end > self.capacity:
            raise ValueError(f"{end} reference features exceed the k-NN memory's capacity of {self.capacity}")
        self.features[self.size : end] = as_faiss(inputs.l2_normalize(x))
        self.labels[self.size : end] = y.cpu().numpy()
        self.size = end

    def __len__(self) -> int:
        return self.size

    @property
    def dim(self) -> int | None:
        return None if self.features is None else int(self.features.shape[1])


def knn_classify_memory(
    memory: KNNMemory,
    test_feats: inputs.ArrayLike,
    test_labels: inputs.ArrayLike,
    ks: Sequence[int] = (20, 200),
    temperature: float = 0.07,
) -> dict[str, float]:
    """:func:`knn_classify` against a :class:`KNNMemory` filled batch by batch (same result, bounded memory)."""
    if len(memory) == 0:
        raise ValueError("the k-NN reference set is empty; give a labelled reference source with images")
    test = inputs.embeddings(test_feats, "test_feats")
    if test.shape[1] != memory.dim:
        raise ValueError(
            f"test_feats {inputs.shape_str(test)} and the reference features (width {memory.dim}) differ in "
            f"width; extract both with the same backbone and layer"
        )
    ks = _checked_ks(ks, len(memory), temperature)
    truth = inputs.labels(test_labels, "test_labels", test.shape[0], "test_feats")
    gallery, labels = memory.features[: len(memory)], torch.from_numpy(memory.labels[: len(memory)])
    out: dict[str, float] = {}
    for k, pred in _predict(gallery, labels, test, ks, temperature).items():
        out[f"top1_k{k}"] = 100.0 * float((pred == truth).double().mean())
    out["num_train"] = len(memory)
    out["num_test"] = int(test.shape[0])
    return out


def knn_predict(
    train_feats: inputs.ArrayLike,
    train_labels: inputs.ArrayLike,
    test_feats: inputs.ArrayLike,
    ks: Sequence[int] = (20, 200),
    temperature: float = 0.07,
) -> dict[int, torch.Tensor]:
    """Predicted class (int64, shape (n_test,)) of every test feature for each k in ``ks``."""
    train, labels, test, ks = _checked(train_feats, train_labels, test_feats, ks, temperature)
    return _predict(as_faiss(inputs.l2_normalize(train)), labels, test, ks, temperature)


def knn_classify(
    train_feats: inputs.ArrayLike,
    train_labels: inputs.ArrayLike,
    test_feats: inputs.ArrayLike,
    test_labels: inputs.ArrayLike,
    ks: Sequence[int] = (20, 200),
    temperature: float = 0.07,
) -> dict[str, float]:
    """Top-1 accuracy (percent) of the weighted k-NN vote, for each k.

    Args:
        train_feats, test_feats: (n_train, d) and (n_test, d) frozen features (the backbone representation h,
            not the expander output, as published), torch or NumPy.
        train_labels, test_labels: 0-based integer class labels, one per row.
        ks: neighbourhood sizes; each must be ≤ n_train.
        temperature: T in the weights exp(s / T).

    Returns:
        ``top1_k{k}`` for each k, plus ``num_train`` and ``num_test``.
    """
    train, _, _, _ = _checked(train_feats, train_labels, test_feats, ks, temperature)
    memory = KNNMemory(train.shape[0])
    memory.add(train_feats, train_labels)
    return knn_classify_memory(memory, test_feats, test_labels, ks, temperature)


def _checked(train_feats, train_labels, test_feats, ks, temperature):
    train = inputs.embeddings(train_feats, "train_feats")
    test = inputs.embeddings(test_feats, "test_feats")
    inputs.same_width(train, "train_feats", test, "test_feats", "extract both with the same backbone and layer")
    labels = inputs.labels(train_labels, "train_labels", train.shape[0], "train_feats")
    return train, labels, test, _checked_ks(ks, train.shape[0], temperature)


def _checked_ks(ks, n_train: int, temperature: float) -> tuple[int, ...]:
    ks = inputs.positive_ints(ks, "ks")
    if max(ks) > n_train:
        raise ValueError(
            f"k = {max(ks)} exceeds the {n_train} training features; "
            f"pass ks no larger than the training set, e.g. ks={tuple(k for k in ks if k <= n_train) or (1,)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    return ks


def _predict(gallery: np.ndarray, labels, test, ks, temperature) -> dict[int, torch.Tensor]:
    queries = as_faiss(inputs.l2_normalize(test))
    num_classes = int(labels.max()) + 1
    labels_np = labels.cpu().numpy()
    preds = {k: np.empty(len(queries), dtype=np.int64) for k in ks}
    chunk = max(1, _VOTE_ENTRIES // num_classes)
    for a in range(0, len(queries), chunk):
        sims, ids = knn_search(gallery, queries[a : a + chunk], max(ks))
        sims, neighbour_labels = torch.from_numpy(sims), torch.from_numpy(labels_np[ids])
        for k in ks:
            # exp((s - s_1)/T) = exp(s/T)·const per row: the same argmax, and no overflow for small T.
            weights = torch.exp((sims[:, :k] - sims[:, :1]) / temperature)
            votes = torch.zeros(len(sims), num_classes, dtype=torch.float64)
            votes.scatter_add_(1, neighbour_labels[:, :k], weights.double())
            preds[k][a : a + chunk] = votes.argmax(dim=1).numpy()  # first maximum: ties → smallest class
    return {k: torch.from_numpy(p) for k, p in preds.items()}

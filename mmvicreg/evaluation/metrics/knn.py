"""Weighted k-NN classification on frozen features (the DINO / VICReg k-NN protocol).

For a test feature q whose k most cosine-similar training features have similarities s_1 ≥ … ≥ s_k and
labels y_1 … y_k:

    score(c) = Σ_{i ≤ k, y_i = c} exp(s_i / T),        prediction = argmax_c score(c)

with T = 0.07 by default. Ties in score go to the smallest class index. Neighbours come from an exact FAISS
inner-product search over L2-normalised features (float32); among training features exactly as similar as the
k-th neighbour, FAISS's order decides which are kept.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from mmvicreg.evaluation.metrics import inputs
from mmvicreg.evaluation.metrics.search import as_faiss, build_index, search

__all__ = ["knn_classify", "knn_predict"]

_VOTE_ENTRIES = 2**24  # test rows × classes held at once by the vote


def knn_predict(
    train_feats: inputs.ArrayLike,
    train_labels: inputs.ArrayLike,
    test_feats: inputs.ArrayLike,
    ks: Sequence[int] = (20, 200),
    temperature: float = 0.07,
) -> dict[int, torch.Tensor]:
    """Predicted class (int64, shape (n_test,)) of every test feature for each k in ``ks``."""
    train, labels, test, ks = _checked(train_feats, train_labels, test_feats, ks, temperature)
    return _predict(train, labels, test, ks, temperature)


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
    train, labels, test, ks = _checked(train_feats, train_labels, test_feats, ks, temperature)
    truth = inputs.labels(test_labels, "test_labels", test.shape[0], "test_feats")
    out: dict[str, float] = {}
    for k, pred in _predict(train, labels, test, ks, temperature).items():
        out[f"top1_k{k}"] = 100.0 * float((pred == truth).double().mean())
    out["num_train"] = int(train.shape[0])
    out["num_test"] = int(test.shape[0])
    return out


def _checked(train_feats, train_labels, test_feats, ks, temperature):
    train = inputs.embeddings(train_feats, "train_feats")
    test = inputs.embeddings(test_feats, "test_feats")
    inputs.same_width(train, "train_feats", test, "test_feats", "extract both with the same backbone and layer")
    labels = inputs.labels(train_labels, "train_labels", train.shape[0], "train_feats")
    ks = inputs.positive_ints(ks, "ks")
    if max(ks) > train.shape[0]:
        raise ValueError(
            f"k = {max(ks)} exceeds the {train.shape[0]} training features (train_feats {inputs.shape_str(train)}); "
            f"pass ks no larger than the training set, e.g. ks={tuple(k for k in ks if k <= train.shape[0]) or (1,)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    return train, labels, test, ks


def _predict(train, labels, test, ks, temperature) -> dict[int, torch.Tensor]:
    index = build_index(as_faiss(inputs.l2_normalize(train)), "flat")
    queries = as_faiss(inputs.l2_normalize(test))
    num_classes = int(labels.max()) + 1
    labels_np = labels.cpu().numpy()
    preds = {k: np.empty(len(queries), dtype=np.int64) for k in ks}
    chunk = max(1, _VOTE_ENTRIES // num_classes)
    for a in range(0, len(queries), chunk):
        sims, ids = search(index, queries[a : a + chunk], max(ks))
        sims, neighbour_labels = torch.from_numpy(sims), torch.from_numpy(labels_np[ids])
        for k in ks:
            # exp((s - s_1)/T) = exp(s/T)·const per row: the same argmax, and no overflow for small T.
            weights = torch.exp((sims[:, :k] - sims[:, :1]) / temperature)
            votes = torch.zeros(len(sims), num_classes, dtype=torch.float64)
            votes.scatter_add_(1, neighbour_labels[:, :k], weights.double())
            preds[k][a : a + chunk] = votes.argmax(dim=1).numpy()  # first maximum: ties → smallest class
    return {k: torch.from_numpy(p) for k, p in preds.items()}

"""knn_classify / knn_predict: a brute-force vote, separable and random-label limits, bad input."""

import math

import numpy as np
import pytest
import torch

from mmvicreg.evaluation import knn_classify, knn_predict


def brute_force_knn(train, train_labels, test, k, temperature):
    """For each test row: cosine to every train row, keep the k largest, sum exp(s/T) per class, take the best."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    preds = []
    for q in test:
        sims = train @ q
        nearest = np.argsort(-sims)[:k]
        votes = {}
        for i in nearest:
            votes[train_labels[i]] = votes.get(train_labels[i], 0.0) + math.exp(sims[i] / temperature)
        best = max(votes.values())
        preds.append(min(c for c, v in votes.items() if v == best))
    return np.array(preds)


def clusters(n, num_classes, d, spread, seed, centers=None):
    rng = np.random.default_rng(seed)
    if centers is None:
        centers = rng.standard_normal((num_classes, d))
    y = rng.integers(0, num_classes, n)
    return (centers[y] + spread * rng.standard_normal((n, d))).astype(np.float32), y, centers


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_vote_equals_brute_force(temperature):
    train, y, centers = clusters(120, 4, 6, spread=1.0, seed=0)
    test, _, _ = clusters(40, 4, 6, spread=1.0, seed=1, centers=centers)
    ours = knn_predict(train, y, test, ks=(1, 5, 20), temperature=temperature)
    for k, pred in ours.items():
        np.testing.assert_array_equal(pred.numpy(), brute_force_knn(train, y, test, k, temperature), err_msg=f"k={k}")


def test_hand_worked_vote():
    # Query (1, 0). Neighbours by cosine: (1, 0.1) class 0 (0.995), (1, 0.3) class 1 (0.958), (1, 0.4) class 1
    # (0.928), then (0, 1) class 0 (0). k=1 → class 0; k=3 with T=1: e^0.995 = 2.70 for class 0 against
    # e^0.958 + e^0.928 = 2.61 + 2.53 = 5.14 for class 1 → class 1; with T = 0.01 the closest dominates: class 0.
    train = np.array([[1.0, 0.1], [1.0, 0.3], [1.0, 0.4], [0.0, 1.0]])
    y = np.array([0, 1, 1, 0])
    q = np.array([[1.0, 0.0]])
    assert knn_predict(train, y, q, ks=(1, 3), temperature=1.0) == {1: torch.tensor([0]), 3: torch.tensor([1])}
    assert knn_predict(train, y, q, ks=(3,), temperature=0.01)[3].tolist() == [0]


def test_separable_clusters_near_100():
    train, y, centers = clusters(3000, 10, 32, spread=0.3, seed=2)
    test, y_test, _ = clusters(500, 10, 32, spread=0.3, seed=3, centers=centers)
    m = knn_classify(train, y, test, y_test)
    assert m["top1_k20"] >= 99 and m["top1_k200"] >= 99
    assert (m["num_train"], m["num_test"]) == (3000, 500)


def test_random_labels_near_chance():
    train, _, centers = clusters(3000, 10, 32, spread=0.3, seed=4)
    test, y_test, _ = clusters(1000, 10, 32, spread=0.3, seed=5, centers=centers)
    rng = np.random.default_rng(6)  # labels independent of the features, train and test alike
    y_random, y_test = rng.integers(0, 10, len(train)), rng.integers(0, 10, len(test))
    m = knn_classify(torch.from_numpy(train), torch.from_numpy(y_random), test, y_test)
    for k in (20, 200):
        assert abs(m[f"top1_k{k}"] - 10) < 5, m  # chance is 10%, sd of the estimate ≈ 1


def test_tiny_temperature_does_not_overflow():
    # exp(1/T) alone is inf for T = 1e-5; the vote must still work, and becomes the nearest neighbour's label.
    train, y, centers = clusters(300, 3, 8, spread=1.0, seed=7)
    test, _, _ = clusters(50, 3, 8, spread=1.0, seed=8, centers=centers)
    cold = knn_predict(train, y, test, ks=(20,), temperature=1e-5)[20]
    nearest = knn_predict(train, y, test, ks=(1,))[1]
    assert torch.equal(cold, nearest)
    assert not torch.equal(knn_predict(train, y, test, ks=(20,))[20], nearest)  # the test can tell them apart


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((np.ones((5, 3)), np.arange(5), np.ones((2, 4)), np.zeros(2, int)), {"ks": (2,)}, ValueError,
         r"train_feats has shape \(5, 3\) and test_feats has shape \(2, 4\)"),
        ((np.ones((5, 3)), np.arange(5), np.ones((2, 3)), np.zeros(2, int)), {}, ValueError,
         r"k = 200 exceeds the 5 training features.*ks=\(1,\)"),
        ((np.ones((5, 3)), np.arange(4), np.ones((2, 3)), np.zeros(2, int)), {"ks": (2,)}, ValueError,
         "train_labels has 4 entries but train_feats has 5 rows"),
        ((np.ones((5, 3)), -np.arange(5), np.ones((2, 3)), np.zeros(2, int)), {"ks": (2,)}, ValueError,
         r"train_labels\[1\] = -1 is negative"),
        ((np.ones((5, 3)), np.arange(5.0), np.ones((2, 3)), np.zeros(2, int)), {"ks": (2,)}, TypeError,
         "train_labels has dtype"),
        ((np.ones((5, 3)), np.arange(5), np.full((2, 3), np.nan), np.zeros(2, int)), {"ks": (2,)}, ValueError,
         "test_feats .* NaN"),
        ((np.ones((5, 3)), np.arange(5), np.ones((2, 3)), np.zeros(3, int)), {"ks": (2,)}, ValueError,
         "test_labels has 3 entries but test_feats has 2 rows"),
        ((np.ones((5, 3)), np.arange(5), np.ones((2, 3)), np.zeros(2, int)), {"ks": (2,), "temperature": 0}, ValueError,
         "temperature must be positive"),
    ],
)
def test_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        knn_classify(*args, **kwargs)

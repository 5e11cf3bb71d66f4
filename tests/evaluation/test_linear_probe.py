"""linear_probe on synthetic frozen features: separable clusters, random labels, determinism, bad input."""

import numpy as np
import pytest
import torch

from mmvicreg.evaluation import linear_probe


def clusters(n, num_classes, d, spread, seed, centers=None, scale=1.0):
    rng = np.random.default_rng(seed)
    if centers is None:
        centers = rng.standard_normal((num_classes, d))
    y = rng.integers(0, num_classes, n)
    return (scale * (centers[y] + spread * rng.standard_normal((n, d)))).astype(np.float32), y, centers


@pytest.mark.parametrize("scale", [1.0, 1000.0])  # standardisation makes one lr fit any feature scale
def test_separable_clusters_near_100(scale):
    x, y, c = clusters(2000, 10, 32, spread=0.3, seed=0, scale=scale)
    x_test, y_test, _ = clusters(500, 10, 32, spread=0.3, seed=1, centers=c, scale=scale)
    m = linear_probe(x, y, x_test, y_test, epochs=5, lr=0.1, batch_size=128, seed=0)
    assert m["top1_best"] >= 99 and m["top1_last"] >= 99
    assert 1 <= m["best_epoch"] <= 5 and m["num_classes"] == 10


def test_random_labels_near_chance():
    x, _, c = clusters(2000, 10, 32, spread=0.3, seed=2)
    x_test, y_test, _ = clusters(1000, 10, 32, spread=0.3, seed=3, centers=c)
    rng = np.random.default_rng(4)  # labels independent of the features, train and test alike
    y_random, y_test = rng.integers(0, 10, len(x)), rng.integers(0, 10, len(x_test))
    m = linear_probe(torch.from_numpy(x), torch.from_numpy(y_random), x_test, y_test, epochs=5, seed=0)
    assert abs(m["top1_last"] - 10) < 5, m


def test_deterministic_given_seed_and_best_is_max():
    x, y, c = clusters(600, 5, 16, spread=1.5, seed=5)
    x_test, y_test, _ = clusters(300, 5, 16, spread=1.5, seed=6, centers=c)
    a = linear_probe(x, y, x_test, y_test, epochs=4, seed=3)
    b = linear_probe(x, y, x_test, y_test, epochs=4, seed=3)
    assert a == b
    assert a["top1_best"] >= a["top1_last"]


def test_feature_function_variant():
    x, y, c = clusters(1000, 4, 16, spread=0.3, seed=7)
    x_test, y_test, _ = clusters(200, 4, 16, spread=0.3, seed=8, centers=c)
    rng = np.random.default_rng(9)
    calls = []

    def augmented(epoch):
        calls.append(epoch)
        return x + 0.1 * rng.standard_normal(x.shape).astype(np.float32)

    m = linear_probe(augmented, y, x_test, y_test, epochs=3)
    assert calls == [0, 1, 2] and m["top1_last"] >= 99
    with pytest.raises(ValueError, match=r"train_feats\(1\) has shape \(999, 16\)"):
        linear_probe(lambda e: x if e == 0 else x[:-1], y, x_test, y_test, epochs=2)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((np.ones((5, 3)), np.arange(5), np.ones((2, 4)), np.zeros(2, int)), {}, ValueError,
         r"train_feats has shape \(5, 3\) and test_feats has shape \(2, 4\)"),
        ((np.ones((5, 3)), np.arange(4), np.ones((2, 3)), np.zeros(2, int)), {}, ValueError,
         "train_labels has 4 entries"),
        ((np.ones((5, 3)), np.arange(5), np.ones((2, 3)), np.zeros(2)), {}, TypeError, "test_labels has dtype"),
        ((np.ones((5, 3)), np.arange(5), np.ones((2, 3)), np.zeros(2, int)), {"epochs": 0}, ValueError,
         "epochs must be a positive integer"),
        ((np.ones((5, 3)), np.arange(5), np.ones((2, 3)), np.zeros(2, int)), {"lr": -1.0}, ValueError, "need lr > 0"),
        ((np.ones(5), np.arange(5), np.ones((2, 3)), np.zeros(2, int)), {}, ValueError, "train_feats must be 2-D"),
    ],
)
def test_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        linear_probe(*args, **kwargs)

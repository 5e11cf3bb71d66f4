"""linear_probe on synthetic frozen features: separable clusters, random labels, determinism, bad input; the one
linear-head trainer it is a preset of (its recipes, its cosine, its head's start)."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from mmvicreg.evaluation import linear_probe
from mmvicreg.evaluation.linear_eval import PUBLISHED
from mmvicreg.evaluation.metrics.linear_probe import PRESETS, QUICK_PROBE, LinearProtocol, LinearTrainer


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


def test_one_trainer_the_published_recipes_and_the_quick_probe_are_its_presets():
    assert QUICK_PROBE is PRESETS["probe"]
    assert QUICK_PROBE == dataclasses.replace(PRESETS["linear"], lr_head=0.1, head_init_std=0.0, cosine_per="step",
                                              standardize=True)
    for name, settings in PUBLISHED.items():  # linear_eval's published table is read from the presets
        assert settings == {k: getattr(PRESETS[name], k) for k in ("epochs", "lr_head", "lr_backbone", "weight_decay")}


@pytest.mark.parametrize("per", ["epoch", "step"])
def test_the_trainer_follows_the_cosine_in_its_unit(per):
    x, y, _ = clusters(64, 4, 8, spread=0.3, seed=10)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    trainer = LinearTrainer(8, 4, LinearProtocol(epochs=4, batch_size=16, lr_head=0.4, cosine_per=per),
                            steps_per_epoch=4)
    seen = []

    def batches(epoch):
        for idx in torch.arange(64).split(16):
            seen.append(trainer.optimizer.param_groups[0]["lr"])
            yield x[idx], y[idx]

    history = trainer.fit(batches, lambda head, batch: head(batch), lambda: (x, y))
    t, total = (([s // 4 for s in range(16)], 4) if per == "epoch" else (list(range(16)), 16))
    assert seen == pytest.approx([0.4 * (1 + math.cos(math.pi * k / total)) / 2 for k in t])
    assert [h["epoch"] for h in history] == [1, 2, 3, 4] and history[-1]["top1"] == 100.0
    assert "top5" not in history[-1]  # top-5 with 5 classes or more


def test_the_head_starts_as_its_recipe_says():
    published = [LinearTrainer(32, 10, PRESETS["linear"], seed=s).head for s in (0, 0, 1)]
    assert torch.equal(published[0].weight, published[1].weight)
    assert not torch.equal(published[0].weight, published[2].weight)
    assert abs(float(published[0].weight.detach().std()) - 0.01) < 0.002 and not published[0].bias.any()
    probe = LinearTrainer(32, 10, QUICK_PROBE, steps_per_epoch=1).head
    assert not probe.weight.any() and not probe.bias.any()
    with pytest.raises(ValueError, match="cosine_per must be 'epoch' or 'step'"):
        LinearTrainer(4, 2, LinearProtocol(cosine_per="batch"))
    with pytest.raises(ValueError, match="needs steps_per_epoch"):
        LinearTrainer(4, 2, QUICK_PROBE)

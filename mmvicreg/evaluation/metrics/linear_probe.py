"""Linear probe: a linear classifier trained on frozen features, the standard measure of a representation.

The backbone is frozen (its features are computed once, in eval mode, by the caller); only
``logits = W·x̂ + b`` is trained, with cross-entropy, SGD (momentum 0.9, weight decay) and a cosine learning
rate ``lr_t = lr · (1 + cos(π t / T)) / 2`` over all T steps. ``x̂`` is the feature standardised with the training
set's per-dimension mean and standard deviation (``standardize=True``), the role of the affine-free BatchNorm
that MAE puts in front of its probe: it makes one learning rate fit any backbone's feature scale.
W and b start at zero, so with a fixed ``seed`` (which only orders the batches) a run is deterministic.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F

from mmvicreg.evaluation.metrics import inputs

__all__ = ["linear_probe"]

TrainFeatures = Union[inputs.ArrayLike, Callable[[int], inputs.ArrayLike]]


def linear_probe(
    train_feats: TrainFeatures,
    train_labels: inputs.ArrayLike,
    test_feats: inputs.ArrayLike,
    test_labels: inputs.ArrayLike,
    epochs: int = 100,
    lr: float = 0.1,
    batch_size: int = 256,
    seed: int = 0,
    *,
    weight_decay: float = 1e-6,
    momentum: float = 0.9,
    standardize: bool = True,
    device: Optional[Union[str, torch.device]] = None,
) -> dict[str, float]:
    """Train a linear head on ``train_feats`` and report test top-1 after every epoch.

    Args:
        train_feats: (n_train, d) frozen features, torch or NumPy. Or a function ``epoch -> (n_train, d)``
            features, for probes with augmentation: it is called at the start of every epoch (e.g. with features
            of a freshly augmented training set, rows in the same order as ``train_labels``); standardisation
            then uses the epoch-0 features.
        train_labels, test_labels: 0-based integer class labels.
        test_feats: (n_test, d) frozen features of the evaluation set.
        epochs, lr, batch_size, seed, weight_decay, momentum: the optimisation (see the module docstring).
        standardize: standardise features with the training mean/std before the head.
        device: where to train; default the device of ``test_feats`` (CPU for NumPy input).

    Returns:
        ``top1_best`` (best test top-1 over epochs, percent), ``top1_last`` (after the last epoch),
        ``best_epoch`` (1-based), ``num_classes``.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not lr > 0 or weight_decay < 0 or not 0 <= momentum < 1:
        raise ValueError(f"need lr > 0, weight_decay >= 0 and 0 <= momentum < 1; got {lr}, {weight_decay}, {momentum}")
    feature_fn = train_feats if callable(train_feats) else None
    test = inputs.embeddings(test_feats, "test_feats")
    device = torch.device(device) if device is not None else test.device
    x_train = _train_features(feature_fn(0) if feature_fn else train_feats, test)
    y_train = inputs.labels(train_labels, "train_labels", x_train.shape[0], "train_feats").to(device)
    y_test = inputs.labels(test_labels, "test_labels", test.shape[0], "test_feats").to(device)
    num_classes = int(max(y_train.max(), y_test.max())) + 1

    x_train, test = x_train.to(device, torch.float32), test.to(device, torch.float32)
    mean = x_train.mean(0) if standardize else torch.zeros(x_train.shape[1], device=device)
    std = x_train.std(0, unbiased=False).clamp_min(1e-6) if standardize else torch.ones_like(mean)

    head = torch.nn.Linear(x_train.shape[1], num_classes, device=device)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    n = x_train.shape[0]
    steps = epochs * math.ceil(n / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / steps)))
    order = torch.Generator().manual_seed(seed)

    history = []
    for epoch in range(epochs):
        if feature_fn and epoch > 0:
            fresh = _train_features(feature_fn(epoch), test)
            if fresh.shape != x_train.shape:
                raise ValueError(
                    f"train_feats({epoch}) has shape {inputs.shape_str(fresh)} but train_feats(0) had "
                    f"{inputs.shape_str(x_train)}; the feature function must return one row per training label"
                )
            x_train = fresh.to(device, torch.float32)
        head.train()
        for idx in torch.randperm(n, generator=order).split(batch_size):
            idx = idx.to(device)
            loss = F.cross_entropy(head((x_train[idx] - mean) / std), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
        history.append(_top1(head, (test - mean) / std, y_test))
    best = max(range(epochs), key=lambda e: history[e])
    return {"top1_best": history[best], "top1_last": history[-1], "best_epoch": best + 1, "num_classes": num_classes}


def _train_features(x: object, test: torch.Tensor) -> torch.Tensor:
    train = inputs.embeddings(x, "train_feats")
    inputs.same_width(train, "train_feats", test, "test_feats", "extract both with the same backbone and layer")
    return train


@torch.no_grad()
def _top1(head: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    head.eval()
    correct = sum(int((head(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(8192), y.split(8192)))
    return 100.0 * correct / len(y)

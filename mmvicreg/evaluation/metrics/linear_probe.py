"""The one linear-head trainer (:class:`LinearTrainer`), its recipes (:data:`PRESETS`), and :func:`linear_probe`,
the quick probe on frozen features that is one of them.

The protocol is facebookresearch/vicreg's ``evaluate.py`` (Bardes et al. 2022, appendix): a linear classifier
``logits = W·x + b`` on a representation, trained with cross-entropy by SGD (momentum 0.9, weight decay) under a
cosine learning rate ``lr_t = lr · (1 + cos(π t / T)) / 2``, and tested after every epoch: top-1 (and top-5 with at
least 5 classes), the best epoch by test top-1 being what the published script prints as ``best_acc``. A
:class:`LinearProtocol` is one recipe:

* ``PRESETS["linear"]`` (published linear evaluation): 100 epochs, batch 256, head lr 0.02, weight decay 1e-6,
  ``W ~ N(0, 0.01²)``, ``b = 0``, the cosine stepped once per epoch (``T`` = epochs, ``CosineAnnealingLR``);
* ``PRESETS["finetune_1"]`` / ``["finetune_10"]`` (semi-supervised, 1 % / 10 % of the labels): 20 epochs, weight
  decay 0, head lr 0.08 / 0.1, backbone lr 0.03 / 0.01;
* ``PRESETS["probe"]`` (:data:`QUICK_PROBE`, :func:`linear_probe`): the same trainer on features computed once,
  without augmentation: head lr 0.1, ``W = b = 0`` (so a seeded run is deterministic), the cosine stepped per
  batch (``T`` = every step of every epoch), and the features standardised with the training set's per-dimension
  mean and standard deviation, the role of the affine-free BatchNorm that MAE puts in front of its probe: it makes
  one learning rate fit any backbone's feature scale.

The learning rates are those of batch 256; the published protocol (:mod:`mmvicreg.evaluation.linear_eval`)
scales them by ``batch_size / 256``. The trainer never sees a model: it is handed the batches, how a batch
becomes logits, and the test set's head inputs, so frozen features, augmented images through a frozen backbone
and fine-tuning all train the same head the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from mmvicreg.evaluation.metrics import inputs
from mmvicreg.evaluation.metrics.linear_head import LinearHead, head_accuracy

__all__ = ["LinearProtocol", "LinearTrainer", "PRESETS", "QUICK_PROBE", "best_epoch", "linear_probe"]

TrainFeatures = Union[inputs.ArrayLike, Callable[[int], inputs.ArrayLike]]
Batches = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]
Logits = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LinearProtocol:
    """One recipe of the linear head: optimisation (``epochs``, ``batch_size``, ``lr_head``, ``lr_backbone``
    for fine-tuning, ``weight_decay``, ``momentum``), the head's start (``head_init_std``: ``W ~ N(0, std²)``;
    0: ``W = 0``), the cosine's unit (``cosine_per``: ``"epoch"`` or ``"step"``) and ``standardize`` (frozen
    features standardised with the training mean/std; :func:`linear_probe` only)."""

    epochs: int = 100
    batch_size: int = 256
    lr_head: float = 0.02
    lr_backbone: float = 0.0
    weight_decay: float = 1e-6
    momentum: float = 0.9
    head_init_std: float = 0.01
    cosine_per: str = "epoch"
    standardize: bool = False


QUICK_PROBE = LinearProtocol(lr_head=0.1, head_init_std=0.0, cosine_per="step", standardize=True)
PRESETS = {  # at batch 256; facebookresearch/vicreg evaluate.py defaults and README commands, and the quick probe
    "linear": LinearProtocol(),
    "finetune_1": LinearProtocol(epochs=20, lr_head=0.08, lr_backbone=0.03, weight_decay=0.0),
    "finetune_10": LinearProtocol(epochs=20, lr_head=0.1, lr_backbone=0.01, weight_decay=0.0),
    "probe": QUICK_PROBE,
}


class LinearTrainer:
    """A linear head ``dim -> num_classes`` and its SGD + cosine schedule, set up by ``protocol``.

    ``seed`` draws ``W`` (when ``head_init_std > 0``). ``backbone``: trained with the head at
    ``protocol.lr_backbone`` (fine-tuning; in train mode during each epoch). ``steps_per_epoch``: needed when the
    cosine is stepped per batch. ``scaler``: a ``torch.amp.GradScaler`` for fp16 (default: none). The head is
    made on the CPU from the global RNG's state, as ``nn.Linear`` is, then initialised and moved to ``device``.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        protocol: LinearProtocol,
        *,
        seed: int = 0,
        device: Union[str, torch.device] = "cpu",
        backbone: Optional[nn.Module] = None,
        steps_per_epoch: Optional[int] = None,
        scaler: Optional[torch.amp.GradScaler] = None,
    ) -> None:
        if protocol.cosine_per not in ("epoch", "step"):
            raise ValueError(f"cosine_per must be 'epoch' or 'step', got {protocol.cosine_per!r}")
        self.protocol, self.backbone, self.num_classes = protocol, backbone, num_classes
        head = nn.Linear(dim, num_classes)
        with torch.no_grad():
            if protocol.head_init_std > 0:
                head.weight.copy_(torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(seed)))
                head.weight.mul_(protocol.head_init_std)
            else:
                head.weight.zero_()
            head.bias.zero_()
        self.head = head.to(device)
        groups = [{"params": list(self.head.parameters()), "lr": protocol.lr_head}]
        if backbone is not None:
            groups.append({"params": list(backbone.parameters()), "lr": protocol.lr_backbone})
        self.optimizer = torch.optim.SGD(groups, lr=0.0, momentum=protocol.momentum,
                                         weight_decay=protocol.weight_decay)
        if protocol.cosine_per == "epoch":  # as published: CosineAnnealingLR(T_max=epochs), stepped per epoch
            self.schedule: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, protocol.epochs
            )
        else:
            if not steps_per_epoch:
                raise ValueError("a cosine stepped per batch needs steps_per_epoch")
            total = protocol.epochs * steps_per_epoch
            self.schedule = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda t: 0.5 * (1 + math.cos(math.pi * t / total))
            )
        self.scaler = scaler or torch.amp.GradScaler(torch.device(device).type, enabled=False)

    def fit(
        self,
        batches: Batches,
        logits: Logits,
        test: Callable[[], tuple[torch.Tensor, torch.Tensor]],
        progress: Optional[str] = None,
    ) -> list[dict[str, float]]:
        """Train for ``protocol.epochs``; after each, ``{"epoch", "top1"[, "top5"]}`` on ``test()``.

        ``batches(epoch)`` yields ``(inputs, labels)``; ``logits(head, inputs)`` makes the head's logits of a
        batch (its loss is cross-entropy); ``test()`` returns the test set's head inputs and labels.
        ``progress``: a progress bar's description (none when None).
        """
        epochs: Iterable[int] = range(self.protocol.epochs)
        if progress:
            from tqdm.auto import tqdm

            epochs = tqdm(epochs, desc=progress, unit="epoch")
        history = []
        for epoch in epochs:
            self.head.train()
            if self.backbone is not None:
                self.backbone.train()
            for x, y in batches(epoch):
                loss = F.cross_entropy(logits(self.head, x), y)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                if self.protocol.cosine_per == "step":
                    self.schedule.step()
            if self.protocol.cosine_per == "epoch":
                self.schedule.step()
            history.append({"epoch": epoch + 1, **self.accuracy(*test())})
        return history

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Top-1 (and top-5 with at least 5 classes), percent, of the head on inputs ``x`` with labels ``y``."""
        self.head.eval()
        return head_accuracy(self.head, x, y)


def best_epoch(history: list[dict[str, float]]) -> int:
    """The index of the epoch with the best test top-1 (the first of equals)."""
    return max(range(len(history)), key=lambda e: history[e]["top1"])


def linear_probe(
    train_feats: TrainFeatures,
    train_labels: inputs.ArrayLike,
    test_feats: inputs.ArrayLike,
    test_labels: inputs.ArrayLike,
    epochs: int = QUICK_PROBE.epochs,
    lr: float = QUICK_PROBE.lr_head,
    batch_size: int = QUICK_PROBE.batch_size,
    seed: int = 0,
    *,
    weight_decay: float = QUICK_PROBE.weight_decay,
    momentum: float = QUICK_PROBE.momentum,
    standardize: bool = QUICK_PROBE.standardize,
    device: Optional[Union[str, torch.device]] = None,
    keep_head: bool = False,
) -> dict[str, Any]:
    """The quick probe (:data:`QUICK_PROBE`, see the module docstring): a linear head on frozen ``train_feats``,
    test top-1 after every epoch.

    Args:
        train_feats: (n_train, d) frozen features, torch or NumPy. Or a function ``epoch -> (n_train, d)``
            features, for probes with augmentation: it is called at the start of every epoch (e.g. with features
            of a freshly augmented training set, rows in the same order as ``train_labels``); standardisation
            then uses the epoch-0 features.
        train_labels, test_labels: 0-based integer class labels.
        test_feats: (n_test, d) frozen features of the evaluation set.
        epochs, lr, batch_size, seed, weight_decay, momentum: the optimisation (``seed`` only orders the batches).
        standardize: standardise features with the training mean/std before the head.
        device: where to train; default the device of ``test_feats`` (CPU for NumPy input).
        keep_head: also return ``"head"``, the trained :class:`~mmvicreg.evaluation.metrics.linear_head.LinearHead`
            with its standardisation (what ``--save-head`` saves; on ``test_feats`` it scores ``top1_last``).

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
    test, n = (test - mean) / std, x_train.shape[0]
    protocol = LinearProtocol(epochs=epochs, batch_size=batch_size, lr_head=lr, weight_decay=weight_decay,
                              momentum=momentum, head_init_std=QUICK_PROBE.head_init_std,
                              cosine_per=QUICK_PROBE.cosine_per, standardize=standardize)
    trainer = LinearTrainer(x_train.shape[1], num_classes, protocol, seed=seed, device=device,
                            steps_per_epoch=math.ceil(n / batch_size))
    order = torch.Generator().manual_seed(seed)

    def batches(epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        nonlocal x_train
        if feature_fn and epoch > 0:
            fresh = _train_features(feature_fn(epoch), test)
            if fresh.shape != x_train.shape:
                raise ValueError(
                    f"train_feats({epoch}) has shape {inputs.shape_str(fresh)} but train_feats(0) had "
                    f"{inputs.shape_str(x_train)}; the feature function must return one row per training label"
                )
            x_train = fresh.to(device, torch.float32)
        for idx in torch.randperm(n, generator=order).split(batch_size):
            idx = idx.to(device)
            yield x_train[idx], y_train[idx]

    history = trainer.fit(batches, lambda head, x: head((x - mean) / std), lambda: (test, y_test))
    best = best_epoch(history)
    out: dict[str, Any] = {"top1_best": history[best]["top1"], "top1_last": history[-1]["top1"],
                           "best_epoch": best + 1, "num_classes": num_classes}
    if keep_head:  # the head after the last epoch with its standardisation (zeros and ones when not standardising)
        out["head"] = LinearHead(*(t.detach().clone() for t in (trainer.head.weight, trainer.head.bias, mean, std)))
    return out


def _train_features(x: object, test: torch.Tensor) -> torch.Tensor:
    train = inputs.embeddings(x, "train_feats")
    inputs.same_width(train, "train_feats", test, "test_feats", "extract both with the same backbone and layer")
    return train

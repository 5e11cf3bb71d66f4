"""Linear evaluation and semi-supervised fine-tuning of an image branch, by VICReg's published protocol.

The protocol is that of facebookresearch/vicreg ``evaluate.py`` and its README (Bardes et al. 2022, appendix);
the head is trained by the one linear-head trainer (:class:`~mmvicreg.evaluation.metrics.linear_probe.LinearTrainer`)
with its published recipes (``PRESETS``):

* ``mode="linear"``: a linear classifier (``nn.Linear``, weights N(0, 0.01²), bias 0) on the frozen
  representation h (the encoder's output, before the expander). The backbone runs in eval mode under
  ``no_grad``: its weights and BatchNorm statistics never change. 100 epochs, batch 256, head lr 0.02,
  weight decay 1e-6 (the script's default; the README's linear command does not change it).
* ``mode="finetune"``: backbone and head trained together (BatchNorm in train mode), each with its own lr, on a
  fixed labelled subset: 20 epochs, weight decay 0; 1 % of the labels: backbone lr 0.03, head 0.08; 10 %:
  backbone 0.01, head 0.1 (the 10 % values also serve any other subset size).
* both: SGD momentum 0.9, cosine learning rate stepped once per epoch (``CosineAnnealingLR(T_max=epochs)``),
  cross-entropy; training images get ``RandomResizedCrop(size, scale 0.08–1)`` + horizontal flip, test images
  the branch's eval transform (resize to ``size / crop_pct``, centre crop), both normalised with the branch's
  own ``transform_spec`` (size, mean, std, interpolation). Top-1 (and top-5 with ≥ 5 classes) on the test set
  after every epoch, as published.

Default learning rates are the published ones for batch 256 scaled by ``batch_size / 256``; a learning rate
given explicitly is used as is. The subset of labelled training images is a subset file (one 0-based index
or image id per line, as the ImageNet 1 %/10 % files) or a seeded per-class draw; it is recorded in the result.

The model is duck-typed (this module never imports the model package): ``model.branch(name)`` has
``modality``, ``encoder`` (an ``nn.Module`` with ``output_dim``), ``embedding_dim`` and ``transform_spec``;
calling the branch gives z. The network is deep-copied before it is moved or trained: the caller's model is
never modified. Images go through the data package's one loader path (:func:`make_loader`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import BatchSampler, RandomSampler, Subset
from torchvision.transforms import v2

from mmvicreg.choices import EMBEDDING_LAYERS, EVAL_PRECISIONS, LINEAR_EVAL_MODES, check_choice
from mmvicreg.data import convert_rgb
from mmvicreg.data.batching import Preprocessor, make_loader
from mmvicreg.data.sources.base import ImageSource
from mmvicreg.data.transforms import build_transform, interpolation_mode
from mmvicreg.devices import autocast, resolve_device
from mmvicreg.evaluation.labelled import choose_subset
from mmvicreg.evaluation.metrics.linear_head import LinearHead
from mmvicreg.evaluation.metrics.linear_probe import PRESETS, LinearTrainer, best_epoch

__all__ = ["LINEAR_EVAL_MODES", "PUBLISHED", "check_head", "evaluate_head", "evaluate_linear", "format_linear",
           "published_settings", "source_classes"]

MOMENTUM = PRESETS["linear"].momentum
PUBLISHED = {  # at batch 256: the published recipes of the one trainer (metrics.linear_probe.PRESETS)
    name: {"epochs": p.epochs, "lr_head": p.lr_head, "lr_backbone": p.lr_backbone, "weight_decay": p.weight_decay}
    for name, p in PRESETS.items()
    if name in ("linear", "finetune_1", "finetune_10")
}
_INPUT = "input"  # the loader's key for the image tensor (the label travels as "label")


def published_settings(mode: str, train_percent: float | None = None) -> dict[str, float]:
    """The published epochs, head/backbone learning rates (batch 256) and weight decay of ``mode``."""
    check_choice(mode, LINEAR_EVAL_MODES, "mode")
    if mode == "linear":
        return dict(PUBLISHED["linear"])
    return dict(PUBLISHED["finetune_1" if train_percent is not None and train_percent <= 1 else "finetune_10"])


def evaluate_linear(
    model: Any,
    train_source: Any,
    test_source: Any,
    branch: str,
    *,
    mode: str = "linear",
    train_percent: float | None = None,
    subset: Any = None,
    epochs: int | None = None,
    batch_size: int = 256,
    lr_head: float | None = None,
    lr_backbone: float | None = None,
    weight_decay: float | None = None,
    seed: int = 0,
    workers: int = 0,
    device: Any = None,
    precision: str = "auto",
    layer: str = "representation",
    progress: bool = False,
    keep_head: bool = False,
    decode_on: str = "workers",
) -> dict[str, Any]:
    """Top-1/top-5 (percent) on ``test_source`` of a classifier on ``branch`` trained by the published protocol.

    ``mode``: ``"linear"`` (frozen backbone) or ``"finetune"`` (backbone and head). ``train_percent`` (in
    (0, 100]) draws that share of each class's training images with ``seed`` (at least one per class);
    ``subset`` is a file of 0-based indices or image ids, one per line (not both). ``epochs``, ``lr_head``,
    ``lr_backbone``, ``weight_decay``: None means published (lrs scaled by ``batch_size / 256``). ``device``:
    default CUDA when present. ``precision``: ``auto`` (bf16 autocast on CUDA, fp32 on the CPU), ``bf16``,
    ``fp16`` (with loss scaling) or ``fp32`` (:func:`mmvicreg.devices.autocast`); the head's loss is float32.
    ``layer``: ``"representation"`` (h, published) or ``"embedding"`` (z: the expander is part of the backbone).
    ``workers``: DataLoader processes (kept across epochs). ``decode_on``: ``"workers"`` only (the protocol's
    own transforms decode in its workers; ``"device"`` raises ValueError).

    Returns ``top1`` and ``top5`` after the last epoch, ``top1_best``/``top5_best``/``best_epoch`` (the best
    epoch by test top-1, what the published script prints as ``best_acc``), ``num_classes``, ``num_train``,
    ``num_test``, ``history`` (per epoch), ``config`` (every setting used) and ``subset`` (None: every image).
    ``keep_head`` (``mode="linear"`` only: a fine-tuned head needs its fine-tuned backbone): also ``head``, the
    classifier after the last epoch (a :class:`~mmvicreg.evaluation.metrics.linear_head.LinearHead`, whose
    :func:`evaluate_head` on ``test_source`` is ``top1``).
    """
    check_protocol_decode(decode_on)
    if keep_head and mode != "linear":
        raise ValueError("a fine-tuned head is only right on its fine-tuned backbone, which is not saved; --save-head "
                         "keeps the head of --mode linear (frozen backbone)")
    config = _settings(model, branch, mode, train_percent, epochs, batch_size, lr_head, lr_backbone, weight_decay,
                       seed, workers, device, precision, layer)
    num_classes = _num_classes(train_source, test_source)
    indices, record = choose_subset(train_source, train_percent, subset, seed)
    train_set = Subset(train_source, indices) if indices is not None else train_source
    _check_labelled(train_source, indices, "training")
    _check_labelled(test_source, None, "test")
    dev = torch.device(config["device"])
    forks = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=forks):  # the augmentations are seeded; the caller's RNG is left alone
        torch.manual_seed(seed)
        history, head = _fit(model.branch(branch), train_set, test_source, num_classes, config, progress)
    best = best_epoch(history)
    result: dict[str, Any] = {"branch": branch, "layer": layer, "mode": mode, "top1": history[-1]["top1"]}
    if "top5" in history[-1]:
        result["top5"] = history[-1]["top5"]
    result.update({f"{k}_best": v for k, v in history[best].items() if k.startswith("top")})
    result.update(best_epoch=best + 1, num_classes=num_classes, num_train=len(train_set), num_test=len(test_source),
                  history=history, config=config, subset=record)
    if keep_head:
        result["head"] = LinearHead(head.weight.detach().cpu().clone(), head.bias.detach().cpu().clone())
    return result


def format_linear(branch: str, result: dict[str, Any]) -> str:
    """One line: ``linear evaluation of branch 'x' (frozen, 100 epochs): top-1 71.2%, top-5 90.1%``."""
    what = "frozen" if result["mode"] == "linear" else "fine-tuned"
    subset = result.get("subset") or {}
    share = f", {subset['num_images']} labelled images" if subset else ""
    top5 = f", top-5 {result['top5']:.1f}%" if "top5" in result else ""
    return (f"{result['mode']} evaluation of branch {branch!r} ({what}, {result['config']['epochs']} epochs{share}): "
            f"top-1 {result['top1']:.1f}%{top5}")


def check_protocol_decode(decode_on: str) -> None:
    """The published linear protocol decodes in its loader's workers (its own transforms): ``device`` is refused."""
    if decode_on != "workers":
        raise ValueError(f"decode_on={decode_on!r}: the published linear protocol (eval linear, a 'linear' head) "
                         f"decodes with its own transforms in its loader's workers; use --decode-on workers")


def evaluate_head(
    model: Any, test_source: Any, branch: str, head: LinearHead, info: dict[str, Any], *,
    layer: str = "representation", batch_size: int = 256, workers: int = 0, device: Any = None,
    precision: str = "auto", progress: bool = False, name: str = "the head", decode_on: str = "workers",
) -> dict[str, Any]:
    """Top-1 (top-5) on ``test_source`` of a saved ``head`` (:meth:`LinearHead.load`: the head and its ``info``)
    on ``branch``'s ``layer``, without training: the test features made as when it was trained (``info["kind"]``
    ``"probe"``: the one encode path, unaugmented; ``"linear"``: the protocol's test transform). One ValueError
    line (naming the head as ``name``) when its layer, width or classes do not fit the model and the data."""
    check_head(model, branch, layer, head, info, test_source, name)
    if info["kind"] == "probe":
        from mmvicreg.evaluation.model_level import image_features

        x, y = image_features(model, branch, test_source, layer, batch_size=batch_size, progress=progress,
                              workers=workers, precision=precision, decode_on=decode_on)
    else:
        check_protocol_decode(decode_on)
        config = _settings(model, branch, "linear", None, None, batch_size, None, None, None, 0, workers, device,
                           precision, layer)
        backbone, _ = _backbone(model.branch(branch), config)
        x, y = _features(backbone, _loader(test_source, linear_eval_transforms(config["transform"])[1], config,
                                            train=False), config)
    return {"branch": branch, "layer": layer, "kind": info["kind"], **head.accuracy(x, torch.as_tensor(y)),
            "num_classes": head.num_classes, "num_test": len(y)}


def source_classes(source: Any) -> list[str] | None:
    """The class names of a labelled image source, or None when it has none."""
    return list(source.classes) if isinstance(source, ImageSource) and source.classes else None


def _short(names: list[Any]) -> str:
    return ", ".join(map(str, names[:5])) + (f", … ({len(names)} in all)" if len(names) > 5 else "")


def check_head(model: Any, branch: str, layer: str, head: LinearHead, info: dict[str, Any], test_source: Any,
               name: str = "the head") -> None:
    """One ValueError line unless ``head`` (with its saved ``info``) reads ``branch``'s ``layer`` of ``model`` and
    covers ``test_source``'s classes (the same names in the same order, when both have names)."""
    b = model.branch(branch)
    if info["layer"] != layer:
        raise ValueError(f"{name} was trained on the {info['layer']!r} layer (of branch {info['branch']!r}); pass "
                         f"--layer {info['layer']}")
    dim = b.encoder.output_dim if layer == "representation" else b.embedding_dim
    if dim != head.dim:
        raise ValueError(f"{name} takes {head.dim}-wide features but branch {branch!r} gives {dim} at its {layer} "
                         f"(it was trained on branch {info['branch']!r} of another model)")
    classes, saved = source_classes(test_source), info.get("classes")
    if classes and saved and classes != list(saved):
        raise ValueError(f"{name} was trained on the classes [{_short(list(saved))}] but the test data has "
                         f"[{_short(classes)}]")
    top = int(np.max(np.asarray(test_source.labels), initial=-1))
    if top >= head.num_classes:
        raise ValueError(f"the test data has labels up to {top} but {name} has {head.num_classes} classes")


# ------------------------------------------------------------------------------------------- settings


def _settings(model, branch, mode, train_percent, epochs, batch_size, lr_head, lr_backbone, weight_decay, seed,
              workers, device, precision, layer) -> dict[str, Any]:
    """Every setting of the run, the published defaults filled in and the arguments checked."""
    check_choice(mode, LINEAR_EVAL_MODES, "mode")
    check_choice(layer, EMBEDDING_LAYERS, "layer")
    check_choice(precision, EVAL_PRECISIONS, "precision")
    b = model.branch(branch)
    if b.modality != "image":
        raise ValueError(f"branch {branch!r} is a {b.modality} branch; linear evaluation scores image branches")
    workers = workers or 0
    for name, value, least in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("workers", workers, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if mode == "linear" and lr_backbone:
        raise ValueError("lr_backbone is for mode 'finetune'; in linear evaluation the backbone is frozen")
    if lr_head is not None and not lr_head > 0:
        raise ValueError(f"lr_head must be > 0, got {lr_head!r}")
    for name, value in (("lr_backbone", lr_backbone), ("weight_decay", weight_decay)):
        if value is not None and not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    published = published_settings(mode, train_percent)
    scale = batch_size / 256
    dev = resolve_device(device)
    spec = dict(b.transform_spec)
    return {
        "mode": mode, "layer": layer, "epochs": epochs or int(published["epochs"]), "batch_size": batch_size,
        "optimizer": "sgd", "momentum": MOMENTUM, "schedule": "cosine, per epoch",
        "lr_head": lr_head if lr_head is not None else published["lr_head"] * scale,
        "lr_backbone": (lr_backbone if lr_backbone is not None else published["lr_backbone"] * scale)
        if mode == "finetune" else 0.0,
        "weight_decay": weight_decay if weight_decay is not None else published["weight_decay"],
        "lr_defaults": "published at batch 256 × batch_size / 256",
        "train_transform": f"RandomResizedCrop({spec['size']}, scale=(0.08, 1)) + RandomHorizontalFlip",
        "eval_transform": spec["eval"], "transform": spec, "seed": seed, "workers": workers,
        "device": str(dev), "precision": _precision(dev, precision),
    }


def _precision(device: torch.device, precision: str) -> str:
    """What ``precision`` means on ``device`` (:func:`mmvicreg.devices.autocast`): ``auto`` is bf16 on CUDA."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def _autocast(config: dict[str, Any]):
    return autocast(torch.device(config["device"]), config["precision"])


def _num_classes(train_source: Any, test_source: Any) -> int:
    top = max(int(np.max(np.asarray(s.labels), initial=-1)) for s in (train_source, test_source))
    return max(len(getattr(train_source, "classes", None) or []), top + 1)


def _check_labelled(source: Any, indices: Sequence[int] | None, what: str) -> None:
    labels = np.asarray(source.labels)
    labels = labels[np.asarray(indices, dtype=np.int64)] if indices is not None else labels
    if len(labels) == 0 or (labels < 0).any():
        name = getattr(source, "name", type(source).__name__)
        raise ValueError(
            f"the {what} source {name} has {'no images' if len(labels) == 0 else 'images without labels (-1)'}; "
            f"linear evaluation needs labelled {what} images (e.g. digits with labels: true, or class subfolders)"
        )


# ------------------------------------------------------------------------------------------- transforms


class RGBTransform:
    """``PIL image -> tensor``: converted to RGB first (picklable, for DataLoader workers)."""

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def __call__(self, image: Any) -> torch.Tensor:
        if isinstance(image, Image.Image):
            image = convert_rgb(image)  # 16-bit and transparent images too (mmvicreg.data's one conversion)
        return self.transform(image)


def linear_eval_transforms(spec: dict[str, Any]) -> tuple[RGBTransform, RGBTransform]:
    """``(train, test)`` transforms of the protocol from a branch's resolved ``transform_spec``."""
    normalise = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(spec["mean"]), std=list(spec["std"]))]
    train = v2.Compose([
        v2.RandomResizedCrop(spec["size"], scale=(0.08, 1.0), interpolation=interpolation_mode(spec["interpolation"]),
                             antialias=True),
        v2.RandomHorizontalFlip(p=0.5),
        v2.ToImage(), *normalise,
    ])
    # the protocol feeds the encoder itself (not a branch, which would normalise uint8 images): float here
    test = v2.Compose([build_transform(spec["eval"], spec["size"], spec["interpolation"], spec["crop_pct"]), *normalise])
    return RGBTransform(train), RGBTransform(test)


# ------------------------------------------------------------------------------------------- training


def _backbone(branch: Any, config: dict[str, Any]) -> tuple[torch.nn.Module, int]:
    """A copy of what the head reads (the encoder, or the whole branch for z) on the device, and its width."""
    backbone = copy.deepcopy(branch.encoder if config["layer"] == "representation" else branch)
    dim = branch.encoder.output_dim if config["layer"] == "representation" else branch.embedding_dim
    return backbone.to(torch.device(config["device"])), dim


def _fit(branch: Any, train_set: Any, test_source: Any, num_classes: int, config: dict[str, Any],
         progress: bool) -> tuple[list[dict[str, float]], torch.nn.Module]:
    """Train the head (and, fine-tuning, a copy of the backbone) with the one trainer; test after every epoch.
    Returns the history and the head."""
    device, finetune = torch.device(config["device"]), config["mode"] == "finetune"
    backbone, dim = _backbone(branch, config)
    backbone.requires_grad_(finetune)
    protocol = dataclasses.replace(  # the published recipe with this run's settings
        PRESETS["linear"], epochs=config["epochs"], batch_size=config["batch_size"], lr_head=config["lr_head"],
        lr_backbone=config["lr_backbone"], weight_decay=config["weight_decay"],
    )
    trainer = LinearTrainer(dim, num_classes, protocol, seed=config["seed"], device=device,
                            backbone=backbone if finetune else None,
                            scaler=torch.amp.GradScaler(device.type, enabled=config["precision"] == "fp16"))
    train_fn, test_fn = linear_eval_transforms(config["transform"])
    train_loader = _loader(train_set, train_fn, config, train=True)
    test_loader = _loader(test_source, test_fn, config, train=False)
    if not finetune:
        backbone.eval()  # linear: eval mode, the BatchNorm statistics stay as trained
    frozen_test = None if finetune else _features(backbone, test_loader, config)  # the backbone never changes

    def batches(epoch: int) -> Any:
        for batch in train_loader:
            yield batch[_INPUT].to(device, non_blocking=True), batch["label"].to(device, non_blocking=True)

    def logits(head: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if finetune:
            with _autocast(config):
                return head(backbone(x)).float()
        with torch.no_grad(), _autocast(config):
            h = backbone(x)
        return head(h.float())

    def test() -> tuple[torch.Tensor, torch.Tensor]:
        return frozen_test if frozen_test is not None else _features(backbone, test_loader, config)

    history = trainer.fit(batches, logits, test, progress=f"{config['mode']} evaluation" if progress else None)
    return history, trainer.head


def _loader(dataset: Any, fn: RGBTransform, config: dict[str, Any], train: bool) -> Any:
    common = {"workers": config["workers"], "seed": config["seed"], "extra_fields": ("label",),
              "pin_memory": config["device"].startswith("cuda"), "persistent_workers": True}
    pre = {_INPUT: Preprocessor("image", fn, None)}
    if not train:
        return make_loader(dataset, pre, batch_size=config["batch_size"], train=False, **common)
    n, size = len(dataset), config["batch_size"]
    # Every image every epoch, as published; a last batch of one is dropped when fine-tuning (BatchNorm in
    # train mode cannot normalise a single sample).
    drop = config["mode"] == "finetune" and n % size == 1 and n > 1
    order = RandomSampler(dataset, generator=torch.Generator().manual_seed(config["seed"]))
    return make_loader(dataset, pre, batch_sampler=BatchSampler(order, size, drop_last=drop), **common)


@torch.no_grad()
def _features(backbone, loader, config: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    device = torch.device(config["device"])
    backbone.eval()
    feats, labels = [], []
    for batch in loader:
        with _autocast(config):
            feats.append(backbone(batch[_INPUT].to(device, non_blocking=True)).float())
        labels.append(batch["label"].to(device))
    return torch.cat(feats), torch.cat(labels)

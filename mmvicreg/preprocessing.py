"""What a branch declares about its inputs: the one vocabulary the model and the data package share.

A branch states how its inputs are made; it builds none of it. :class:`ImagePreprocessing` (the size, the mean and
std the encoder was trained with, the interpolation, the eval crop fraction, the training transform and where its
colour half runs) and :class:`TextPreprocessing` (the tokenizer the text encoder owns) are frozen descriptions.
``mmvicreg.data`` builds from them the per-item transforms its DataLoader workers run and the stage that turns a
batch into the encoder's input on the device (``mmvicreg.data.preprocess``); ``mmvicreg.model`` only declares
them (``Branch.preprocessing``). This module imports nothing from mmvicreg but ``choices``, so both may import it.

:func:`normalize_images` is the one normalisation, ``(x / 255 - mean) / std``: the data package's device stage
calls it, and a branch that is handed uint8 images directly (not through a loader) applies it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torchvision.transforms.v2 import functional as F

from mmvicreg.choices import VICREG_VIEWS


def normalize_images(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(images / 255 - mean) / std`` for a uint8 batch (B, 3, H, W) or image (3, H, W), in float32, where the
    images are (the training device): the same operations, hence the same values, as torchvision's CPU
    ``ToDtype(float32, scale=True)`` then ``Normalize``. Float input is taken as already in [0, 1]."""
    if images.dtype == torch.uint8:
        images = F.to_dtype(images, torch.float32, scale=True)
    return F.normalize(images, mean=list(mean), std=list(std))


@dataclass(frozen=True)
class ImagePreprocessing:
    """An image branch's inputs: read ``field``, make a uint8 (3, size, size) per image, normalise on the device.

    ``train`` / ``eval``: the transform names (``vicreg_view1``, ``vicreg_view2``, ``light``, ``eval``);
    ``interpolation`` of the resize; ``crop_pct``: the eval centre crop's fraction of the resized image;
    ``augment_on``: ``"workers"`` (the whole training view per image) or ``"device"`` (the workers crop and flip, the
    view's colour half runs on the batch, on the device). ``mean`` / ``std`` normalise the encoder's input.
    """

    field: str
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    crop_pct: float
    train: str
    eval: str
    augment_on: str

    modality = "image"

    @classmethod
    def from_spec(cls, field: str, spec: Mapping[str, Any]) -> "ImagePreprocessing":
        """From a branch's resolved ``transform`` section (every key present: ``Branch.transform_spec``; the keys,
        their defaults and their checks are the config's, :mod:`mmvicreg.config.specs`)."""
        return cls(field, int(spec["size"]), tuple(spec["mean"]), tuple(spec["std"]),  # type: ignore[arg-type]
                   spec["interpolation"], float(spec["crop_pct"]), spec["train"], spec["eval"], spec["augment_on"])

    @property
    def device_view(self) -> int | None:
        """The VICReg view (1 or 2) whose colour half runs on the device in training, or None (``augment_on:
        workers``, or a training transform that is no VICReg view)."""
        return VICREG_VIEWS.get(self.train) if self.augment_on == "device" else None

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or [0, 1] float) images as the encoder reads them: :func:`normalize_images` with this mean/std."""
        return normalize_images(images, self.mean, self.std)


@dataclass(frozen=True)
class TextPreprocessing:
    """A text branch's inputs: read ``field``, ``tokenizer.encode(text)`` -> 1-D LongTensor of ids per caption,
    right-padded with ``tokenizer.pad_id`` in a batch. The tokenizer is the text encoder's own."""

    field: str
    tokenizer: Any

    modality = "text"

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id


Preprocessing = ImagePreprocessing | TextPreprocessing

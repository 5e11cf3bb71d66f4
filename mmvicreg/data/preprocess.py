"""A model's declared preprocessing, built: the per-item transforms for the workers and the stage on the device.

Each branch declares what its inputs are (:mod:`mmvicreg.preprocessing`: ``ImagePreprocessing`` or
``TextPreprocessing``, ``JointEmbedding.preprocessing()`` gives them by branch name). From those declarations this
module builds the two halves of the input path, and nothing else builds them:

* :func:`branch_preprocessors` -> ``{branch: Preprocessor(field, fn, pad_id)}`` for :func:`make_loader`: ``fn`` is
  an :class:`ItemPreprocessor`, run per raw item in the DataLoader workers (an image branch's transform, uint8 out:
  the VICReg view, the light recipe or the eval transform; with ``augment_on: device`` in training, only the
  crop and flip; with ``decode_on="device"``, no decode: the bytes and the drawn crop,
  :mod:`mmvicreg.data.device_decode`; a text branch's tokenizer);
* :class:`DeviceInput` -> the last stage of the loader, in the main process: a collated batch moved to the device,
  where image batches become the encoders' float input (a batch of undecoded crops is decoded there first; with
  ``augment_on: device`` in training, the view's colour half next,
  :class:`~mmvicreg.data.device_augment.DeviceViewAugment`; then ``(x / 255 - mean) / std``).

A loader built with both hands the model batches it reads as they are: the model never calls back into this package.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from mmvicreg.data.batching import Preprocessor
from mmvicreg.data.device_augment import DeviceViewAugment
from mmvicreg.data.device_decode import DeviceDecode, EncodedCrop, EncodedCrops, cropper_for, decode_crops
from mmvicreg.data.sources.encoded import EncodedImage
from mmvicreg.data.sources.io import convert_rgb
from mmvicreg.data.transforms import accepts_encoded, build_transform, vicreg_crop
from mmvicreg.choices import DECODE_PLACES, check_choice
from mmvicreg.preprocessing import ImagePreprocessing, Preprocessing

Batch = dict[str, Any]


class ItemPreprocessor:
    """A branch's preprocessing of one raw item: ``tokenizer.encode`` for text, ``transform`` for images.

    Picklable, and it carries the transform or the tokenizer only (never an encoder's weights, which would
    otherwise be copied into every DataLoader worker).
    """

    def __init__(self, field: str, tokenizer: Any = None, transform: Callable | None = None) -> None:
        self.field, self.tokenizer, self.transform = field, tokenizer, transform

    @property
    def accepts_encoded(self) -> bool:
        """Whether it takes images read but not decoded (``EncodedImage``): the loader then lets it decode."""
        return self.tokenizer is None and accepts_encoded(self.transform)

    def __call__(self, item: Any) -> torch.Tensor | EncodedCrop:
        """One raw item (str; PIL image, uint8 array or tensor, ``EncodedImage``) -> the tensor the branch reads
        (before batching): 1-D token ids, or a uint8 image (3, size, size); under ``decode_on="device"`` an
        :class:`EncodedCrop` instead. A caption given to an image branch raises ``TypeError`` naming the field."""
        if self.tokenizer is not None:
            return self.tokenizer.encode(item)
        if isinstance(item, Image.Image):
            item = convert_rgb(item)  # 16-bit and transparent images too
        elif not isinstance(item, (torch.Tensor, np.ndarray, EncodedImage)):
            raise TypeError(
                f"this branch reads images (field {self.field!r}), got {type(item).__name__}; "
                f"is a caption routed to an image branch?"
            )
        return self.transform(item)  # type: ignore[misc]


def item_preprocessor(declaration: Preprocessing, train: bool = False, decode_on: str = "workers") -> ItemPreprocessor:
    """``item -> tensor`` of one branch, as its declaration says: the training transform (``train``) or the eval
    one; with ``augment_on: device``, training runs only the view's crop and flip here (:class:`DeviceInput` runs
    its colour half on the batch). With ``decode_on="device"`` an image branch decodes nothing here: it draws the
    crop and hands on the bytes (:func:`~mmvicreg.data.device_decode.cropper_for`; a VICReg view in training needs
    ``augment_on: device``, else ``ValueError``)."""
    if not isinstance(declaration, ImagePreprocessing):
        return ItemPreprocessor(declaration.field, declaration.tokenizer)
    d = declaration
    if check_choice(decode_on, DECODE_PLACES, "decode_on") == "device":
        transform: Callable = cropper_for(d.train if train else d.eval, d.size, d.interpolation, d.crop_pct,
                                          colour_in_workers=train and d.device_view is None)
    elif train and d.device_view is not None:
        transform = v2.Compose(vicreg_crop(d.size, d.interpolation))
    else:
        transform = build_transform(d.train if train else d.eval, d.size, d.interpolation, d.crop_pct)
    return ItemPreprocessor(d.field, None, transform)


def branch_preprocessors(declarations: Mapping[str, Preprocessing], train: bool,
                         decode_on: str = "workers") -> dict[str, Preprocessor]:
    """``{branch: Preprocessor(raw field, item -> tensor, pad id or None)}``: what :func:`make_loader` and
    ``StreamDataset`` take, from ``{branch: declaration}`` (``JointEmbedding.preprocessing()``); ``decode_on``:
    where images decode, ``"workers"`` or ``"device"`` (:func:`item_preprocessor`)."""
    return {
        name: Preprocessor(d.field, item_preprocessor(d, train, decode_on),
                           None if isinstance(d, ImagePreprocessing) else d.pad_id)
        for name, d in declarations.items()
    }


class DeviceInput:
    """A collated batch -> the model's input on ``device``: the loader's last stage.

    Every tensor moves to ``device`` (``non_blocking``: pinned batches copy asynchronously). A batch of undecoded
    crops (``decode_on: device``: :class:`EncodedCrops`) is decoded, cropped and resized there first, all branches in
    one batched decode (:func:`~mmvicreg.data.device_decode.decode_crops`; no RNG draw). A uint8 batch of an
    image branch becomes float32 ``(x / 255 - mean) / std`` with that branch's statistics; in training (``train``)
    a branch with ``augment_on: device`` first gets its VICReg view's colour half, per sample, drawn from the
    device's global RNG (seeded runs repeat). The draws go branch by branch in the batch's order, and, with
    ``chunk`` (``train.micro_batch_size``), micro-batch by micro-batch (each micro-batch's branches in turn): the
    order the model's forwards drew them in when the augmentation ran inside them. Other keys pass through.
    """

    def __init__(self, declarations: Mapping[str, Preprocessing], train: bool,
                 device: torch.device | str = "cpu", chunk: int | None = None) -> None:
        self.device, self.chunk = torch.device(device), chunk
        self.images = {n: d for n, d in declarations.items() if isinstance(d, ImagePreprocessing)}
        self.augment = {n: DeviceViewAugment(d.device_view, d.size) for n, d in self.images.items()
                        if train and d.device_view is not None}
        self.decoders = {n: DeviceDecode(d.size, d.interpolation, d.crop_pct) for n, d in self.images.items()}

    def __call__(self, batch: Mapping[str, Any]) -> Batch:
        out: Batch = {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                      for k, v in batch.items()}
        encoded = {k: v for k, v in out.items() if k in self.decoders and isinstance(v, EncodedCrops)}
        if encoded:
            out.update(decode_crops(encoded, self.decoders, self.device))
        pixels = [k for k, v in out.items() if k in self.images and isinstance(v, torch.Tensor)
                  and v.dtype == torch.uint8]
        out.update(self._augmented({k: out[k] for k in pixels if k in self.augment}))
        for key in pixels:
            out[key] = self.images[key].normalize(out[key])
        return out

    def _augmented(self, batches: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The colour half of each branch's view (float in [0, 1]), drawn in the order the class docstring says."""
        if not batches:
            return {}
        rows = next(iter(batches.values())).shape[0]
        step = self.chunk if self.chunk is not None and 0 < self.chunk < rows else rows
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in batches}
        for lo in range(0, rows, step):
            for key, x in batches.items():
                parts[key].append(self.augment[key](x[lo : lo + step]))
        return {k: p[0] if len(p) == 1 else torch.cat(p) for k, p in parts.items()}

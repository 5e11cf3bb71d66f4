"""``data.decode_on: device``: the workers read a JPEG and draw its crop; the device decodes the batch.

With ``decode_on: workers`` (the default) each DataLoader worker decodes its images and crops them
(:class:`~mmvicreg.data.transforms.DecodeResizedCrop`). With ``decode_on: device`` the work splits in two:

* per item, in the workers, :class:`EncodedCropper`: the image's bytes as they were read and its header's size
  (:class:`~mmvicreg.data.sources.encoded.EncodedImage`: nothing decoded), the crop box drawn by the CPU path's own
  transform (:meth:`DecodeResizedCrop.draw`) and the flip drawn as ``v2.RandomHorizontalFlip`` draws it
  (``torch.rand(1) < p``), in the CPU path's order: the same RNG stream gives the same boxes and flips, hence the same
  crop distribution. Out comes an :class:`EncodedCrop`; the collate keeps a branch's as one :class:`EncodedCrops`.
  Evaluation transforms (and ``train: eval``) have no box: the device resizes the shorter side to
  :func:`~mmvicreg.data.transforms.eval_resize_side` and centre-crops, as the CPU eval transform does.
* per batch, in the main process (the loader's device stage, :class:`~mmvicreg.data.preprocess.DeviceInput`),
  :func:`decode_crops`: one batched ``torchvision.io.decode_jpeg(list, device=...)`` call for every branch of the
  batch (a file two branches read decodes once), then per image the crop, the resize (torchvision's
  ``resized_crop``, antialiased, the branch's interpolation, as the CPU path) and the flip; uint8
  ``(B, 3, size, size)`` on the device, which the device stage then augments and normalises as any uint8 batch.

On CUDA the decode is nvJPEG's, batched. Without CUDA the device is the CPU and the same call decodes in the main
process (libjpeg-turbo, the workers' decoder: useful to test, rarely faster than workers).

What stays on the CPU, in the worker, with the CPU path's pixels: images that are not JPEG files (PNG, WebP, ...),
JPEGs whose header mode is neither RGB nor greyscale (CMYK, YCCK), and images a source hands over decoded (PIL
images, arrays). Their crop is drawn the same way and made there (:attr:`EncodedCrop.pixels`).

Numerics: the JPEG decode is the same libjpeg-turbo decode on the CPU (pixels equal to the workers'), and nvJPEG's on
CUDA (within a level or two). The workers decode a large crop at a DCT reduction (1/2, 1/4, 1/8) and the device
decodes at full size and resizes with antialiasing, so the crops differ by a few levels where the reduction applied;
evaluation resizes a tensor here and a PIL image in the workers (bicubic, a level or two apart). The tests bound both.

Errors: a JPEG whose header reads but whose body does not decode raises :class:`BadImageError` naming the file
(found by decoding the batch's files one by one after the batched call failed). The source's bad-data policy cannot
leave the image out here (the batch is made); use ``decode_on: workers`` with ``on_bad_image: skip`` for data with
broken files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from mmvicreg.data.sources.encoded import EncodedImage
from mmvicreg.data.sources.io import BadImageError
from mmvicreg.data.transforms import (
    DecodeResizedCrop,
    build_transform,
    eval_resize_side,
    interpolation_mode,
    light_train,
    vicreg_crop,
)

DEVICE_MODES = ("RGB", "L")  # JPEG header modes the device decodes (to RGB); others are made on the CPU


@dataclass
class EncodedCrop:
    """One image as a worker hands it on under ``decode_on: device``.

    Either ``data`` (the JPEG file's bytes, uint8 1-D) with ``box`` (``(top, left, height, width)`` on the full
    image; None: the evaluation resize and centre crop) and ``flip``; or ``pixels``, the crop already made on the CPU
    (uint8 ``(3, size, size)``; see the module docstring for which images). ``name`` names the image in errors.
    """

    name: str
    data: torch.Tensor | None = None
    box: tuple[int, int, int, int] | None = None
    flip: bool = False
    pixels: torch.Tensor | None = None


class EncodedCrops:
    """A branch's :class:`EncodedCrop` of one batch, in order (the collate's value; a DataLoader's ``pin_memory``
    passes it by: the bytes stay on the host, where ``decode_jpeg`` reads them)."""

    def __init__(self, crops: Sequence[EncodedCrop]) -> None:
        self.crops = list(crops)

    def __len__(self) -> int:
        return len(self.crops)


class EncodedCropper:
    """``image -> EncodedCrop``: the worker half of ``decode_on: device`` for one branch (picklable).

    ``cpu`` is the branch's CPU transform (:func:`cropper_for` builds both from a declaration): its first step is the
    :class:`DecodeResizedCrop` whose draw this uses (None for an eval transform, which draws nothing), and a
    ``v2.RandomHorizontalFlip`` after it, if any, gives the flip's probability. Images the device does not decode go
    through the same draws and are made here with the CPU transform's own steps.
    """

    accepts_encoded = True  # it takes EncodedImage (read, not decoded): the loader reads images so

    def __init__(self, cpu: v2.Compose) -> None:
        steps = list(cpu.transforms)
        self.cpu = cpu
        self.crop = steps[0] if isinstance(steps[0], DecodeResizedCrop) else None
        flips = [s for s in steps[1:] if isinstance(s, v2.RandomHorizontalFlip)]
        self.flip_p = float(flips[0].p) if self.crop is not None and flips else None

    def __call__(self, image: Any) -> EncodedCrop:
        """Draw (the crop, then the flip: the CPU path's order), then hand on the bytes or the CPU-made crop."""
        encoded = EncodedImage.wrap(image)
        params = self.crop.draw(encoded) if self.crop is not None else None
        flip = self.flip_p is not None and bool(torch.rand(1) < self.flip_p)  # v2 skips when rand(1) >= p
        if encoded.data is not None and encoded.format == "JPEG" and encoded.mode in DEVICE_MODES:
            box = None if params is None else (params["top"], params["left"], params["height"], params["width"])
            return EncodedCrop(encoded.name, torch.frombuffer(bytearray(encoded.data), dtype=torch.uint8), box, flip)
        if params is None:
            return EncodedCrop(encoded.name, pixels=self.cpu(encoded))
        pixels = self.crop.transform(encoded, params)
        return EncodedCrop(encoded.name, pixels=F.horizontal_flip(pixels) if flip else pixels)


def cropper_for(transform: str, size: int, interpolation: str, crop_pct: float,
                colour_in_workers: bool) -> EncodedCropper:
    """The worker half for a branch's ``transform`` (a transform name) at ``size``: a VICReg view's crop and flip
    (its colour half must run on the device: ``colour_in_workers`` raises ``ValueError``), the light recipe's crop, or
    the eval transform."""
    if transform in ("vicreg_view1", "vicreg_view2"):
        if colour_in_workers:
            raise ValueError(f"decode_on: device decodes after the workers, so {transform}'s colour half cannot run "
                             f"there; set the branch's transform.augment_on: device, or data.decode_on: workers")
        return EncodedCropper(v2.Compose(vicreg_crop(size, interpolation)))
    if transform == "light":
        return EncodedCropper(light_train(size, interpolation))
    return EncodedCropper(build_transform(transform, size, interpolation, crop_pct))


class DeviceDecode:
    """The device half for one branch: decoded images and their crops -> uint8 ``(B, 3, size, size)``.

    ``size``, ``interpolation`` (a name) and ``crop_pct`` are the branch's; a crop without a box gets the evaluation
    resize (shorter side :func:`eval_resize_side`) and the centre crop.
    """

    def __init__(self, size: int, interpolation: str, crop_pct: float) -> None:
        self.size, self.mode = [size, size], interpolation_mode(interpolation)
        self.resize = eval_resize_side(size, crop_pct)

    def crop(self, image: torch.Tensor, item: EncodedCrop) -> torch.Tensor:
        """One decoded image ``(3, H, W)`` -> its crop, resized (antialiased) and flipped as ``item`` says."""
        if item.box is None:
            out = F.center_crop(F.resize(image, [self.resize], interpolation=self.mode, antialias=True), self.size)
        else:
            out = F.resized_crop(image, *item.box, self.size, interpolation=self.mode, antialias=True)
        return F.horizontal_flip(out) if item.flip else out


def decode_jpegs(crops: Sequence[EncodedCrop], device: torch.device) -> list[torch.Tensor]:
    """The JPEGs of ``crops`` decoded to RGB ``(3, H, W)`` uint8 on ``device``, in one batched call; a file that
    does not decode raises :class:`BadImageError` naming it."""
    data = [c.data for c in crops]
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)  # type: ignore[arg-type]
    except RuntimeError:
        for crop in crops:  # the batch failed: find the file
            try:
                decode_jpeg(crop.data, mode=ImageReadMode.RGB, device=device)  # type: ignore[arg-type]
            except RuntimeError as exc:
                reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                raise BadImageError(
                    f"cannot decode image {crop.name} on {device} (data.decode_on: device; {reason}); replace the "
                    f"file, or set data.decode_on: workers with on_bad_image: skip"
                ) from None
        raise


def decode_crops(batches: Mapping[str, EncodedCrops], decoders: Mapping[str, DeviceDecode],
                 device: torch.device | str) -> dict[str, torch.Tensor]:
    """``{branch: EncodedCrops}`` -> ``{branch: uint8 (B, 3, size, size) on device}``: every branch's JPEGs in
    one batched decode (a file that several branches read, by name and bytes, decodes once), then each branch's
    crops with ``decoders[branch]``; crops made on the CPU are moved there as they are."""
    device = torch.device(device)
    unique: list[EncodedCrop] = []
    seen: dict[str, list[int]] = {}
    slots: dict[str, list[int]] = {}
    for key, batch in batches.items():
        slots[key] = []
        for item in batch.crops:
            if item.data is None:
                slots[key].append(-1)
                continue
            same = [i for i in seen.get(item.name, []) if torch.equal(unique[i].data, item.data)]  # type: ignore[arg-type]
            if not same:
                seen.setdefault(item.name, []).append(len(unique))
                unique.append(item)
            slots[key].append(same[0] if same else len(unique) - 1)
    decoded = decode_jpegs(unique, device) if unique else []
    out = {}
    for key, batch in batches.items():
        images = [item.pixels.to(device) if slot < 0 else decoders[key].crop(decoded[slot], item)  # type: ignore[union-attr]
                  for item, slot in zip(batch.crops, slots[key])]
        out[key] = torch.stack(images)
    return out


"""Image transforms (torchvision.transforms.v2): the VICReg view pair, a light image–text recipe, evaluation.

All take an RGB PIL image (or a uint8 tensor image) and return a float tensor (3, size, size), normalised with
``mean``/``std`` (ImageNet's unless the weights or the config say otherwise) and resized with ``interpolation``
(``"bicubic"`` unless the weights were trained with another).
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import torch
from PIL import Image, ImageFilter
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from mmvicreg.choices import TRANSFORMS, did_you_mean

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_INTERPOLATION = "bicubic"
DEFAULT_CROP_PCT = 0.875
INTERPOLATIONS = tuple(m.value for m in InterpolationMode)


def interpolation_mode(name: str) -> InterpolationMode:
    """``"bicubic"`` -> ``InterpolationMode.BICUBIC``; an unknown name raises naming the known ones."""
    if name not in INTERPOLATIONS:
        raise ValueError(
            f"unknown interpolation {name!r}{did_you_mean(name, INTERPOLATIONS)}; known: {', '.join(INTERPOLATIONS)}"
        )
    return InterpolationMode(name)


def _to_normalised_tensor(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]


def _blur_kernel(size: int) -> int:
    """An odd kernel about a tenth of the image side (23 px at 224, as the published recipe's PIL blur)."""
    k = max(3, int(0.1 * size))
    return k if k % 2 == 1 else k + 1


class GaussianBlurPIL(v2.GaussianBlur):
    """``v2.GaussianBlur`` that blurs PIL images with PIL, as the published code does (radius = σ).

    At 224 px PIL's blur takes about a sixth of the time of the 23-tap convolution torchvision runs, and the blur
    fires on every view-1 image: it was the slowest step of the pipeline. Tensor images keep torchvision's kernel.
    """

    def transform(self, inpt, params):
        if isinstance(inpt, Image.Image):
            return inpt.filter(ImageFilter.GaussianBlur(radius=params["sigma"][0]))
        return super().transform(inpt, params)


def vicreg_view(
    size: int = 224,
    view: int = 1,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: str = DEFAULT_INTERPOLATION,
) -> v2.Compose:
    """One of the two published VICReg views (Bardes et al. 2022, appendix; facebookresearch/vicreg).

    RandomResizedCrop(scale 0.08–1, bicubic unless ``interpolation`` says otherwise), horizontal flip 0.5, ColorJitter(0.4, 0.4, 0.2, 0.1) with p 0.8,
    grayscale p 0.2, Gaussian blur (σ ∈ [0.1, 2]) with p 1.0 (view 1) / 0.1 (view 2), solarisation p 0.0 / 0.2.
    """
    if view not in (1, 2):
        raise ValueError(f"view must be 1 or 2, got {view!r}")
    blur_p, solarize_p = (1.0, 0.0) if view == 1 else (0.1, 0.2)
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=interpolation_mode(interpolation), antialias=True),
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([GaussianBlurPIL(kernel_size=_blur_kernel(size), sigma=(0.1, 2.0))], p=blur_p),
            v2.RandomSolarize(threshold=128, p=solarize_p),
            *_to_normalised_tensor(mean, std),
        ]
    )


def light_train(
    size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: str = DEFAULT_INTERPOLATION,
) -> v2.Compose:
    """Image–text training: a mild random resized crop (scale 0.5–1).

    No horizontal flip: captions name left and right ("a dog left of a man"), and a flip would contradict them.
    """
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=interpolation_mode(interpolation), antialias=True),
            *_to_normalised_tensor(mean, std),
        ]
    )


def eval_transform(
    size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop_pct: float = DEFAULT_CROP_PCT,
    interpolation: str = DEFAULT_INTERPOLATION,
) -> v2.Compose:
    """Resize the short side to ``size / crop_pct`` (256 for 224 at 0.875), then centre-crop ``size``."""
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct!r}")
    return v2.Compose(
        [
            v2.Resize(round(size / crop_pct), interpolation=interpolation_mode(interpolation), antialias=True),
            v2.CenterCrop(size),
            *_to_normalised_tensor(mean, std),
        ]
    )


def build_transform(
    name: str,
    size: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    interpolation: str | None = None,
    crop_pct: float | None = None,
) -> v2.Compose:
    """A transform by name: ``vicreg_view1``, ``vicreg_view2``, ``light`` or ``eval``; None means the default.

    ``crop_pct`` (the eval centre crop's fraction of the resized image) only affects ``eval``.
    """
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}{did_you_mean(name, TRANSFORMS)}; known: {', '.join(TRANSFORMS)}")
    mean = tuple(mean) if mean is not None else IMAGENET_MEAN
    std = tuple(std) if std is not None else IMAGENET_STD
    interpolation = interpolation or DEFAULT_INTERPOLATION
    if name in ("vicreg_view1", "vicreg_view2"):
        return vicreg_view(size, 1 if name == "vicreg_view1" else 2, mean, std, interpolation)
    if name == "light":
        return light_train(size, mean, std, interpolation)
    return eval_transform(size, mean, std, crop_pct if crop_pct is not None else DEFAULT_CROP_PCT, interpolation)


@functools.lru_cache(maxsize=32)
def _cached_transform(name: str, size: int, mean: tuple | None, std: tuple | None, interpolation: str | None,
                      crop_pct: float | None) -> v2.Compose:
    return build_transform(name, size, mean, std, interpolation, crop_pct)


def decode_views(
    path: str | os.PathLike,
    names: Sequence[str] = ("vicreg_view1", "vicreg_view2"),
    size: int = 224,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    interpolation: str | None = None,
) -> list[torch.Tensor]:
    """The views of the image file at ``path``, exactly as the training loader's workers make them: the file
    decoded as RGB (as every file-backed source decodes it), then each transform of ``names`` at ``size``
    (:func:`build_transform`), drawing from torch's global RNG. One entry for the whole input path, to measure
    and reuse it (``benchmarks/input_pipeline.py``)."""
    from mmvicreg.data.sources.io import open_image  # transforms take images; this entry also reads the file

    image = open_image(path)
    spec = (tuple(mean) if mean is not None else None, tuple(std) if std is not None else None, interpolation, None)
    return [_cached_transform(name, size, *spec)(image) for name in names]

"""Image transforms (torchvision.transforms.v2): the VICReg view pair, a light image–text recipe, evaluation.

All take an RGB PIL image, a uint8 tensor (3, H, W) or an :class:`~mmvicreg.data.sources.encoded.EncodedImage`
(what file sources give a training loader: bytes and header, not yet decoded) and return a **uint8** tensor
(3, size, size), resized with ``interpolation`` (``"bicubic"`` unless the weights were trained with another).
Images stay uint8 until the training device: :func:`normalize_images` turns a batch into the float input an
encoder reads, on the device (the loader's device stage, :class:`mmvicreg.data.preprocess.DeviceInput`), 4× less
memory traffic than float workers.

Speed, per image at 224 px on one core (measured in ``benchmarks/input_pipeline.py``): the random crop is drawn
from the header's size and a JPEG is decoded at the largest DCT reduction that keeps the crop at least the
output size (:class:`DecodeResizedCrop`); the crop is resized by torchvision's uint8 tensor kernel (about 3×
PIL's bicubic); the colour operations and the blur run on the 224 px crop with OpenCV's kernels, which compute
torchvision's formulas to one level: about 3× PIL's speed at hue and 5× at the blur
(:mod:`mmvicreg.data.opencv_kernels`, ``benchmarks/colour_ops.py``).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from mmvicreg.choices import INTERPOLATIONS, TRANSFORMS, VICREG_VIEWS, did_you_mean
from mmvicreg.data.opencv_kernels import as_cv_image, one_thread
from mmvicreg.data.protocols import DeclaresEncoded
from mmvicreg.data.recipe import CROP_SCALE, FLIP_P, blur_kernel_size, view_recipe
from mmvicreg.data.sources.encoded import EncodedImage, largest_reduction
from mmvicreg.data.sources.io import convert_rgb
from mmvicreg.config.specs import (  # noqa: F401  (IMAGENET_*: the defaults of the transform keys, named here too)
    DEFAULT_CROP_PCT,
    DEFAULT_INTERPOLATION,
    IMAGENET_MEAN,
    IMAGENET_STD,
)
from mmvicreg.preprocessing import normalize_images  # noqa: F401  (the one normalisation, a data name too)


def interpolation_mode(name: str) -> InterpolationMode:
    """``"bicubic"`` -> ``InterpolationMode.BICUBIC``; an unknown name raises naming the known ones."""
    if name not in INTERPOLATIONS:
        raise ValueError(
            f"unknown interpolation {name!r}{did_you_mean(name, INTERPOLATIONS)}; known: {', '.join(INTERPOLATIONS)}"
        )
    return InterpolationMode(name)


class DecodeResizedCrop(v2.RandomResizedCrop):
    """``v2.RandomResizedCrop`` whose box is drawn from the image's size before it is decoded.

    The box is torchvision's own draw (``make_params``: the published scale and ratio distribution) on the full
    image's size; an :class:`EncodedImage` JPEG is then decoded at the largest DCT reduction ``r`` (8, 4, 2, 1)
    that leaves the box at least ``size`` pixels each way, the box is mapped to the reduced pixels
    (``round(x / r)``), and cropped and resized there. Returns a uint8 tensor (3, size, size). Decoded inputs (PIL
    images, uint8 tensors) are crops of the full image, as ``v2.RandomResizedCrop`` gives.
    """

    def forward(self, *inputs: Any) -> torch.Tensor:
        image = EncodedImage.wrap(inputs[0] if len(inputs) == 1 else inputs)
        return self.transform(image, self.draw(image))

    def draw(self, image: EncodedImage) -> dict[str, Any]:
        """The box ``forward`` crops (``top``, ``left``, ``height``, ``width`` on the full image): torchvision's
        ``make_params`` on the image's size, from torch's global RNG. ``data.decode_on: device`` draws through it
        too (:mod:`mmvicreg.data.device_decode`), so the same RNG stream gives the same boxes."""
        canvas = tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(image.height, image.width))
        return self.make_params([canvas])

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, EncodedImage):
            return super().transform(inpt, params)
        out_h, out_w = self.size
        reduction = largest_reduction(params["height"], params["width"], out_h, out_w)
        pixels, r = inpt.decode(reduction)
        top, left = min(round(params["top"] / r), pixels.shape[0] - 1), min(round(params["left"] / r), pixels.shape[1] - 1)
        height = max(1, min(round(params["height"] / r), pixels.shape[0] - top))
        width = max(1, min(round(params["width"] / r), pixels.shape[1] - left))
        # (H, W, 3) viewed as (3, H, W): channels-last memory, which torchvision's uint8 resize kernel prefers
        return F.resized_crop(pixels.permute(2, 0, 1), top, left, height, width, list(self.size),
                              interpolation=self.interpolation, antialias=True)


class DecodedPIL(v2.Transform):
    """Any image input (an :class:`EncodedImage`, a PIL image, a uint8 tensor) as an RGB PIL image.

    Full size, except that with ``keep_side`` an :class:`EncodedImage` JPEG is decoded at the largest DCT
    reduction (1/2, 1/4, 1/8) that leaves both its sides at least ``keep_side`` pixels: a huge photo is never
    decoded at full size, and an image smaller than twice ``keep_side`` decodes exactly as before.
    """

    def __init__(self, keep_side: int | None = None) -> None:
        super().__init__()
        self.keep_side = keep_side

    def forward(self, *inputs: Any) -> Image.Image:
        image = inputs[0] if len(inputs) == 1 else inputs
        if isinstance(image, Image.Image):
            return convert_rgb(image)
        image = EncodedImage.wrap(image)
        if self.keep_side is None or image.format != "JPEG":  # only a JPEG decodes reduced
            return image.to_pil()
        pixels, _ = image.decode(largest_reduction(image.height, image.width, self.keep_side, self.keep_side))
        return Image.fromarray(pixels.numpy())


def as_plain_tensor(image: torch.Tensor) -> torch.Tensor:
    """``image`` as a plain ``torch.Tensor`` (what a view returns; the loader stacks these)."""
    return image.as_subclass(torch.Tensor)


def vicreg_crop(size: int = 224, interpolation: str = DEFAULT_INTERPOLATION, flip: bool = True) -> list[v2.Transform]:
    """The geometric half of a VICReg view: RandomResizedCrop (scale 0.08–1) from the header, then flip 0.5
    (:mod:`mmvicreg.data.recipe`)."""
    crop = DecodeResizedCrop(size, scale=CROP_SCALE, interpolation=interpolation_mode(interpolation), antialias=True)
    return [crop, v2.RandomHorizontalFlip(p=FLIP_P)] if flip else [crop]


def vicreg_view(size: int = 224, view: int = 1, interpolation: str = DEFAULT_INTERPOLATION) -> v2.Compose:
    """One of the two published VICReg views (Bardes et al. 2022, appendix; facebookresearch/vicreg).

    RandomResizedCrop(scale 0.08–1, bicubic unless ``interpolation`` says otherwise), horizontal flip 0.5, then
    the view's colour half as :func:`mmvicreg.data.recipe.view_recipe` writes it (ColorJitter(0.4, 0.4, 0.2, 0.1)
    with p 0.8, grayscale p 0.2, Gaussian blur (σ ∈ [0.1, 2]) with p 1.0 (view 1) / 0.1 (view 2), solarisation
    p 0.0 / 0.2); a uint8 tensor out.
    """
    r = view_recipe(view)
    jitter = v2.ColorJitter(brightness=r.brightness, contrast=r.contrast, saturation=r.saturation, hue=r.hue)
    blur = v2.GaussianBlur(kernel_size=blur_kernel_size(size), sigma=r.blur_sigma)
    return v2.Compose(
        [
            *vicreg_crop(size, interpolation),
            as_cv_image,  # the colour half runs OpenCV's kernels on the crop (mmvicreg.data.opencv_kernels)
            v2.RandomApply([jitter], p=r.jitter_p),
            v2.RandomGrayscale(p=r.grayscale_p),
            v2.RandomApply([blur], p=r.blur_p),
            v2.RandomSolarize(threshold=r.solarize_threshold, p=r.solarize_p),
            as_plain_tensor,
        ]
    )


def light_train(size: int = 224, interpolation: str = DEFAULT_INTERPOLATION) -> v2.Compose:
    """Image–text training: a mild random resized crop (scale 0.5–1); a uint8 tensor out.

    No horizontal flip: captions name left and right ("a dog left of a man"), and a flip would contradict them.
    """
    return v2.Compose(
        [DecodeResizedCrop(size, scale=(0.5, 1.0), interpolation=interpolation_mode(interpolation), antialias=True)]
    )


def eval_resize_side(size: int, crop_pct: float = DEFAULT_CROP_PCT) -> int:
    """The shorter side evaluation resizes to before its centre crop of ``size``: ``round(size / crop_pct)``
    (256 for 224 at 0.875); ``crop_pct`` outside (0, 1] raises ``ValueError``."""
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct!r}")
    return round(size / crop_pct)


def eval_transform(size: int = 224, crop_pct: float = DEFAULT_CROP_PCT,
                   interpolation: str = DEFAULT_INTERPOLATION) -> v2.Compose:
    """Resize the short side to ``size / crop_pct`` (256 for 224 at 0.875), then centre-crop ``size``; uint8 out.

    Evaluation decodes at full size and resizes with PIL, as the published protocols do, so that its numbers do
    not depend on the training pipeline's shortcuts; only a JPEG read undecoded whose shorter side is at least
    four times the resize is decoded at a DCT reduction that keeps it at least twice the resize (a huge image
    never sits in memory at full size; :class:`DecodedPIL`).
    """
    resize = eval_resize_side(size, crop_pct)
    return v2.Compose(
        [
            DecodedPIL(keep_side=2 * resize),
            v2.Resize(resize, interpolation=interpolation_mode(interpolation), antialias=True),
            v2.CenterCrop(size),
            v2.PILToTensor(),
        ]
    )


def accepts_encoded(transform: Any) -> bool:
    """Whether ``transform`` takes an :class:`EncodedImage` (it decodes its input itself): this module's
    transforms, and any callable that says so with an ``accepts_encoded`` attribute."""
    if isinstance(transform, DeclaresEncoded) and isinstance(transform.accepts_encoded, bool):
        return transform.accepts_encoded
    return isinstance(transform, v2.Compose) and isinstance(transform.transforms[0], (DecodeResizedCrop, DecodedPIL))


def build_transform(
    name: str,
    size: int,
    interpolation: str | None = None,
    crop_pct: float | None = None,
) -> v2.Compose:
    """A transform by name: ``vicreg_view1``, ``vicreg_view2``, ``light`` or ``eval``; None means the default.

    ``crop_pct`` (the eval centre crop's fraction of the resized image) only affects ``eval``. The result is
    uint8: normalise batches with :func:`normalize_images` (a branch does it on the device).
    """
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}{did_you_mean(name, TRANSFORMS)}; known: {', '.join(TRANSFORMS)}")
    interpolation = interpolation or DEFAULT_INTERPOLATION
    if name in VICREG_VIEWS:
        return vicreg_view(size, VICREG_VIEWS[name], interpolation)
    if name == "light":
        return light_train(size, interpolation)
    return eval_transform(size, crop_pct if crop_pct is not None else DEFAULT_CROP_PCT, interpolation)


@functools.lru_cache(maxsize=32)
def _cached_transform(name: str, size: int, interpolation: str | None) -> v2.Compose:
    return build_transform(name, size, interpolation)


def decode_views(
    path: str | os.PathLike,
    names: Sequence[str] = ("vicreg_view1", "vicreg_view2"),
    size: int = 224,
    interpolation: str | None = None,
) -> list[torch.Tensor]:
    """The views of the image file at ``path``, exactly as the training loader's workers make them (uint8
    tensors (3, size, size), before the device normalises them): the file read and its header checked as a file
    source reads it (:meth:`EncodedImage.open`), then each transform of ``names`` at ``size``
    (:func:`build_transform`) on that one read, drawing from torch's global RNG. One entry for the whole input
    path, to measure and reuse it (``benchmarks/input_pipeline.py``)."""
    image = EncodedImage.open(path)
    with one_thread():
        return [_cached_transform(name, size, interpolation)(image) for name in names]

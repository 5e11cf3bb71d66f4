"""The VICReg view recipe, written once: read by the workers' transforms and by the device augmentation.

Bardes et al. 2022 (appendix; facebookresearch/vicreg): each view is a random resized crop (scale 0.08–1) and a
horizontal flip (p 0.5), then its colour half:

    RandomApply([ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8)
    RandomGrayscale(p=0.2)
    RandomApply([GaussianBlur(kernel_size=blur_kernel_size(size), sigma=(0.1, 2.0))], p=blur_p)
    RandomSolarize(threshold=128, p=solarize_p)

with ``(blur_p, solarize_p) = (1.0, 0.0)`` for view 1 and ``(0.1, 0.2)`` for view 2. :func:`view_recipe` gives a
view's :class:`ViewRecipe`; :func:`mmvicreg.data.transforms.vicreg_view` (per image, in the workers) and
:class:`mmvicreg.data.device_augment.DeviceViewAugment` (per batch, on the device) both build from it.
"""

from __future__ import annotations

from dataclasses import dataclass

CROP_SCALE = (0.08, 1.0)  # RandomResizedCrop's area fraction
FLIP_P = 0.5
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")  # torchvision's ColorJitter numbers them 0..3


@dataclass(frozen=True)
class ViewRecipe:
    """The colour half of one view: ColorJitter strengths and probabilities, as torchvision's transforms take them.

    ``blur_sigma`` is the range σ is drawn from; ``solarize_threshold`` is on 8-bit levels (128: ``x >= 128/255``
    on images in [0, 1]).
    """

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 1.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    solarize_threshold: int = 128

    def factor_ranges(self) -> dict[str, tuple[float, float]]:
        """``{op: (low, high)}`` of the jitter factors, as ``ColorJitter`` draws them: ``[max(0, 1 - s), 1 + s]``
        for brightness, contrast and saturation, ``[-h, h]`` for hue."""
        ranges = {name: (max(0.0, 1 - s), 1 + s)
                  for name, s in (("brightness", self.brightness), ("contrast", self.contrast),
                                  ("saturation", self.saturation))}
        return {**ranges, "hue": (-self.hue, self.hue)}


VIEW_RECIPES = {1: ViewRecipe(blur_p=1.0, solarize_p=0.0), 2: ViewRecipe(blur_p=0.1, solarize_p=0.2)}


def view_recipe(view: int) -> ViewRecipe:
    """The recipe of VICReg view ``view`` (1 or 2); anything else raises ``ValueError``."""
    if isinstance(view, bool) or view not in VIEW_RECIPES:
        raise ValueError(f"view must be 1 or 2, got {view!r}")
    return VIEW_RECIPES[view]


def blur_kernel_size(size: int) -> int:
    """An odd kernel about a tenth of the image side (23 px at 224, as the published recipe)."""
    k = max(3, int(0.1 * size))
    return k if k % 2 == 1 else k + 1

"""``digits``: scikit-learn's bundled handwritten digits (1,797 real 8×8 scans, labels 0–9), no download.

Images are upscaled (bilinear) to ``size`` pixels and returned as RGB PIL images. The train/test split is a
stratified 80/20 split with a fixed seed, so it is the same on every machine.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from mmvicreg.data.sources.base import ImageSource
from mmvicreg.data.sources.stores import ArrayStore

DIGITS_SPLITS = ("train", "test")  # the dataset's own splits (not a config choice)


class UpscaledRGB:
    """``array -> RGB PIL image`` of ``size``×``size`` pixels, bilinear (picklable, for DataLoader workers)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, pixels: np.ndarray) -> Image.Image:
        return Image.fromarray(pixels).resize((self.size, self.size), Image.BILINEAR).convert("RGB")


class DigitsSource(ImageSource):
    """Samples ``{"image": RGB PIL (size×size), "label": int}``; ``classes`` are ``"0"`` … ``"9"``."""

    def __init__(self, split: str = "train", *, size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        if split not in DIGITS_SPLITS:
            raise ValueError(f"unknown digits split {split!r}; known: {', '.join(DIGITS_SPLITS)}")
        if size < 8:
            raise ValueError(f"size must be >= 8 (the scans are 8×8); got {size}")
        bunch = load_digits()
        index = np.arange(len(bunch.target))
        train, test = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=bunch.target)
        chosen = np.sort(train if split == "train" else test)
        self.size = size
        # The scans hold ink levels 0..16: map them to 0..255 (bright digits on black).
        pixels = (bunch.images[chosen] * (255.0 / 16.0)).round().astype(np.uint8)
        super().__init__(bunch.target[chosen].tolist(), [str(c) for c in bunch.target_names],
                         ArrayStore(pixels, UpscaledRGB(size)), name=f"digits:{split}")

    @property
    def pixels(self) -> np.ndarray:
        """The 8×8 scans (uint8, 0..255), one per image."""
        return self.store.arrays  # type: ignore[attr-defined]

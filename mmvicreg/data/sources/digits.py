"""``digits``: scikit-learn's bundled handwritten digits (1,797 real 8×8 scans, labels 0–9), no download.

scikit-learn is the optional extra ``mmvicreg[digits]``: imported when a digits source is built, and its absence
is one ImportError line naming ``pip install 'mmvicreg[digits]'``.

Images are upscaled (bilinear) to ``size`` pixels and returned as RGB PIL images. The train/test split is a
stratified 80/20 split with a fixed seed, so it is the same on every machine. ``labels=False`` withholds the
labels: the split is then an unlabelled image source (every label ``-1``, no classes), the way self-supervised
pretraining sees its data; evaluation reads the same split with labels as its labelled reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from mmvicreg.data.sources.base import ImageSource
from mmvicreg.data.sources.io import convert_rgb
from mmvicreg.data.sources.stores import ArrayStore
from mmvicreg.extras import import_extra

DIGITS_SPLITS = ("train", "test")  # the dataset's own splits (not a config choice)


def _sklearn() -> tuple[Any, Any]:
    """scikit-learn's ``load_digits`` and ``train_test_split``, or one ImportError line naming the extra to install."""
    needs = "the digits demo data comes from scikit-learn"
    datasets = import_extra("sklearn.datasets", "digits", needs)
    model_selection = import_extra("sklearn.model_selection", "digits", needs)
    return datasets.load_digits, model_selection.train_test_split


class UpscaledRGB:
    """``array -> RGB PIL image`` of ``size``×``size`` pixels, bilinear (picklable, for DataLoader workers)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, pixels: np.ndarray) -> Image.Image:
        return convert_rgb(Image.fromarray(pixels).resize((self.size, self.size), Image.BILINEAR))


class DigitsSource(ImageSource):
    """Samples ``{"image": RGB PIL (size×size), "label": int}``; ``classes`` are ``"0"`` … ``"9"``.

    With ``labels=False`` every label is ``-1`` and ``classes`` is empty (an unlabelled image source).
    """

    def __init__(
        self, split: str = "train", *, size: int = 32, test_fraction: float = 0.2, seed: int = 0, labels: bool = True
    ) -> None:
        load_digits, train_test_split = _sklearn()
        if split not in DIGITS_SPLITS:
            raise ValueError(f"unknown digits split {split!r}; known: {', '.join(DIGITS_SPLITS)}")
        if not isinstance(labels, bool):
            raise TypeError(f"labels must be true or false (false withholds them), got {labels!r}")
        if size < 8:
            raise ValueError(f"size must be >= 8 (the scans are 8×8); got {size}")
        bunch = load_digits()
        index = np.arange(len(bunch.target))
        train, test = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=bunch.target)
        chosen = np.sort(train if split == "train" else test)
        self.size = size
        # The scans hold ink levels 0..16: map them to 0..255 (bright digits on black).
        pixels = (bunch.images[chosen] * (255.0 / 16.0)).round().astype(np.uint8)
        targets = bunch.target[chosen].tolist() if labels else [-1] * len(chosen)
        classes = [str(c) for c in bunch.target_names] if labels else []
        name = f"digits:{split}" if labels else f"digits:{split} (labels withheld)"
        super().__init__(targets, classes, ArrayStore(pixels, UpscaledRGB(size)), name=name)

    @property
    def pixels(self) -> np.ndarray:
        """The 8×8 scans (uint8, 0..255), one per image."""
        return self.store.arrays  # type: ignore[attr-defined]

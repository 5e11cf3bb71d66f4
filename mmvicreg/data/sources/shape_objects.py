"""``shape_objects``: the 48 single objects of the ``shapes`` scenes as labelled images, for zero-shot tests.

Each image is one object of :mod:`.shapes` (2 sizes × 6 colours × 4 shapes) at a random position and colour
shade, drawn exactly as a one-object scene is; its label is the object, and the class names are the words a
``shapes`` caption uses for it (``"small red circle"``), so a model trained on ``shapes`` captions can name every
class: ``mmvicreg eval zeroshot --format shape_objects --templates FILE`` with the template ``a {}``. The classes
are the shapes vocabulary itself (a train scene may show the same object elsewhere): this measures whether the text
tower names what the image tower sees, not generalisation to new words. The classes are balanced (images cycle
through them); splits differ only in the random draws (positions, shades), seeded per split.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

from mmvicreg.data.sources.base import ImageSource
from mmvicreg.data.sources.shapes import COLOURS, SHAPES, SIZES, SPLITS, Scene, checked_request, render
from mmvicreg.data.sources.stores import ArrayStore

OBJECTS = tuple(itertools.product(SIZES, COLOURS, SHAPES))  # (size, colour, shape), a class each
CLASSES = tuple(" ".join(obj) for obj in OBJECTS)
DEFAULT_SIZES = {"train": 4800, "val": 960, "test": 960}  # 100 / 20 / 20 per class


@lru_cache(maxsize=3)
def _generate(split: str, n: int, size: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng([seed, SPLITS.index(split), 48])
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = [i % len(OBJECTS) for i in range(n)]
    for i, label in enumerate(labels):
        images[i] = render(Scene("one", (OBJECTS[label],)), size, rng)
    images.setflags(write=False)  # shared through the cache
    return images, labels


class ShapeObjectsSource(ImageSource):
    """Labelled single-object images (``{"image", "label"}``); ``classes`` name the objects (see the module)."""

    def __init__(self, split: str = "test", *, num_images: int | None = None, size: int = 32, seed: int = 0) -> None:
        default = DEFAULT_SIZES.get(split)  # shapes' request check names an unknown split
        n = checked_request("shape_objects", split, default if num_images is None else num_images, size)
        images, labels = _generate(split, n, int(size), int(seed))
        super().__init__(labels, list(CLASSES), ArrayStore(images), name=f"shape_objects:{split}")

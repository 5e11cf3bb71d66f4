"""``shapes``: procedural captioned scenes, generated in the package from a seed (no download).

A scene is 1–3 objects, each a (size, colour, shape), laid out in a row (left to right) or a column (top to
bottom); its five captions are five different phrasings of the same content, e.g.
``"a small red circle left of a large blue square"`` / ``"a large blue square to the right of a small red
circle"``. Swapping the objects gives a different scene whose caption has the same bag of words, so a
bag-of-words text model cannot solve retrieval; objects never overlap and a row keeps its objects at one height,
so every relation a caption states holds unambiguously in the image.

Splits: the space of scene contents (the layout and the ordered objects; not pixel positions) is partitioned by a
fixed hash into train/val/test (80/10/10 %), so no test scene is ever a train scene, whatever the seed, and test
measures generalisation to new combinations of known words. Within ``val`` and ``test`` every scene is distinct,
so each evaluation image owns its captions; ``train`` may repeat a content at new positions and colour shades.
Only 48 single-object contents exist (6 colours × 4 shapes × 2 sizes), so evaluation splits hold few of them.

Rendering uses PIL ImageDraw at 4× the target size, then a box downscale (anti-aliased edges); 10,000 64-px
scenes take a few seconds. Results are cached in memory per (split, size, seed, count), and on disk under
``cache_dir`` when one is given.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mmvicreg.data.sources.base import CaptionSource
from mmvicreg.data.sources.stores import ArrayStore
from mmvicreg.files import atomic_write

logger = logging.getLogger("mmvicreg.data")

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
DEFAULT_SIZES = {"train": 10_000, "val": 1_000, "test": 1_000}
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # share of the scene-content space per split, fixed so splits never overlap
_SPLIT_EDGES = (SPLIT_FRACTIONS[0], SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1])

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 245),
    "yellow": (235, 215, 40),
    "purple": (160, 60, 210),
    "white": (235, 235, 235),
}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = {"small": 0.09, "large": 0.145}  # radius as a fraction of the image side
OBJECT_COUNT_P = (0.15, 0.45, 0.40)  # 1, 2, 3 objects
BACKGROUND = (0, 0, 0)
_SUPERSAMPLE = 4

# The phrasings. {a},{b},{c}: object phrases in layout order (left->right or top->bottom).
_ONE = [
    "{a}", "there is {a}", "{a} alone", "only {a}", "a single {size} {colour} {shape}", "{a} on its own",
    "one {size} {colour} {shape}", "a picture of {a}",
]
_TWO = {
    "row": [
        "{a} left of {b}", "{b} right of {a}", "{a} to the left of {b}", "{b} to the right of {a}",
        "{a} on the left and {b} on the right", "{b} on the right and {a} on the left",
        "there is {a} left of {b}", "{a} is left of {b}",
    ],
    "column": [
        "{a} above {b}", "{b} below {a}", "{a} is above {b}", "{b} is below {a}", "{a} on top of {b}",
        "{b} under {a}", "{a} at the top and {b} at the bottom", "there is {a} above {b}",
    ],
}
_THREE = {
    "row": [
        "{a} left of {b} left of {c}", "{c} right of {b} right of {a}", "{a}, {b} and {c} from left to right",
        "{c}, {b} and {a} from right to left", "{a} on the left, {b} in the middle and {c} on the right",
        "{b} between {a} on the left and {c} on the right", "from left to right {a}, {b} and {c}",
        "{a} is left of {b} which is left of {c}",
    ],
    "column": [
        "{a} above {b} above {c}", "{c} below {b} below {a}", "{a}, {b} and {c} from top to bottom",
        "{c}, {b} and {a} from bottom to top", "{a} at the top, {b} in the middle and {c} at the bottom",
        "{b} between {a} above and {c} below", "from top to bottom {a}, {b} and {c}",
        "{a} is above {b} which is above {c}",
    ],
}
CAPTIONS_PER_IMAGE = 5

Obj = tuple[str, str, str]  # (size, colour, shape)


@dataclass(frozen=True)
class Scene:
    """What a scene shows: objects in layout order; ``key`` identifies the content (not the pixel positions)."""

    layout: str  # "one", "row" or "column"
    objects: tuple[Obj, ...]

    @property
    def key(self) -> str:
        return self.layout + ":" + "|".join(" ".join(o) for o in self.objects)


def split_of(scene: Scene) -> str:
    """The split a scene content belongs to: a fixed hash of its key, independent of any seed."""
    h = int.from_bytes(hashlib.blake2b(scene.key.encode(), digest_size=8).digest(), "big") / 2**64
    return SPLITS[bisect.bisect_right(_SPLIT_EDGES, h)]


def captions_for(scene: Scene, rng: np.random.Generator, count: int = CAPTIONS_PER_IMAGE) -> list[str]:
    """``count`` distinct phrasings of the scene, chosen at random among the templates of its layout."""
    phrases = [f"a {s} {c} {sh}" for s, c, sh in scene.objects]
    if scene.layout == "one":
        templates = _ONE
    else:
        templates = (_TWO if len(scene.objects) == 2 else _THREE)[scene.layout]
    size, colour, shape = scene.objects[0]
    fields = dict(zip("abc", phrases), size=size, colour=colour, shape=shape)
    picks = rng.choice(len(templates), size=count, replace=False)
    return [templates[t].format(**fields) for t in picks]


def _sample_scene(rng: np.random.Generator) -> Scene:
    n = int(rng.choice(3, p=OBJECT_COUNT_P)) + 1
    sizes, colours = list(SIZES), list(COLOURS)
    objects: list[Obj] = []
    while len(objects) < n:  # objects of a scene are all different, so "a X left of a X" never happens
        obj = (sizes[rng.integers(2)], colours[rng.integers(len(colours))], SHAPES[rng.integers(len(SHAPES))])
        if obj not in objects:
            objects.append(obj)
    layout = "one" if n == 1 else ("row" if rng.random() < 0.5 else "column")
    return Scene(layout, tuple(objects))


def _positions(scene: Scene, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Object centres in unit coordinates: evenly spaced slots along the layout axis, one shared cross position."""
    n = len(scene.objects)
    if n == 1:
        return [tuple(rng.uniform(0.3, 0.7, size=2))]
    slots, jitter = ((0.28, 0.72), 0.04) if n == 2 else ((0.17, 0.5, 0.83), 0.015)
    cross = rng.uniform(0.32, 0.68)
    centres = []
    for s in slots:
        along = s + rng.uniform(-jitter, jitter)
        across = cross + rng.uniform(-0.02, 0.02)
        centres.append((along, across) if scene.layout == "row" else (across, along))
    return centres


def _draw_object(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        h = r * 0.85  # about a circle's area
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "triangle":
        R = r * 1.15
        angles = (math.pi / 2, 7 * math.pi / 6, 11 * math.pi / 6)
        pts = [(cx + R * math.cos(a), cy + 0.15 * r - R * math.sin(a)) for a in angles]
        draw.polygon(pts, fill=fill)
    elif shape == "cross":
        t = r * 0.38
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def render(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    """The scene as a (size, size, 3) uint8 array; positions and colour shades drawn from ``rng``."""
    items = [(shape, colour, SIZES[s], x, y, False) for (s, colour, shape), (x, y) in
             zip(scene.objects, _positions(scene, rng))]
    return paint(items, size, rng)


Item = tuple[str, str, float, float, float, bool]  # (shape, colour, radius, x, y, hollow), unit coordinates


def paint(items: list[Item], size: int, rng: np.random.Generator) -> np.ndarray:
    """Objects drawn on a black (size, size, 3) uint8 canvas, in order; each colour's shade varies by up to ±15
    per channel (drawn from ``rng``). A hollow object is its shape with the inner 55 % cut out."""
    big = size * _SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for shape, colour, r, x, y, hollow in items:
        shade = tuple(min(255, max(0, v + int(d))) for v, d in zip(COLOURS[colour], rng.integers(-15, 16, size=3)))
        _draw_object(draw, shape, x * big, y * big, r * big, shade)
        if hollow:
            _draw_object(draw, shape, x * big, y * big, r * big * 0.55, BACKGROUND)
    return np.asarray(canvas.reduce(_SUPERSAMPLE))  # box average of each 4×4 block: anti-aliased edges


@dataclass
class ShapesData:
    images: np.ndarray  # (n, size, size, 3) uint8
    captions: list[list[str]]
    keys: list[str]


def generate_shapes(split: str = "train", num_images: int | None = None, size: int = 64, seed: int = 0) -> ShapesData:
    """Generate a split deterministically from ``seed`` (the same arguments give identical images and captions)."""
    return _generate(split, checked_request("shapes", split, num_images, size), int(size), int(seed))


def checked_request(name: str, split: str, num_images: int | None, size: int) -> int:
    """The number of scenes asked for (the split's default when None); ValueError, naming ``name``, for an unknown
    split, fewer than one scene or a side under 8 pixels."""
    if split not in SPLITS:
        raise ValueError(f"unknown {name} split {split!r}; known: {', '.join(SPLITS)}")
    n = DEFAULT_SIZES[split] if num_images is None else int(num_images)
    if n < 1 or size < 8:
        raise ValueError(f"need num_images >= 1 and size >= 8; got {n} and {size}")
    return n


@lru_cache(maxsize=3)  # train, val and test of one configuration
def _generate(split: str, n: int, size: int, seed: int) -> ShapesData:
    return generate_split(split, n, size, seed, _sample_scene, render, captions_for)


def generate_split(split: str, n: int, size: int, seed: int, sample: Callable, draw: Callable, describe: Callable,
                   neighbours: Callable | None = None) -> ShapesData:
    """``n`` scenes of ``split``: ``sample(rng)`` draws a scene (anything with a ``key``), kept when
    :func:`split_of` puts it in ``split``; ``draw(scene, size, rng)`` renders it, ``describe(scene, rng)`` gives its
    captions. In ``val``/``test`` every key is distinct, and ``neighbours(scene, rng)`` (optional) proposes scenes
    that follow an accepted one, each kept when it is in the same split and new (near-duplicates to tell apart)."""
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    unique = split != "train"
    seen: set[str] = set()
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    captions, keys = [], []
    tries = 0
    queue: list = []
    while len(keys) < n:
        tries += 1
        if tries > 200 * n + 10_000:
            raise ValueError(f"could not draw {n} distinct {split} scenes; ask for fewer")
        fresh = not queue
        scene = sample(rng) if fresh else queue.pop()
        if split_of(scene) != split or (unique and scene.key in seen):
            continue
        seen.add(scene.key)
        images[len(keys)] = draw(scene, size, rng)
        captions.append(describe(scene, rng))
        keys.append(scene.key)
        if unique and neighbours is not None and fresh:  # a neighbour's own neighbours are not proposed
            queue = neighbours(scene, rng)
    images.setflags(write=False)  # shared through the cache
    return ShapesData(images, captions, keys)


def load_or_generate(name: str, generate: Callable[[str, int | None, int, int], ShapesData], split: str,
                     n: int | None, size: int, seed: int, cache_dir: str | Path | None,
                     version: int = FORMAT_VERSION) -> ShapesData:
    """``generate(split, n, size, seed)``, read from (or written to) ``cache_dir/<name>-v<version>-...npz`` when a
    cache folder is given; a damaged cache file is regenerated."""
    if cache_dir is None:
        return generate(split, n, size, seed)
    n = DEFAULT_SIZES[split] if n is None else n
    path = Path(cache_dir) / f"{name}-v{version}-{split}-{n}-{size}px-seed{seed}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return ShapesData(z["images"], meta["captions"], meta["keys"])
        except Exception as e:  # a damaged cache (a crash, a full disk) is regenerated, not trusted
            logger.warning("%s cache %s is unreadable (%s); regenerating it", name, path, e)
    data = generate(split, n, size, seed)
    meta = json.dumps({"captions": data.captions, "keys": data.keys})

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a temporary name
            np.savez(f, images=data.images, meta=meta)

    atomic_write(path, write)
    return data


class ShapesSource(CaptionSource):
    """The ``shapes`` split as a caption source; ``image_id`` is the index within the split.

    ``num_images`` defaults to 10,000 (train) / 1,000 (val, test); ``size`` is the image side in pixels.
    ``images`` (the (n, size, size, 3) uint8 array) and ``keys`` (each scene's content) are in sample order.
    A subclass sets ``NAME`` (the cache files' prefix), ``GENERATE`` (``generate(split, n, size, seed)``) and
    ``VERSION``.
    """

    NAME = "shapes"
    GENERATE = staticmethod(generate_shapes)
    VERSION = FORMAT_VERSION

    def __init__(
        self,
        split: str = "train",
        *,
        num_images: int | None = None,
        size: int = 64,
        seed: int = 0,
        pairs: str = "one",
        cache_dir: str | Path | None = None,
    ) -> None:
        data = load_or_generate(self.NAME, self.GENERATE, split, num_images, size, seed, cache_dir, self.VERSION)
        super().__init__(list(range(len(data.captions))), data.captions, ArrayStore(data.images, Image.fromarray),
                         pairs=pairs, name=f"{self.NAME}:{split}")
        self.keys = [data.keys[i] for i in self.kept]

    @property
    def images(self) -> np.ndarray:
        return self.store.arrays  # type: ignore[attr-defined]

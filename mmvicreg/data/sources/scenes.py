"""``scenes``: harder procedural captioned scenes than ``shapes``, for telling settings and objectives apart.

A scene is 2–4 objects on the cells of a 3×3 grid, each a (size, style, colour, shape): small/large,
solid/hollow, the six colours and four shapes of :mod:`.shapes` (96 objects). The objects form a chain: each one
sits in the cell next to the previous one (left, right, above or below), and the captions state that chain, e.g.
``"a small solid red circle left of a large hollow blue square above a small solid green cross"`` (each relation
links an object to the next one) or, read backwards, ``"a small solid green cross below a large hollow blue square
right of a small solid red circle"``. Eight phrasings (four wordings × both reading directions) exist; each
scene gets five of them, so any two scenes share at least two.

What makes it hard: in ``val`` and ``test``, an accepted scene is followed by up to two **one-edit neighbours**
from the same split: the same scene with one object's size, style, colour or shape changed, or one relation
reversed (left ↔ right, above ↔ below). Their captions differ from the scene's in exactly one word (in the same
phrasing), so retrieval must read every attribute and every relation.

Splits: a scene's content is its arrangement (each object with its cell, the grid offset removed), so two chains
that draw the same picture are one content; :func:`.shapes.split_of` partitions the contents by a fixed hash
(80/10/10 %), so no val or test scene is a train scene whatever the seed. Generation, rendering and the cache are
those of :mod:`.shapes` (about 2 s for 10,000 64-px scenes).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from mmvicreg.data.sources.shapes import (
    COLOURS,
    SHAPES,
    ShapesData,
    ShapesSource,
    checked_request,
    generate_split,
    paint,
    split_of,
)

FORMAT_VERSION = 1
GRID = 3  # cells per side
SIZES = {"small": 0.08, "large": 0.12}  # radius as a fraction of the image side (a cell is 1/3 of it)
STYLES = ("solid", "hollow")
OBJECT_COUNT_P = (0.2, 0.4, 0.4)  # 2, 3, 4 objects
NEIGHBOURS_KEPT = 8  # one-edit neighbours that follow an evaluation scene
CAPTIONS_PER_IMAGE = 5
STEPS = {(0, 1): "left of", (0, -1): "right of", (1, 0): "above", (-1, 0): "below"}  # (drow, dcol) to the next

Obj = tuple[str, str, str, str]  # (size, style, colour, shape)
Step = tuple[int, int]


@dataclass(frozen=True)
class Chain:
    """Objects in chain order and the grid step from each to the next; ``key`` is the drawn arrangement."""

    objects: tuple[Obj, ...]
    steps: tuple[Step, ...]

    def cells(self) -> list[Step]:
        """Each object's (row, column), the chain's top-left corner at (0, 0)."""
        cells = [(0, 0)]
        for dr, dc in self.steps:
            cells.append((cells[-1][0] + dr, cells[-1][1] + dc))
        r0, c0 = min(r for r, _ in cells), min(c for _, c in cells)
        return [(r - r0, c - c0) for r, c in cells]

    def fits(self) -> bool:
        """Every cell distinct and inside the grid."""
        cells = self.cells()
        return len(set(cells)) == len(cells) and all(max(rc) < GRID for rc in cells)

    @property
    def key(self) -> str:
        return "scene:" + ";".join(sorted(f"{r},{c} " + " ".join(o) for (r, c), o in zip(self.cells(), self.objects)))


def _object(rng: np.random.Generator) -> Obj:
    colours, sizes = list(COLOURS), list(SIZES)
    return (sizes[rng.integers(2)], STYLES[rng.integers(2)], colours[rng.integers(len(colours))],
            SHAPES[rng.integers(len(SHAPES))])


def sample_chain(rng: np.random.Generator) -> Chain:
    """A random chain of 2–4 distinct objects whose steps fit the grid without revisiting a cell."""
    n = int(rng.choice(3, p=OBJECT_COUNT_P)) + 2
    objects: list[Obj] = []
    while len(objects) < n:  # the objects of a scene are all different, so each phrase names one object
        obj = _object(rng)
        if obj not in objects:
            objects.append(obj)
    moves = list(STEPS)
    while True:
        chain = Chain(tuple(objects), tuple(moves[i] for i in rng.integers(4, size=n - 1)))
        if chain.fits():
            return chain


def neighbours(chain: Chain, rng: np.random.Generator) -> list[Chain]:
    """Up to :data:`NEIGHBOURS_KEPT` scenes of ``chain``'s split one edit away (one attribute of one object, or
    one step reversed), in random order: their captions differ from ``chain``'s in one word."""
    values = (tuple(SIZES), STYLES, tuple(COLOURS), SHAPES)
    out: list[Chain] = []
    for i, obj in enumerate(chain.objects):
        for a, options in enumerate(values):
            for v in options:
                if v != obj[a]:
                    new = obj[:a] + (v,) + obj[a + 1:]
                    if new not in chain.objects:
                        out.append(Chain(chain.objects[:i] + (new,) + chain.objects[i + 1:], chain.steps))
    for j, (dr, dc) in enumerate(chain.steps):
        flipped = Chain(chain.objects, chain.steps[:j] + ((-dr, -dc),) + chain.steps[j + 1:])
        if flipped.fits():
            out.append(flipped)
    split, key = split_of(chain), chain.key
    same = [c for c in out if split_of(c) == split and c.key != key]
    return [same[i] for i in rng.permutation(len(same))[:NEIGHBOURS_KEPT]]


def _phrase(obj: Obj) -> str:
    return "a " + " ".join(obj)


def _wordings(chain: Chain) -> list[str]:
    """The eight phrasings: four wordings of the chain read forwards, then the same read backwards."""
    out = []
    for objects, steps in ((chain.objects, chain.steps), (chain.objects[::-1], [(-r, -c) for r, c in chain.steps[::-1]])):
        phrases, rels = [_phrase(o) for o in objects], [STEPS[s] for s in steps]
        plain = phrases[0] + "".join(f" {r} {p}" for r, p in zip(rels, phrases[1:]))
        which = phrases[0] + f" is {rels[0]} {phrases[1]}" + "".join(
            f" which is {r} {p}" for r, p in zip(rels[1:], phrases[2:]))
        out += [plain, which, "there is " + plain, "a picture of " + plain]
    return out


def captions_for(chain: Chain, rng: np.random.Generator, count: int = CAPTIONS_PER_IMAGE) -> list[str]:
    """``count`` distinct phrasings of the chain, chosen at random among the eight."""
    wordings = _wordings(chain)
    return [wordings[i] for i in rng.choice(len(wordings), size=count, replace=False)]


def render(chain: Chain, size: int, rng: np.random.Generator) -> np.ndarray:
    """The chain placed at a random offset on the grid, as a (size, size, 3) uint8 array. Each grid row and
    column is shifted as a whole (by up to 2 % of the side), so objects of one row stay at one height."""
    cells = chain.cells()
    offset = (rng.integers(GRID - max(r for r, _ in cells)), rng.integers(GRID - max(c for _, c in cells)))
    row_shift, col_shift = rng.uniform(-0.02, 0.02, size=GRID), rng.uniform(-0.02, 0.02, size=GRID)
    items = []
    for (r, c), (size_word, style, colour, shape) in zip(cells, chain.objects):
        r, c = r + offset[0], c + offset[1]
        x, y = (c + 0.5) / GRID + col_shift[c], (r + 0.5) / GRID + row_shift[r]
        items.append((shape, colour, SIZES[size_word], x, y, style == "hollow"))
    return paint(items, size, rng)


def generate_scenes(split: str = "train", num_images: int | None = None, size: int = 64, seed: int = 0) -> ShapesData:
    """Generate a ``scenes`` split deterministically from ``seed`` (the same arguments give identical images and
    captions); ``num_images`` defaults to 10,000 (train) / 1,000 (val, test). ValueError for an unknown split."""
    return _generate(split, checked_request("scenes", split, num_images, size), int(size), int(seed))


@lru_cache(maxsize=3)  # train, val and test of one configuration
def _generate(split: str, n: int, size: int, seed: int) -> ShapesData:
    return generate_split(split, n, size, seed, sample_chain, render, captions_for, neighbours)


class ScenesSource(ShapesSource):
    """The ``scenes`` split as a caption source (``format: scenes``); the options and attributes are
    :class:`.ShapesSource`'s (``num_images``, ``size``, ``seed``, ``pairs``, ``cache_dir``; ``images``, ``keys``)."""

    NAME = "scenes"
    GENERATE = staticmethod(generate_scenes)
    VERSION = FORMAT_VERSION


"""Image stores: where a source's images live, behind one small interface.

A store holds the images of a source in order: ``load(i)`` decodes image ``i`` as RGB PIL (raising
``FileNotFoundError`` / ``BadImageError`` with the file named), ``load_encoded(i)`` reads it without decoding
(an :class:`~mmvicreg.data.sources.encoded.EncodedImage`: bytes and header, for a training loader whose crops
decode only what they need; stores of decoded images wrap them), ``path(i)`` is the file behind it when there is
one (so that missing files are found without decoding), and ``subset(indices)`` is a store of those images in
that order (how a source applies the bad-data policy's decision once). Stores are picklable, for DataLoader
workers.

- :class:`FileStore`: image files by path (COCO, Karpathy, CSV, image folders);
- :class:`HFColumnStore`: the image column of a Hugging Face dataset (image bytes, or path strings);
- :class:`ArrayStore`: in-memory uint8 arrays (the embedded ``digits`` and ``shapes`` data).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from mmvicreg.data.sources.encoded import EncodedImage
from mmvicreg.data.sources.io import PathLike, open_image, to_rgb


class ImageStore:
    """The interface (see the module docstring); subclasses implement ``__len__``, ``load`` and ``subset``."""

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, i: int) -> Image.Image:
        raise NotImplementedError

    def subset(self, indices: Sequence[int]) -> "ImageStore":
        raise NotImplementedError

    def load_encoded(self, i: int) -> EncodedImage:
        """Image ``i`` read but not decoded when its store holds encoded bytes; here: decoded, then wrapped (the
        wrap holds the PIL image as it is, so that both views of a sample share one conversion)."""
        return EncodedImage.wrap(self.load(i), self.describe(i))

    def path(self, i: int) -> str | None:
        """The file behind image ``i``, or None when the image is not a file of its own."""
        return None

    def describe(self, i: int) -> str:
        """How messages name image ``i``: its file, else its position."""
        return self.path(i) or f"image {i}"


class FileStore(ImageStore):
    """``paths[i]`` is image ``i``."""

    def __init__(self, paths: Sequence[PathLike]) -> None:
        self.paths = [os.fspath(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> Image.Image:
        return open_image(self.paths[i])

    def load_encoded(self, i: int) -> EncodedImage:
        return EncodedImage.open(self.paths[i])

    def path(self, i: int) -> str:
        return self.paths[i]

    def subset(self, indices: Sequence[int]) -> "FileStore":
        return FileStore([self.paths[i] for i in indices])


class HFColumnStore(ImageStore):
    """Image ``i`` is row ``rows[i]`` of the column ``column`` of ``dataset`` (a ``datasets.Dataset``).

    The column holds undecoded images (``{"bytes", "path"}`` dicts: decoded here, so that a corrupt one gets the
    same error and policy as a file) or, with ``path_strings``, file paths relative to ``images`` (a folder;
    None: as written). ``name`` names the dataset in messages.
    """

    def __init__(self, dataset: Any, column: str, rows: Sequence[int], *, images: PathLike | None = None,
                 path_strings: bool = False, name: str = "dataset") -> None:
        self.dataset, self.column, self.rows = dataset, column, list(rows)
        self.images, self.name = images, name
        self.paths: list[str] | None = None  # per dataset row, when the column holds paths
        if path_strings:
            root = Path(images) if images is not None else None
            self.paths = [os.fspath(root / v) if root is not None else v for v in dataset[column]]

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, i: int) -> Image.Image:
        row = self.rows[i]
        if self.paths is not None:
            return open_image(self.paths[row])
        return to_rgb(self.dataset[row][self.column], self.images, f"{self.name} row {row}")

    def load_encoded(self, i: int) -> EncodedImage:
        row = self.rows[i]
        if self.paths is not None:
            return EncodedImage.open(self.paths[row])
        cell = self.dataset[row][self.column]
        if isinstance(cell, dict) and cell.get("bytes") is not None:
            return EncodedImage(cell["bytes"], f"{self.name} row {row}")
        return super().load_encoded(i)

    def path(self, i: int) -> str | None:
        return self.paths[self.rows[i]] if self.paths is not None else None

    def subset(self, indices: Sequence[int]) -> "HFColumnStore":
        out = copy.copy(self)  # shares the dataset and the path list
        out.rows = [self.rows[i] for i in indices]
        return out


class ArrayStore(ImageStore):
    """``decode(arrays[i])`` is image ``i``; ``arrays`` is one uint8 array (n, ...) kept in memory.

    ``decode`` must be picklable (a module-level function or a small class), for DataLoader workers.
    """

    def __init__(self, arrays: np.ndarray, decode: Callable[[np.ndarray], Image.Image] = Image.fromarray) -> None:
        self.arrays, self.decode = arrays, decode

    def __len__(self) -> int:
        return len(self.arrays)

    def load(self, i: int) -> Image.Image:
        return self.decode(self.arrays[i])

    def subset(self, indices: Sequence[int]) -> "ArrayStore":
        return ArrayStore(self.arrays[list(indices)], self.decode)

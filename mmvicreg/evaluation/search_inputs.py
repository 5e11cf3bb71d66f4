"""What a search index is built from and queried with: image folders, caption files, query images.

``list_images`` and ``read_captions`` read what ``mmvicreg index build`` indexes; ``ImageFiles`` decodes the listed
images lazily (for the loader's workers); ``read_query_image`` decodes a query image at a bounded scale.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["IMAGE_SUFFIXES", "QUERY_SHORT_SIDE", "ImageFiles", "list_images", "read_captions", "read_query_image"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def list_images(folder: str | os.PathLike) -> list[str]:
    """Paths (POSIX, relative to ``folder``, sorted) of every image file under ``folder``, recursively."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} is not a directory; pass --images a folder of images")
    found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}; pass --images a folder of images")
    return found


def read_captions(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``[("line N", caption), ...]`` of a text file with one caption per line (1-based N; blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption file {path} does not exist; pass --captions a .txt file, one caption a line")
    out = [(f"line {i}", line.strip()) for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    if not out:
        raise ValueError(f"{path} holds no captions; write one caption per line")
    return out


class ImageFiles(Sequence):
    """Images decoded on access from a list of files (a slice is another lazy view); picklable for workers."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return ImageFiles(self.paths[i])
        from mmvicreg.data.sources.io import open_image

        return open_image(self.paths[i])


QUERY_SHORT_SIDE = 1024  # a query is decoded reduced to this (>= 4x any usual eval resize): huge photos stay small


def read_query_image(path: str | os.PathLike) -> Any:
    """The image file ``path`` decoded as RGB for a query, at a reduced scale when it is large
    (:func:`mmvicreg.data.open_image_for_eval`, shorter side :data:`QUERY_SHORT_SIDE`); one ``ValueError`` line
    naming the file and the cause when it cannot be decoded (not an image, truncated, or over Pillow's
    decompression-bomb limit, ``PIL.Image.MAX_IMAGE_PIXELS``), ``FileNotFoundError`` when there is no such file."""
    from PIL import Image

    from mmvicreg.data import open_image_for_eval
    from mmvicreg.data.sources.io import ImageTooLargeError

    if not os.path.isfile(path):
        raise FileNotFoundError(f"query image {path} does not exist; pass --image an image file")
    try:
        return open_image_for_eval(path, QUERY_SHORT_SIDE)
    except ImageTooLargeError as e:
        raise ValueError(f"query image {path} is too large to decode ({e.pixels} pixels, over twice Pillow's limit "
                         f"of {Image.MAX_IMAGE_PIXELS}, PIL.Image.MAX_IMAGE_PIXELS); pass a smaller copy of the "
                         f"image") from None
    except ValueError as e:  # BadImageError: "cannot decode image PATH (cause); fix"
        cause = str(e).rsplit("; ", 1)[0].replace("cannot decode image", "cannot decode query image", 1)
        raise ValueError(f"{cause}; pass --image a {', '.join(s[1:] for s in IMAGE_SUFFIXES)} file") from None

"""Opening images and the bad-data policy shared by every source.

Contract: ``open_image`` returns an RGB PIL image or raises ONE clear error naming the file and the fix:
``FileNotFoundError`` when it is absent, ``BadImageError`` (a ``ValueError``) when it cannot be decoded.
PIL's own exception is suppressed (``from None``) so that users see the path, not PIL's internals.

``on_bad_image``:
  ``"error"`` (default): the first missing or corrupt image raises;
  ``"skip"``: it is left out; ``source.skipped`` lists ``(what, reason)`` and a warning is logged with the count.

``on_bad_caption`` (captioned sources), for empty captions and captions whose bytes are not UTF-8:
  ``"error"`` (default): building the source raises, naming the file, the image and the caption;
  ``"skip"``: those captions are left out (an image left with none is skipped too) and counted in
  ``source.skipped_captions``. Caption files are read as UTF-8 with undecodable bytes kept as lone surrogates
  (Python's ``surrogateescape``), so a file in another encoding is caught caption by caption, never garbled
  silently.
"""

from __future__ import annotations

import io
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from PIL import Image, UnidentifiedImageError

logger = logging.getLogger("mmvicreg.data")

BAD_IMAGE_POLICIES = ("error", "skip")
BAD_CAPTION_POLICIES = ("error", "skip")
PathLike = str | os.PathLike
_UNDECODED = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of bytes that are not UTF-8


class BadImageError(ValueError):
    """An image that exists but cannot be decoded (corrupt, truncated, not an image)."""


def check_policy(on_bad_image: str) -> str:
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise ValueError(f"on_bad_image must be one of {', '.join(BAD_IMAGE_POLICIES)}; got {on_bad_image!r}")
    return on_bad_image


def check_caption_policy(on_bad_caption: str) -> str:
    if on_bad_caption not in BAD_CAPTION_POLICIES:
        raise ValueError(
            f"on_bad_caption must be one of {', '.join(BAD_CAPTION_POLICIES)}; got {on_bad_caption!r}"
        )
    return on_bad_caption


def read_text(path: PathLike) -> str:
    """A caption file's text: UTF-8 (a BOM dropped), undecodable bytes kept as lone surrogates (see above)."""
    with open(path, "rb") as f:
        return f.read().decode("utf-8-sig", errors="surrogateescape")


def caption_text(value: Any) -> str:
    """A caption cell as stripped text; a missing one (None, NaN) is the empty caption, never the word 'None'."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def caption_problem(caption: Any) -> str | None:
    """Why a caption cannot be trained on (``"empty"``, ``"not UTF-8"``), or None when it can."""
    if not isinstance(caption, str) or not caption.strip():
        return "empty"
    if _UNDECODED.search(caption):
        return "not UTF-8"
    return None


def require_file(path: PathLike, what: str, fix: str) -> Path:
    """``path`` as a Path, or a FileNotFoundError naming it, what it was for, and the fix."""
    path = Path(path)
    if not path.is_file():
        state = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"{what} {path} {state}; {fix}")
    return path


def open_image(path: PathLike) -> Image.Image:
    """Decode the image at ``path`` fully, as RGB."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"image {path} does not exist; check the image root / file names, or pass on_bad_image='skip'"
        )
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # convert() forces the full decode inside the try
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(
            f"cannot decode image {path} ({type(exc).__name__}: {exc}); replace the file or pass on_bad_image='skip'"
        ) from None


def to_rgb(value: Any, root: PathLike | None = None, what: str = "image") -> Image.Image:
    """An RGB PIL image from a PIL image, a path (relative to ``root``), bytes, or a ``{"bytes", "path"}`` dict.

    The dict form is how Hugging Face ``datasets`` stores an ``Image`` column that is not decoded.
    """
    if isinstance(value, Image.Image):
        return value if value.mode == "RGB" else value.convert("RGB")
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            value = value["bytes"]
        elif value.get("path"):
            value = value["path"]
        else:
            raise BadImageError(f"{what} has neither bytes nor a path: {value!r}")
    if isinstance(value, (bytes, bytearray)):
        try:
            with Image.open(io.BytesIO(value)) as img:
                return img.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise BadImageError(
                f"cannot decode {what} ({type(exc).__name__}: {exc}); fix the data or pass on_bad_image='skip'"
            ) from None
    if isinstance(value, (str, os.PathLike)):
        return open_image(Path(root) / value if root is not None else value)
    raise BadImageError(f"{what} is a {type(value).__name__}, not an image, a path or bytes")


class BadImageTracker:
    """Holds a source's policy and the images it skipped (in this process).

    With DataLoader workers each worker process keeps its own list; their logged warnings are the report.
    """

    def __init__(self, on_bad_image: str, name: str) -> None:
        self.on_bad_image = check_policy(on_bad_image)
        self.name = name
        self.skipped: list[tuple[str, str]] = []
        self._bad: set[int] = set()

    def drop(self, items: Sequence[str], reasons: Sequence[str], total: int, fix: str) -> None:
        """Apply the policy to bad items found while building the source (missing files, failed verification)."""
        if not items:
            return
        if self.on_bad_image == "error":
            examples = "; ".join(f"{i} ({r})" for i, r in list(zip(items, reasons))[:3])
            raise (FileNotFoundError if all(r == "missing" for r in reasons) else BadImageError)(
                f"{len(items)} of {total} images of {self.name} are unusable, e.g. {examples}; {fix}, "
                f"or pass on_bad_image='skip' to leave them out"
            )
        self.skipped.extend(zip(items, reasons))
        logger.warning("%s: skipped %d of %d images (%s), e.g. %s", self.name, len(items), total,
                       ", ".join(sorted(set(reasons))), items[0])

    def load(self, index: int, n: int, loader: Callable[[int], Image.Image],
             describe: Callable[[int], str] = str) -> tuple[int, Image.Image]:
        """``(index_used, image)``: under ``skip`` a bad image is replaced by the next good one."""
        for step in range(n):
            i = (index + step) % n
            if i in self._bad:
                continue
            try:
                return i, loader(i)
            except (FileNotFoundError, BadImageError) as exc:
                if self.on_bad_image == "error":
                    raise
                self._bad.add(i)
                self.skipped.append((describe(i), "missing" if isinstance(exc, FileNotFoundError) else "corrupt"))
                logger.warning("%s: skipped image %d (%d skipped so far in this process): %s",
                               self.name, i, len(self.skipped), exc)
        raise BadImageError(f"{self.name}: every one of its {n} images failed to load; see the warnings above")


def verify_images(
    count: int, loader: Callable[[int], Image.Image], describe: Callable[[int], str]
) -> tuple[list[int], list[str], list[str]]:
    """Decode every image once: ``(good indices, bad descriptions, bad reasons)``."""
    good, bad, reasons = [], [], []
    for i in range(count):
        try:
            loader(i)
            good.append(i)
        except FileNotFoundError:
            bad.append(describe(i))
            reasons.append("missing")
        except BadImageError:
            bad.append(describe(i))
            reasons.append("corrupt")
    return good, bad, reasons

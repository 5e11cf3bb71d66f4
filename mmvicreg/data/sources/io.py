"""Reading what sources are made of: images (any encoding PIL knows) and caption text.

Contract: ``open_image`` returns an RGB PIL image or raises ONE clear error naming the file and the fix:
``FileNotFoundError`` when it is absent, ``BadImageError`` (a ``ValueError``) when it cannot be decoded.
PIL's own exception is suppressed (``from None``) so that users see the path, not PIL's internals.

Caption files are read as UTF-8 with undecodable bytes kept as lone surrogates (Python's ``surrogateescape``),
so a file in another encoding is caught caption by caption (``caption_problem``), never garbled silently; what
happens then is the bad-data policy's decision (``policy.py``).
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

PathLike = str | os.PathLike
_UNDECODED = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of bytes that are not UTF-8


class BadImageError(ValueError):
    """An image that exists but cannot be decoded (corrupt, truncated, not an image)."""


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
            f"image {path} does not exist; check the image folder / file names, or pass on_bad_image='skip'"
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

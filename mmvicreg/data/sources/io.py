"""Reading what sources are made of: images (any encoding PIL knows) and caption text.

Contract: ``open_image`` returns an RGB PIL image or raises ONE clear error naming the file and the fix:
``FileNotFoundError`` when it is absent, ``BadImageError`` (a ``ValueError``) when it cannot be decoded, and
``ImageTooLargeError`` (a ``BadImageError``, reason ``"over the pixel limit"``) when its header says more pixels
than Pillow's decompression-bomb guard ``PIL.Image.MAX_IMAGE_PIXELS`` allows (read, never changed, here: a user
who trusts such files raises it). PIL's own exception is suppressed (``from None``) so that users see the path,
not PIL's internals.

Every image of the data package becomes RGB through ONE function, :func:`convert_rgb`: 16-bit greyscale
(``I;16*``, ``I``) is scaled to 8 bits (``v / 257``, rounded) instead of being clipped to white as Pillow's
``convert("RGB")`` does; images with transparency are composited over white. :func:`open_image_for_eval`
decodes one file at a reduced scale for evaluation and search (JPEG DCT scaling, then a reducing resize).

Caption files are read as UTF-8 with undecodable bytes kept as lone surrogates (Python's ``surrogateescape``),
so a file in another encoding is caught caption by caption (``caption_problem``), never garbled silently; what
happens then is the bad-data policy's decision (``policy.py``).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

PathLike = str | os.PathLike
_UNDECODED = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of bytes that are not UTF-8


_PIXEL_COUNT = re.compile(r"\((\d+) pixels\)")  # in Pillow's DecompressionBombError message
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


class BadImageError(ValueError):
    """An image that exists but cannot be decoded (corrupt, truncated, not an image)."""

    reason = "corrupt"  # how the bad-data report counts it


class ImageTooLargeError(BadImageError):
    """An image whose header says more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (a decompression-bomb guard)."""

    reason = "over the pixel limit"
    pixels: int = 0  # what the header says


def too_large(name: str, pixels: int, size: tuple[int, int] | None = None) -> ImageTooLargeError:
    """The one-line error for ``name`` (e.g. ``"image <path>"``) of ``pixels`` pixels over the pixel limit."""
    dims = f"{size[0]}x{size[1]} = " if size is not None else ""
    error = ImageTooLargeError(
        f"{name} has {dims}{pixels} pixels, over Pillow's limit of {Image.MAX_IMAGE_PIXELS} "
        f"(PIL.Image.MAX_IMAGE_PIXELS, a guard against decompression bombs); if you trust the file, raise the "
        f"limit before loading (PIL.Image.MAX_IMAGE_PIXELS = {pixels}), or pass on_bad_image='skip' to leave it out"
    )
    error.pixels = pixels
    return error


def check_pixels(size: tuple[int, int], name: str) -> None:
    """Raise :class:`ImageTooLargeError` when ``size`` (width, height) is over ``PIL.Image.MAX_IMAGE_PIXELS``."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and size[0] * size[1] > limit:
        raise too_large(name, size[0] * size[1], size)


@contextlib.contextmanager
def opened(fp: PathLike | IO[bytes], name: str, limit: bool = True) -> Iterator[Image.Image]:
    """``Image.open(fp)`` (header only) as a context, with Pillow's pixel guard as one line naming ``name``.

    ``limit``: an image over ``PIL.Image.MAX_IMAGE_PIXELS`` raises :class:`ImageTooLargeError` (Pillow only
    warns up to twice the limit); without it, only what Pillow itself refuses (over twice the limit) raises.
    Other decode errors are left to the caller.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the error below says it in one line
        try:
            img = Image.open(fp)
        except Image.DecompressionBombError as exc:
            found = _PIXEL_COUNT.search(str(exc))
            raise too_large(name, int(found.group(1)) if found else -1) from None
    with img:
        if limit:
            check_pixels(img.size, name)
        yield img


def _grey(values: np.ndarray, top: float) -> Image.Image:
    """An RGB image from one channel of values in ``[0, top]`` (clipped), scaled to 0..255 and rounded."""
    scaled = np.clip(np.rint(np.clip(values, 0, top) * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, "L").convert("RGB")


def convert_rgb(image: Image.Image) -> Image.Image:
    """``image`` as an 8-bit RGB PIL image: the one conversion the data package uses.

    ``RGB``: returned as it is. ``I;16``/``I;16B``/``I;16L``/``I`` (16-bit greyscale, as 16-bit PNGs open):
    ``v / 257`` rounded (0..65535 -> 0..255; values outside clipped). ``F`` (floats): taken as 0..1 when its
    maximum is at most 1, as 0..255 when at most 255, else as 16-bit. Images with transparency (``RGBA``, ``LA``,
    ``PA``, ``P`` with a transparent colour): composited over white. Anything else (``L``, ``1``, ``P``,
    ``CMYK``, ``YCbCr``, ...): Pillow's ``convert("RGB")``. A mode Pillow cannot convert raises
    ``BadImageError``.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        return _grey(np.asarray(image).astype(np.float64), 65535.0)
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(values.max(initial=0.0))
        return _grey(values, 1.0 if peak <= 1.0 else 255.0 if peak <= 255.0 else 65535.0)
    try:
        if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return image.convert("RGB")
    except ValueError as exc:  # "conversion from X to RGB not supported"
        raise BadImageError(f"cannot convert an image of mode {mode} to RGB ({exc})") from None


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


def _missing(path: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"image {path} does not exist; check the image folder / file names, or pass on_bad_image='skip'"
    )


def decode_rgb(fp: PathLike | IO[bytes], name: str, fix: str = "replace the file or pass on_bad_image='skip'"
               ) -> Image.Image:
    """The image ``fp`` (a path or a binary file) fully decoded as RGB (:func:`convert_rgb`), under the pixel
    limit; raises ``BadImageError`` / ``ImageTooLargeError`` naming ``name`` and ``fix``."""
    try:
        with opened(fp, name) as img:
            img.load()  # the full decode, inside the try
            return convert_rgb(img)
    except ImageTooLargeError:
        raise
    except _DECODE_ERRORS as exc:  # BadImageError (a mode convert_rgb cannot take) is a ValueError
        raise BadImageError(f"cannot decode {name} ({type(exc).__name__}: {exc}); {fix}") from None


def open_image(path: PathLike) -> Image.Image:
    """Decode the image at ``path`` fully, as RGB (module docstring: errors)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise _missing(path)
    return decode_rgb(path, f"image {path}")


def open_image_for_eval(path: PathLike, short_side: int) -> Image.Image:
    """The image file at ``path`` as RGB at a reduced scale, for evaluation and search: its shorter side is
    ``short_side`` (pass the eval transform's resize, e.g. 256 for 224 px at crop 0.875) when it is larger;
    smaller images are returned at full size, never enlarged.

    A JPEG is decoded at the largest DCT scaling (1/2, 1/4, 1/8; Pillow's ``draft``) that keeps it at least
    twice ``short_side``, so a huge photo never sits in memory at full size; other formats are decoded, then
    reduced (``reducing_gap=2``). Images up to Pillow's own refusal (twice ``PIL.Image.MAX_IMAGE_PIXELS``) are
    read; larger ones raise ``ImageTooLargeError``, one line with the pixel count and how to raise the limit.
    A missing file raises ``FileNotFoundError``, an undecodable one ``BadImageError``.
    """
    path = os.fspath(path)
    if not isinstance(short_side, int) or short_side < 1:
        raise ValueError(f"short_side must be a positive number of pixels, got {short_side!r}")
    if not os.path.isfile(path):
        raise _missing(path)
    try:
        with opened(path, f"image {path}", limit=False) as img:
            width, height = img.size
            scale = short_side / min(width, height)
            target = (max(1, round(width * scale)), max(1, round(height * scale))) if scale < 1 else img.size
            if scale < 1:
                img.draft(None, (2 * target[0], 2 * target[1]))  # JPEG: decode at a DCT scaling; others: no-op
            img.load()
            rgb = convert_rgb(img)
    except ImageTooLargeError:
        raise
    except _DECODE_ERRORS as exc:
        raise BadImageError(f"cannot decode image {path} ({type(exc).__name__}: {exc}); replace the file") from None
    return rgb if rgb.size == target else rgb.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0)


def to_rgb(value: Any, root: PathLike | None = None, what: str = "image") -> Image.Image:
    """An RGB PIL image from a PIL image, a path (relative to ``root``), bytes, or a ``{"bytes", "path"}`` dict.

    The dict form is how Hugging Face ``datasets`` stores an ``Image`` column that is not decoded.
    """
    if isinstance(value, Image.Image):
        return convert_rgb(value)
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            value = value["bytes"]
        elif value.get("path"):
            value = value["path"]
        else:
            raise BadImageError(f"{what} has neither bytes nor a path: {value!r}")
    if isinstance(value, (bytes, bytearray)):
        return decode_rgb(io.BytesIO(value), what, "fix the data or pass on_bad_image='skip'")
    if isinstance(value, (str, os.PathLike)):
        return open_image(Path(root) / value if root is not None else value)
    raise BadImageError(f"{what} is a {type(value).__name__}, not an image, a path or bytes")

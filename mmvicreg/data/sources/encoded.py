"""An image read but not yet decoded: its bytes and its header's size, decoded on demand at the size a crop needs.

Training crops are drawn from the image's size alone (the header gives it), so the decode can wait until the
crop is known and then run at the largest JPEG DCT reduction (1/2, 1/4, 1/8: Pillow's ``draft``) that still
leaves the crop at least the output size. A 224 px crop of a 2000 px photo then decodes a quarter or a
sixteenth of the pixels. Other formats (PNG, WebP, ...) decode at full size.

RGB and greyscale JPEGs decode with OpenCV's ``imdecode`` (the same libjpeg-turbo settings as Pillow's: the
pixels are equal to Pillow's at every reduction, tested; about 20% faster), EXIF orientation ignored as Pillow
does. Anything OpenCV will not decode (a truncated file, CMYK) goes to Pillow, which decodes it or raises as
before, so the error contract and Pillow's leniency stay as they were. Other formats and modes (16-bit PNGs
among them) decode with Pillow and become RGB through :func:`~mmvicreg.data.sources.io.convert_rgb`.

Errors keep the contract of ``open_image``: a file that is absent raises ``FileNotFoundError`` when it is read, a
header that no decoder recognises raises ``BadImageError`` when it is read, a header over
``PIL.Image.MAX_IMAGE_PIXELS`` raises ``ImageTooLargeError`` when it is read (nothing is decoded), and a body that
is corrupt raises ``BadImageError`` when it is decoded; each message names the image and the fix. ``index`` is the
position of the image in its source's store, so that a loader can hand a late failure back to the source's
bad-data policy.
"""

from __future__ import annotations

import io
import os
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mmvicreg.data.sources.io import BadImageError, ImageTooLargeError, PathLike, convert_rgb, opened

REDUCTIONS = (8, 4, 2, 1)  # the DCT scalings libjpeg offers through Pillow's draft
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)
# imdecode flags per reduction: the IMREAD_REDUCED_GRAYSCALE_r constants are the bare reduction bits (2 -> 16, ...),
# and IMREAD_COLOR_RGB asks for three channels in RGB order
_CV2_REDUCED = {1: 0, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
_CV2_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION


def _named(name: str) -> str:
    """How messages name an image: ``"image <path>"``, or the store's description when it says "image"."""
    return name if name.startswith("image ") else f"image {name}"


def largest_reduction(height: int, width: int, need_height: float, need_width: float) -> int:
    """The largest of 8, 4, 2, 1 that leaves a ``height`` x ``width`` region at least ``need`` pixels each way."""
    return next(r for r in REDUCTIONS if r == 1 or (height // r >= need_height and width // r >= need_width))


class EncodedImage:
    """An image's encoded bytes and header (``width``, ``height``, ``format``, ``mode``), or an image already decoded.

    ``decode(reduction)`` returns ``(image, r)``: the RGB image as a uint8 tensor (H, W, 3) decoded at the
    reduction ``r`` it got (JPEGs: ``reduction``; other formats and decoded images: 1), where pixel ``(y, x)``
    covers pixels ``[y*r, (y+1)*r)`` of the full image. Decodes are cached per reduction, and a decode at a
    smaller reduction serves a request for a larger one, so the two views of one sample decode at most twice.
    """

    def __init__(self, data: bytes | None, name: str, index: int | None = None,
                 decoded: torch.Tensor | None = None, image: Image.Image | None = None) -> None:
        self.data, self.name, self.index = data, name, index
        self._decoded: dict[int, torch.Tensor] = {}
        self._image = image  # an RGB PIL image it wraps: handed back as it is, made a tensor once if asked
        if image is not None:
            self.width, self.height = image.size
            self.format = self.mode = None
            return
        if decoded is not None:
            self._decoded[1] = decoded
            self.height, self.width, self.format, self.mode = int(decoded.shape[0]), int(decoded.shape[1]), None, None
            return
        try:
            with opened(io.BytesIO(data), _named(name)) as img:
                self.width, self.height = img.size
                self.format, self.mode = img.format, img.mode
        except ImageTooLargeError:
            raise
        except _DECODE_ERRORS as exc:
            raise BadImageError(f"cannot decode image {name} ({type(exc).__name__}: {exc}); replace the file or "
                                f"pass on_bad_image='skip'") from None

    @classmethod
    def open(cls, path: PathLike, index: int | None = None) -> "EncodedImage":
        """The file at ``path``, read and its header checked (the decode waits)."""
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except (FileNotFoundError, IsADirectoryError):
            raise FileNotFoundError(f"image {path} does not exist; check the image folder / file names, or pass "
                                    f"on_bad_image='skip'") from None
        return cls(data, path, index)

    @classmethod
    def wrap(cls, image: Any, name: str = "image") -> "EncodedImage":
        """An already decoded image (RGB PIL image, uint8 array (H, W, 3), uint8 tensor (3, H, W)) as one."""
        if isinstance(image, EncodedImage):
            return image
        if isinstance(image, Image.Image):
            return cls(None, name, image=convert_rgb(image))
        if isinstance(image, np.ndarray):
            array = image
        elif isinstance(image, torch.Tensor):
            if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(f"{name}: image tensors must be uint8 (3, H, W); got {image.dtype} "
                                 f"{tuple(image.shape)}")
            return cls(None, name, decoded=image.permute(1, 2, 0))
        else:
            raise TypeError(f"{name} is a {type(image).__name__}, not an image (PIL image, array or uint8 tensor)")
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"{name}: image arrays must be uint8 (H, W, 3); got {array.dtype} {array.shape}")
        return cls(None, name, decoded=torch.from_numpy(np.ascontiguousarray(array)))

    @property
    def reductions(self) -> list[int]:
        """The reductions this image has been decoded at so far (1 for a wrapped, already decoded image)."""
        return sorted(self._decoded)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``, as PIL gives it."""
        return self.width, self.height

    def decode(self, reduction: int = 1) -> tuple[torch.Tensor, int]:
        """``(uint8 tensor (H/r, W/r, 3), r)``; see the class docstring."""
        usable = [r for r in self._decoded if r <= reduction]
        if usable:
            r = max(usable)
            return self._decoded[r], r
        if self._image is not None:
            self._decoded[1] = torch.from_numpy(np.array(self._image))
            return self._decoded[1], 1
        r = reduction if self.format == "JPEG" else 1
        if self.format == "JPEG" and self.mode in ("RGB", "L"):
            pixels = cv2.imdecode(np.frombuffer(self.data, np.uint8), _CV2_REDUCED[r] | _CV2_FLAGS)
            if pixels is not None:
                self._decoded[r] = torch.from_numpy(pixels)
                return self._decoded[r], r
        try:
            with opened(io.BytesIO(self.data), _named(self.name)) as img:
                if r > 1:
                    img.draft("RGB", (self.width // r, self.height // r))
                    r = next(k for k in REDUCTIONS if img.size == (-(-self.width // k), -(-self.height // k)))
                img.load()  # the decode, inside the try
                pixels = torch.from_numpy(np.array(convert_rgb(img)))
        except ImageTooLargeError:
            raise
        except _DECODE_ERRORS as exc:
            raise BadImageError(f"cannot decode image {self.name} ({type(exc).__name__}: {exc}); replace the file "
                                f"or pass on_bad_image='skip'") from None
        self._decoded[r] = pixels
        return self._decoded[r], r

    def to_pil(self) -> Image.Image:
        """The full-size RGB PIL image."""
        return self._image if self._image is not None else Image.fromarray(self.decode(1)[0].numpy())

    def __repr__(self) -> str:
        return f"EncodedImage({self.name!r}, {self.width}x{self.height}, {self.format or 'decoded'})"

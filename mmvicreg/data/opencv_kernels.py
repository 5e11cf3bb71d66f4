"""VICReg's colour and blur ops on a uint8 RGB crop, run by OpenCV: torchvision's formulas, several times faster.

:class:`CVImage` is a ``tv_tensors.Image`` (a uint8 tensor (3, H, W), normally held channels-last). This module
registers OpenCV kernels for it with torchvision's public ``register_kernel``, so the ordinary v2 transforms
(``ColorJitter``, ``RandomGrayscale``, ``GaussianBlur``, ``RandomSolarize``) run them; every other functional
(flip, crop, ...) falls back to torchvision's image kernel. Each kernel works on the (H, W, 3) array under the
tensor, without a copy, and computes torchvision's uint8 tensor formula to within one level (float rounding; the
lookup-table ones are exact), truncating where torchvision truncates so that no op biases the result:

- ``adjust_brightness``: ``x·f`` (exact, a lookup table)
- ``adjust_contrast``: ``x·f + m·(1 − f)``, ``m`` the mean grey level (a lookup table)
- ``adjust_saturation``: ``x·f + grey(x)·(1 − f)``, grey = ⌊0.2989 R + 0.587 G + 0.114 B⌋
- ``adjust_hue``: RGB → HSV in float, ``H ← (H + 360·f) mod 360``, HSV → RGB (torchvision's tensor hue)
- ``rgb_to_grayscale``: grey(x), on 1 or 3 channels
- ``gaussian_blur``: the sampled Gaussian of σ, reflect-101 borders, taps cut at 4σ (the taps dropped weigh
  under 1e-4 of the kernel) and at ``kernel_size``
- ``solarize``: ``255 − x`` where ``x ≥ threshold`` (exact, a lookup table)

Why by hand (``benchmarks/colour_ops.py``, one core, a 224 px crop): torchvision's uint8 tensor kernels take
about 5 ms for hue and 12 ms for the 23-tap blur; PIL's, which the published code calls, about 2 ms for each (its
blur a three-box approximation, up to 18 levels off the Gaussian). OpenCV's SIMD kernels take 0.7 ms for hue,
0.4 ms for the blur and under 0.2 ms for each of the others. None of torch, torchvision or PIL has these faster.

OpenCV runs single-threaded (``cv2.setNumThreads(0)``) wherever the loader runs these kernels, as PyTorch runs one
thread per DataLoader worker: the loader parallelises across worker processes, and an OpenCV thread pool started in
the main process hangs a forked worker that reconfigures it (measured with OpenCV 5.0). Importing this module
changes nothing: each worker's init calls :func:`use_one_thread`, and the main process, when it runs the kernels
itself (``workers=0``), does so inside :func:`one_thread`, which puts its thread count back afterwards.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

_LEVELS = np.arange(256, dtype=np.float32)


def use_one_thread(worker_id: int | None = None) -> None:
    """Run OpenCV single-threaded in this process, for good: a DataLoader worker's init function (``worker_id``
    unused)."""
    cv2.setNumThreads(0)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """OpenCV single-threaded inside the block, the process's thread count restored after it: for the main process
    while it runs the kernels itself (a loader without workers)."""
    set_threads, before = cv2.setNumThreads, cv2.getNumThreads()  # held here: a loader's generator may be
    set_threads(0)  # closed at interpreter exit, after this module's globals are gone
    try:
        yield
    finally:
        set_threads(before)


class CVImage(tv_tensors.Image):
    """A uint8 RGB image (3, H, W) whose colour and blur ops run in OpenCV (see the module docstring)."""


def as_cv_image(image: torch.Tensor) -> CVImage:
    """``image`` (a uint8 tensor (3, H, W)) as a :class:`CVImage`, sharing its memory."""
    return image.as_subclass(CVImage)


def _hwc(image: torch.Tensor) -> np.ndarray:
    # a no-op view for a channels-last tensor (what the crop and every kernel here return); one copy otherwise
    return image.permute(1, 2, 0).contiguous().numpy()


def _from_hwc(array: np.ndarray) -> CVImage:
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).as_subclass(CVImage)


def _lut(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``table[x]`` per value: torchvision's uint8 cast (truncation, after clamping to 0–255) of a float table."""
    return cv2.LUT(image, np.clip(table, 0, 255).astype(np.uint8))


# torchvision's grey, truncated: 0.2989 R + 0.587 G + 0.114 B - 0.5, rounded (cvtColor's weights differ and round)
_GREY = np.array([[0.2989, 0.587, 0.114, -0.5]], dtype=np.float32)


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.transform(image, _GREY)


def _opencv_kernel(functional: Callable) -> Callable:
    """Registers the decorated (H, W, 3) uint8 kernel for :class:`CVImage` under ``functional``; an image it does
    not take (not uint8 with 3 channels) goes to torchvision's own kernel."""

    def register(kernel: Callable) -> Callable:
        @F.register_kernel(functional, CVImage)
        def run(image: CVImage, *args: Any, **kwargs: Any) -> CVImage:
            plain = image.as_subclass(torch.Tensor)
            if plain.dtype != torch.uint8 or plain.ndim != 3 or plain.shape[0] != 3:
                return functional(plain, *args, **kwargs).as_subclass(CVImage)
            return _from_hwc(kernel(_hwc(plain), *args, **kwargs))

        return kernel

    return register


@_opencv_kernel(F.adjust_brightness)
def adjust_brightness(image: np.ndarray, brightness_factor: float) -> np.ndarray:
    return _lut(image, _LEVELS * np.float32(brightness_factor))


@_opencv_kernel(F.adjust_contrast)
def adjust_contrast(image: np.ndarray, contrast_factor: float) -> np.ndarray:
    mean = np.float32(cv2.mean(_grey(image))[0])
    f = np.float32(contrast_factor)
    return _lut(image, _LEVELS * f + mean * (np.float32(1) - f))


@_opencv_kernel(F.adjust_saturation)
def adjust_saturation(image: np.ndarray, saturation_factor: float) -> np.ndarray:
    grey = cv2.cvtColor(_grey(image), cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(image, saturation_factor, grey, 1.0 - saturation_factor, -0.5)  # -0.5: truncate


@_opencv_kernel(F.adjust_hue)
def adjust_hue(image: np.ndarray, hue_factor: float) -> np.ndarray:
    hsv = cv2.cvtColor(image.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_RGB2HSV)  # H in [0, 360)
    hue = hsv[:, :, 0]
    hue += np.float32(360 * hue_factor)
    np.mod(hue, np.float32(360), out=hue)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    rgb *= np.float32(255.999)  # torchvision's float -> uint8: scale by 256 - 1e-3 and truncate
    return rgb.astype(np.uint8)


@_opencv_kernel(F.rgb_to_grayscale)
def rgb_to_grayscale(image: np.ndarray, num_output_channels: int = 1) -> np.ndarray:
    grey = _grey(image)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB) if num_output_channels == 3 else grey


@_opencv_kernel(F.gaussian_blur)
def gaussian_blur(image: np.ndarray, kernel_size: Sequence[int], sigma: Sequence[float] | None = None) -> np.ndarray:
    kernel_size = [kernel_size] * 2 if isinstance(kernel_size, int) else list(kernel_size)
    if sigma is None:  # torchvision's default for a kernel size
        sigma = [0.3 * ((k - 1) * 0.5 - 1) + 0.8 for k in kernel_size]
    sigma = [sigma] * 2 if isinstance(sigma, (int, float)) else list(sigma) * (3 - len(sigma))
    taps = [min(k, 2 * math.ceil(4 * s) + 1) for k, s in zip(kernel_size, sigma)]
    return cv2.GaussianBlur(image, (taps[0], taps[1]), sigmaX=float(sigma[0]), sigmaY=float(sigma[1]),
                            borderType=cv2.BORDER_REFLECT_101)


@_opencv_kernel(F.solarize)
def solarize(image: np.ndarray, threshold: float) -> np.ndarray:
    return _lut(image, np.where(_LEVELS >= threshold, 255 - _LEVELS, _LEVELS))

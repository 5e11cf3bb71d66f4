"""The OpenCV kernels compute torchvision's uint8 tensor formulas (to one level), and the v2 transforms run them."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from mmvicreg.data.batching import RawItems, make_loader
from mmvicreg.data.opencv_kernels import CVImage, as_cv_image
from mmvicreg.data.transforms import vicreg_view


def _photo(seed: int = 0, h: int = 96, w: int = 112) -> torch.Tensor:
    """A uint8 (3, H, W) image with smooth colour gradients, flat patches and noise, held channels-last."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * x + c) * np.cos(4 * y - c) for c in (0.0, 2.1, 4.2)], axis=-1) * 110 + 128
    base[h // 3: h // 2, w // 4: w // 2] = rng.integers(0, 256, 3)  # a flat patch: hue and grey edge cases
    noisy = base + rng.normal(0, 12, base.shape)
    return torch.from_numpy(np.clip(noisy, 0, 255).astype(np.uint8)).permute(2, 0, 1)


CASES = [
    (F.adjust_brightness, {"brightness_factor": 0.63}, 0),
    (F.adjust_brightness, {"brightness_factor": 1.37}, 0),
    (F.adjust_contrast, {"contrast_factor": 0.61}, 1),
    (F.adjust_contrast, {"contrast_factor": 1.39}, 1),
    (F.adjust_saturation, {"saturation_factor": 0.81}, 1),
    (F.adjust_saturation, {"saturation_factor": 1.19}, 1),
    (F.adjust_hue, {"hue_factor": -0.1}, 1),
    (F.adjust_hue, {"hue_factor": 0.037}, 1),
    (F.adjust_hue, {"hue_factor": 0.5}, 1),
    (F.rgb_to_grayscale, {"num_output_channels": 3}, 1),
    (F.rgb_to_grayscale, {"num_output_channels": 1}, 1),
    (F.solarize, {"threshold": 128}, 0),
    (F.gaussian_blur, {"kernel_size": [23, 23], "sigma": [0.1, 0.1]}, 1),
    (F.gaussian_blur, {"kernel_size": [23, 23], "sigma": [0.77, 0.77]}, 1),
    (F.gaussian_blur, {"kernel_size": [23, 23], "sigma": [2.0, 2.0]}, 1),
    (F.gaussian_blur, {"kernel_size": [5, 9], "sigma": [1.5, 0.6]}, 1),
]


@pytest.mark.parametrize("functional, kwargs, tolerance", CASES,
                         ids=[f"{f.__name__}-{list(k.values())[0]}" for f, k, _ in CASES])
def test_each_kernel_equals_torchvisions_tensor_kernel_to_one_level(functional, kwargs, tolerance):
    for seed in range(3):
        image = _photo(seed)
        expected = functional(image, **kwargs)
        out = functional(as_cv_image(image), **kwargs)
        assert type(out) is CVImage and out.shape == expected.shape and out.dtype == torch.uint8
        signed = (out.as_subclass(torch.Tensor).int() - expected.int()).float()
        assert signed.abs().max() <= tolerance, f"{functional.__name__}{kwargs}: off by up to {signed.abs().max()}"
        assert signed.abs().mean() < 0.05, f"{functional.__name__}{kwargs}: {signed.abs().mean():.3f} levels off"
        assert abs(signed.mean()) < 0.01, f"{functional.__name__}{kwargs}: biased by {signed.mean():.3f} levels"


def test_the_kernels_are_opencvs_not_torchvisions_fallback():
    """A kernel that silently fell back to torchvision would pass the equality test; this one would not."""
    image = _photo()
    hwc = image.permute(1, 2, 0).contiguous().numpy()
    out = F.gaussian_blur(as_cv_image(image), [23, 23], [1.3, 1.3]).as_subclass(torch.Tensor)
    assert np.array_equal(out.permute(1, 2, 0).numpy(),
                          cv2.GaussianBlur(hwc, (13, 13), 1.3, borderType=cv2.BORDER_REFLECT_101))


def test_images_the_kernels_do_not_take_go_to_torchvision_and_other_ops_fall_back():
    float_image = _photo().float() / 255
    out = F.adjust_hue(as_cv_image(float_image), 0.05)
    assert type(out) is CVImage and torch.equal(out.as_subclass(torch.Tensor), F.adjust_hue(float_image, 0.05))
    flipped = F.horizontal_flip(as_cv_image(_photo()))
    assert type(flipped) is CVImage and torch.equal(flipped.as_subclass(torch.Tensor), F.horizontal_flip(_photo()))
    grey = F.rgb_to_grayscale(as_cv_image(_photo()), 1)
    assert torch.equal(F.adjust_saturation(grey, 1.2).as_subclass(torch.Tensor), grey.as_subclass(torch.Tensor))


def test_a_non_contiguous_image_gives_the_same_result():
    image = _photo()
    channels_first = image.contiguous()
    assert not channels_first.permute(1, 2, 0).is_contiguous()
    for functional, kwargs, _ in CASES[:8]:
        assert torch.equal(functional(as_cv_image(image), **kwargs).as_subclass(torch.Tensor),
                           functional(as_cv_image(channels_first), **kwargs).as_subclass(torch.Tensor))


def test_a_vicreg_view_equals_torchvisions_tensor_pipeline_given_the_same_draws():
    """The whole view, replayed with the same RNG through torchvision's own kernels: the same augmentation, up to
    the one-level rounding of each op (a solarised pixel next to the threshold may flip, hence a mean)."""
    image = _photo(h=160, w=200)
    for view in (1, 2):
        transform = vicreg_view(size=64, view=view)
        reference = v2.Compose([t for t in transform.transforms if isinstance(t, v2.Transform)])
        for seed in range(12):
            torch.manual_seed(seed)
            ours = transform(image)
            torch.manual_seed(seed)
            theirs = reference(image)
            assert type(ours) is torch.Tensor and ours.shape == theirs.shape == (3, 64, 64)
            assert (ours.int() - theirs.int()).abs().float().mean() < 0.2, f"view {view} seed {seed}"


IMPORT_CHECK = "import cv2; n = cv2.getNumThreads(); import mmvicreg; assert cv2.getNumThreads() == n"


@pytest.mark.parametrize("code", [IMPORT_CHECK, "import cv2; cv2.setNumThreads(3); import mmvicreg, mmvicreg.data, "
                                  "mmvicreg.data.transforms; assert cv2.getNumThreads() == 3"])
def test_importing_mmvicreg_leaves_opencvs_thread_count_alone(code):
    """``import mmvicreg`` changes no global state of another library (issue 25): the count is set where the
    kernels run, not at import."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def _threads_seen(item):
    return torch.tensor(cv2.getNumThreads())


@pytest.mark.parametrize("workers", [0, 1])
def test_the_loader_runs_opencv_on_one_thread_in_workers_and_in_the_main_process(workers):
    """A thread pool started in the main process hangs forked loader workers that reconfigure it: each worker's
    init sets one thread; without workers the main process runs one while it iterates, and gets its count back."""
    before = cv2.getNumThreads()
    loader = make_loader(RawItems(list(range(4)), "x"), {"x": ("x", _threads_seen, None)}, batch_size=2,
                         workers=workers, pin_memory=False)
    seen = torch.cat([batch["x"] for batch in loader])
    assert seen.tolist() == [1, 1, 1, 1]
    assert cv2.getNumThreads() == before

"""The batched device colour augmentations equal torchvision's per-image ops and fire with the published rates."""

import itertools

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from mmvicreg.data.device_augment import (
    JITTER_OPS,
    SOLARIZE_THRESHOLD,
    DeviceViewAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur,
    grayscale,
    sample_params,
    solarize,
)
from mmvicreg.data.transforms import blur_kernel_size

ATOL = 1e-5
TV_JITTER = {
    "brightness": TF.adjust_brightness,
    "contrast": TF.adjust_contrast,
    "saturation": TF.adjust_saturation,
    "hue": TF.adjust_hue,
}
OURS = {"brightness": adjust_brightness, "contrast": adjust_contrast, "saturation": adjust_saturation,
        "hue": adjust_hue}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _images(n=8, size=16, seed=0):
    """Random images plus the edge cases the ops branch on: a grey image (h = s = 0), saturated and black pixels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    x[0] = x[0, :1]  # grey: max == min everywhere
    x[1, :, :4] = 1.0
    x[1, :, 4:8] = 0.0
    x[2, 0, :, :4] = 1.0  # pure-ish reds/greens: maxc == r, maxc == g branches
    x[2, 1, :, 4:8] = 1.0
    return x


def _factors(name, n, seed=1):
    lows = {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": -0.5}
    highs = {"brightness": 1.8, "contrast": 1.8, "saturation": 1.8, "hue": 0.5}
    g = torch.Generator().manual_seed(seed)
    return lows[name] + (highs[name] - lows[name]) * torch.rand(n, generator=g)


@pytest.mark.parametrize("name", JITTER_OPS)
def test_jitter_ops_equal_torchvision_per_sample(name):
    x = _images()
    f = _factors(name, x.shape[0])
    ours = OURS[name](x, f)
    ref = torch.stack([TV_JITTER[name](x[i], float(f[i])) for i in range(x.shape[0])])
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)
    assert (ours - x).abs().amax() > 0.05  # the op did something
    assert ours.min() >= 0 and ours.max() <= 1


def test_grayscale_equals_torchvision():
    x = _images()
    ref = torch.stack([TF.rgb_to_grayscale(img, num_output_channels=3) for img in x])
    torch.testing.assert_close(grayscale(x), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("size", [16, 50, 90, 224])
def test_blur_equals_torchvision_per_sample_sigma(size):
    k = blur_kernel_size(size)
    assert DeviceViewAugment(1, size).kernel_size == k
    x = _images(n=6, size=24)
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0, 0.77])
    ours = gaussian_blur(x, sigma, k)
    ref = torch.stack([TF.gaussian_blur(x[i], kernel_size=[k, k], sigma=[float(s)] * 2) for i, s in enumerate(sigma)])
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)
    assert (ours[4] - x[4]).abs().amax() > 0.05


def test_solarize_equals_torchvision_and_the_recipes_uint8_threshold():
    x = _images()
    ref = torch.stack([TF.solarize(img, threshold=128 / 255) for img in x])
    torch.testing.assert_close(solarize(x), ref, atol=0, rtol=0)
    # the recipe solarises 8-bit images at 128: on x / 255 that is exactly x >= 128/255
    u8 = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(1, 3, 16, 16)
    torch.testing.assert_close(solarize(u8.float() / 255), TF.solarize(u8, threshold=128).float() / 255,
                               atol=1e-7, rtol=0)
    assert SOLARIZE_THRESHOLD == 128 / 255


def _reference(img, params, i, k):
    """One sample, torchvision functional ops in the order and with the parameters the batch drew."""
    if params["jitter"][i]:
        for op in params["order"][i].tolist():
            name = JITTER_OPS[op]
            img = TV_JITTER[name](img, float(params[name][i]))
    if params["grayscale"][i]:
        img = TF.rgb_to_grayscale(img, num_output_channels=3)
    if params["blur"][i]:
        s = float(params["sigma"][i])
        img = TF.gaussian_blur(img, kernel_size=[k, k], sigma=[s, s])
    if params["solarize"][i]:
        img = TF.solarize(img, threshold=128 / 255)
    return img


@pytest.mark.parametrize("view", [1, 2])
def test_forward_equals_per_sample_torchvision(view):
    torch.manual_seed(view)
    x = _images(n=96, size=16, seed=view)
    aug = DeviceViewAugment(view, size=50)  # kernel 5 on 16 px images
    before = x.clone()
    out, params = aug(x, return_params=True)
    assert torch.equal(x, before)  # the input is not modified
    assert out.shape == x.shape and out.dtype == torch.float32 and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1
    for flag in ("jitter", "grayscale", "blur") + (("solarize",) if view == 2 else ()):
        assert params[flag].any() and (view == 1 and flag == "blur" or not params[flag].all()), flag
    ref = torch.stack([_reference(x[i], params, i, aug.kernel_size) for i in range(x.shape[0])])
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def test_uint8_input_is_read_as_x_over_255():
    u8 = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    aug = DeviceViewAugment(2, size=16)
    torch.manual_seed(5)
    a = aug(u8)
    torch.manual_seed(5)
    b = aug(u8.float() / 255)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("view", [1, 2])
def test_firing_rates_ranges_and_orders(view):
    torch.manual_seed(10 + view)
    n = 4000
    x = torch.rand(n, 3, 8, 8)
    out, p = DeviceViewAugment(view, size=8)(x, return_params=True)
    assert out.shape == x.shape
    blur_p, solarize_p = (1.0, 0.0) if view == 1 else (0.1, 0.2)
    rates = {k: p[k].float().mean().item() for k in ("jitter", "grayscale", "blur", "solarize")}
    assert abs(rates["jitter"] - 0.8) < 0.03, rates
    assert abs(rates["grayscale"] - 0.2) < 0.03, rates
    assert abs((p["jitter"] & p["grayscale"]).float().mean().item() - 0.16) < 0.03  # independent draws
    if view == 1:
        assert p["blur"].all() and not p["solarize"].any()
    else:
        assert abs(rates["blur"] - blur_p) < 0.03 and abs(rates["solarize"] - solarize_p) < 0.03, rates
    for name, (low, high) in {"brightness": (0.6, 1.4), "contrast": (0.6, 1.4), "saturation": (0.8, 1.2),
                              "hue": (-0.1, 0.1), "sigma": (0.1, 2.0)}.items():
        v = p[name]
        assert v.dtype == torch.float32 and v.shape == (n,)
        assert v.min() >= low and v.max() <= high, name
        span = high - low
        assert v.min() < low + 0.01 * span and v.max() > high - 0.01 * span, name  # spans the whole range
        assert abs(v.mean().item() - (low + high) / 2) < 0.03 * span, name
    assert p["order"].dtype == torch.long and p["order"].shape == (n, 4)
    assert torch.equal(p["order"].sort(dim=1).values, torch.arange(4).expand(n, 4))  # each row a permutation
    orders = {tuple(row) for row in p["order"].tolist()}
    assert orders == set(itertools.permutations(range(4)))
    assert abs((p["order"][:, 0] == 3).float().mean().item() - 0.25) < 0.03  # hue first a quarter of the time


def test_seeded_runs_and_rng_state_replay_repeat():
    x = _images(n=16, size=16)
    aug = DeviceViewAugment(2, size=16)
    torch.manual_seed(0)
    a = aug(x)
    torch.manual_seed(0)
    b = aug(x)
    assert torch.equal(a, b)
    state = torch.get_rng_state()  # what torch.utils.checkpoint saves and restores
    c = aug(x)
    torch.set_rng_state(state)
    assert torch.equal(aug(x), c)
    assert not torch.equal(a, c)


def test_sample_params_draws_the_same_amount_every_call():
    torch.manual_seed(0)
    sample_params(32, 1)
    after_view1 = torch.rand(1)
    torch.manual_seed(0)
    sample_params(32, 2)
    assert torch.equal(torch.rand(1), after_view1)


@pytest.mark.parametrize("view", [0, 3, True, "1", None])
def test_bad_view_is_a_clear_error(view):
    with pytest.raises(ValueError, match="1 or 2"):
        DeviceViewAugment(view)


@pytest.mark.parametrize(
    "images",
    [
        torch.rand(3, 16, 16),  # no batch dim
        torch.rand(2, 1, 16, 16),  # one channel
        torch.rand(2, 4, 16, 16),
        torch.rand(2, 3, 16, 16, dtype=torch.float64),
        torch.rand(2, 3, 16, 16).half(),
        torch.rand(2, 3, 2, 16),  # smaller than the blur's reflect padding (kernel 5 at size 50)
        [[0.0]],
    ],
)
def test_bad_images_are_one_clear_error(images):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        DeviceViewAugment(1, size=50)(images)


def test_augmentation_stays_float32_under_autocast():
    """A training step runs the branch under bf16 autocast: the augmentation must not drop to half precision."""
    images = torch.rand(4, 3, 16, 16)
    torch.manual_seed(0)
    expected = DeviceViewAugment(1, 16)(images)
    torch.manual_seed(0)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = DeviceViewAugment(1, 16)(images)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_the_workers_and_the_device_read_one_recipe():
    """Issue 25: the view recipe is written once (mmvicreg.data.recipe); the workers' per-image transform and the
    device's batch augmentation both take every number from it."""
    from torchvision.transforms import v2

    from mmvicreg.data.recipe import view_recipe
    from mmvicreg.data.transforms import vicreg_view

    for view in (1, 2):
        recipe, ops = view_recipe(view), vicreg_view(32, view).transforms
        jitter, grey, blur, solarize = (t for t in ops if isinstance(t, (v2.RandomApply, v2.RandomGrayscale,
                                                                         v2.RandomSolarize)))
        colour = jitter.transforms[0]
        assert jitter.p == recipe.jitter_p and grey.p == recipe.grayscale_p and blur.p == recipe.blur_p
        ranges = recipe.factor_ranges()
        assert [tuple(getattr(colour, op)) for op in JITTER_OPS] == [tuple(ranges[op]) for op in JITTER_OPS]
        assert list(blur.transforms[0].sigma) == list(recipe.blur_sigma)
        assert (solarize.p, solarize.threshold) == (recipe.solarize_p, recipe.solarize_threshold)
        aug = DeviceViewAugment(view, 32)
        assert (aug.blur_p, aug.solarize_p, aug.kernel_size) == (recipe.blur_p, recipe.solarize_p,
                                                                 blur.transforms[0].kernel_size[0])
        torch.manual_seed(0)
        p = sample_params(20000, view)
        assert abs(p["jitter"].float().mean() - recipe.jitter_p) < 0.02
        assert abs(p["blur"].float().mean() - recipe.blur_p) < 0.02
        assert abs(p["solarize"].float().mean() - recipe.solarize_p) < 0.02
        low, high = ranges["hue"]
        assert low <= float(p["hue"].min()) and float(p["hue"].max()) <= high

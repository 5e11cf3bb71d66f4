"""The VICReg view pair fires each augmentation with the published probabilities; the other recipes' contracts."""

from collections import Counter

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from mmvicreg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_transform,
    eval_transform,
    light_train,
    normalize_images,
    vicreg_view,
)

# Published recipe (Bardes et al. 2022, appendix): probability that each augmentation fires, per view.
PUBLISHED = {
    1: {"RandomResizedCrop": 1.0, "RandomHorizontalFlip": 0.5, "ColorJitter": 0.8, "RandomGrayscale": 0.2,
        "GaussianBlur": 1.0, "RandomSolarize": 0.0},
    2: {"RandomResizedCrop": 1.0, "RandomHorizontalFlip": 0.5, "ColorJitter": 0.8, "RandomGrayscale": 0.2,
        "GaussianBlur": 0.1, "RandomSolarize": 0.2},
}
SAMPLES = 1500  # binomial std at p=0.2 is 0.010: the 0.05 tolerance is 5 std


def _image(size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8).numpy())


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _runs_at(cls):
    """The class whose ``transform`` an instance of ``cls`` runs."""
    return next(c for c in cls.__mro__ if "transform" in vars(c))


@pytest.fixture
def fired(monkeypatch):
    """Counts, per published augmentation, how many times it actually transformed an input.

    Every class in the view pipelines is patched (subclasses too, e.g. the PIL blur), and a call is counted under
    the published name of the torchvision class it is an instance of.
    """
    counts: Counter = Counter()
    classes = {type(t) for view in (1, 2) for step in vicreg_view(16, view).transforms
               for t in (step.transforms if isinstance(step, v2.RandomApply) else [step])}
    classes |= {getattr(v2, name) for name in PUBLISHED[1]}
    for cls in classes:
        name = next((n for n in PUBLISHED[1] if issubclass(cls, getattr(v2, n))), None)
        if name is None or "transform" not in vars(cls):
            continue
        original = vars(cls)["transform"]

        def counting(self, inpt, params, _original=original, _name=name, _cls=cls):
            if _runs_at(type(self)) is _cls:  # count once, not again in super() calls
                counts[_name] += 1
            return _original(self, inpt, params)

        monkeypatch.setattr(cls, "transform", counting)
    return counts


@pytest.mark.parametrize("view", [1, 2])
def test_view_fires_each_augmentation_with_published_probability(view, fired):
    torch.manual_seed(view)
    transform = vicreg_view(size=32, view=view)
    image = _image()
    for _ in range(SAMPLES):
        transform(image)
    for name, p in PUBLISHED[view].items():
        rate = fired[name] / SAMPLES
        if p in (0.0, 1.0):
            assert rate == p, f"view {view}: {name} fired {rate:.3f} of the time, published {p}"
        else:
            assert abs(rate - p) < 0.05, f"view {view}: {name} fired {rate:.3f} of the time, published {p}"


def test_view_output_is_uint8_of_requested_size():
    torch.manual_seed(0)
    out = vicreg_view(size=40, view=2)(_image(64))
    assert out.shape == (3, 40, 40) and out.dtype == torch.uint8  # normalised later, on the device


def test_view_number_is_checked():
    with pytest.raises(ValueError, match="view must be 1 or 2"):
        vicreg_view(view=3)


def test_light_train_never_flips(fired):
    torch.manual_seed(0)
    transform = light_train(size=32)
    for _ in range(50):
        assert transform(_image()).shape == (3, 32, 32)
    assert fired["RandomHorizontalFlip"] == 0 and fired["RandomResizedCrop"] == 50


def test_eval_transform_is_deterministic_resize_and_centre_crop():
    image = _image(80)
    a, b = eval_transform(size=32)(image), eval_transform(size=32)(image)
    assert a.shape == (3, 32, 32)
    assert torch.equal(a, b)
    flat = Image.new("RGB", (50, 70), (124, 116, 104))  # ImageNet mean, in pixels
    assert normalize_images(eval_transform(size=16)(flat), IMAGENET_MEAN, IMAGENET_STD).abs().max() < 0.02


def test_build_transform_by_name_and_unknown_name():
    image = _image()
    for name in ("vicreg_view1", "vicreg_view2", "light", "eval"):
        assert build_transform(name, 24)(image).shape == (3, 24, 24)
    white = build_transform("eval", 8)(Image.new("RGB", (8, 8), (255, 255, 255)))
    assert normalize_images(white, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)).allclose(torch.ones(3, 8, 8))
    assert IMAGENET_MEAN[0] == 0.485 and IMAGENET_STD[2] == 0.225
    with pytest.raises(ValueError, match="known: vicreg_view1"):
        build_transform("bogus", 24)


def test_decode_views_is_the_loader_path_of_an_image_file(tmp_path):
    """decode_views = the file decoded as RGB as a file source does, then each named transform, in order."""
    from mmvicreg.data import decode_views
    from mmvicreg.data.sources.io import open_image
    from mmvicreg.data.transforms import build_transform

    path = tmp_path / "a.jpg"
    Image.new("RGB", (120, 90), (30, 140, 200)).save(path)
    torch.manual_seed(3)
    views = decode_views(path, ("vicreg_view1", "vicreg_view2", "eval"), size=64)
    torch.manual_seed(3)
    image = open_image(path)
    expected = [build_transform(name, 64)(image) for name in ("vicreg_view1", "vicreg_view2", "eval")]
    assert [tuple(v.shape) for v in views] == [(3, 64, 64)] * 3
    assert all(torch.equal(a, b) for a, b in zip(views, expected))
    with pytest.raises(ValueError, match="unknown transform 'vicreg_view3'"):
        decode_views(path, ("vicreg_view3",))

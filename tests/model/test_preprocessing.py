"""Preprocessing follows the weights: each branch normalises with its encoder's statistics unless the config says
otherwise, and the resolved values travel with a saved model."""

import json

import pytest
import torch
from PIL import Image

from mmvicreg import JointEmbedding
from mmvicreg.data.preprocess import DeviceInput, item_preprocessor
from mmvicreg.data.transforms import IMAGENET_MEAN, IMAGENET_STD

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
GREY = 128


def _normalised_grey(mean, std) -> torch.Tensor:
    """What a uniformly grey image must become, per channel, whatever the crop and the interpolation."""
    return (GREY / 255 - torch.tensor(mean)) / torch.tensor(std)


def _assert_normalises_with(model: JointEmbedding, mean, std, size: int) -> None:
    grey = Image.new("RGB", (size + 13, size + 5), (GREY, GREY, GREY))
    declared = model.preprocessing()
    pixels = item_preprocessor(declared["image"], train=False)(grey)
    assert pixels.shape == (3, size, size) and pixels.dtype == torch.uint8  # uint8 until the device
    out = DeviceInput(declared, train=False)({"image": pixels[None]})["image"][0]
    expected = _normalised_grey(mean, std)[:, None, None].expand_as(out)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def _round_trip(model: JointEmbedding, tmp_path) -> JointEmbedding:
    model.save_pretrained(tmp_path / "export")
    return JointEmbedding.from_pretrained(tmp_path / "export")


@pytest.fixture(scope="module")
def augreg_weights(tmp_path_factory):
    """A local weights file for a timm AugReg ViT (its pretrained config says mean = std = 0.5)."""
    import timm

    path = tmp_path_factory.mktemp("weights") / "vit_tiny_augreg.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224", num_classes=0).state_dict(), path)
    return path


def test_open_clip_branch_normalises_with_openai_clip_statistics(tmp_path):
    model = JointEmbedding.from_config({"image": {"encoder": "open_clip:ViT-B-32", "expander": "none"}})
    spec = model.branch("image").transform_spec
    assert spec["interpolation"] == "bicubic" and spec["size"] == 224 and spec["crop_pct"] == 1.0
    _assert_normalises_with(model, OPENAI_MEAN, OPENAI_STD, 224)
    _assert_normalises_with(_round_trip(model, tmp_path), OPENAI_MEAN, OPENAI_STD, 224)


def test_timm_branch_normalises_with_its_pretrained_config(augreg_weights, tmp_path):
    encoder = {"name": "vit_tiny_patch16_224.augreg_in21k", "pretrained": str(augreg_weights), "image_size": 32}
    model = JointEmbedding.from_config({"image": {"encoder": encoder, "expander": "none"}})
    _assert_normalises_with(model, (0.5,) * 3, (0.5,) * 3, 32)
    loaded = _round_trip(model, tmp_path)
    _assert_normalises_with(loaded, (0.5,) * 3, (0.5,) * 3, 32)
    saved = json.loads((tmp_path / "export" / "config.json").read_text())["branches"]["image"]
    assert saved["transform"]["mean"] == [0.5, 0.5, 0.5] and "pretrained" not in saved["encoder"]


def test_random_init_timm_branch_normalises_with_imagenet_statistics(tmp_path):
    model = JointEmbedding.from_config({"image": {"encoder": "resnet18", "expander": "none", "transform": {"size": 32}}})
    _assert_normalises_with(model, IMAGENET_MEAN, IMAGENET_STD, 32)
    _assert_normalises_with(_round_trip(model, tmp_path), IMAGENET_MEAN, IMAGENET_STD, 32)


def test_the_config_wins_over_the_weights(augreg_weights, tmp_path):
    mine = {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6], "size": 24, "interpolation": "bilinear"}
    encoder = {"name": "vit_tiny_patch16_224.augreg_in21k", "pretrained": str(augreg_weights), "image_size": 32}
    model = JointEmbedding.from_config({"image": {"encoder": encoder, "expander": "none", "transform": mine}})
    spec = model.branch("image").transform_spec
    assert spec["interpolation"] == "bilinear" and spec["crop_pct"] == 0.9  # crop_pct still from the weights
    _assert_normalises_with(model, mine["mean"], mine["std"], 24)
    _assert_normalises_with(_round_trip(model, tmp_path), mine["mean"], mine["std"], 24)


@pytest.mark.parametrize(
    ("transform", "message"),
    [
        ({"mean": [0.5, 0.5]}, "transform.mean must be 3 numbers"),
        ({"interpolation": "bicubik"}, "did you mean 'bicubic'"),
        ({"crop_pct": 1.5}, r"transform.crop_pct must be a number in \(0, 1\]"),
        ({"size": 0}, "transform.size must be a positive integer"),
        ({"crop": 0.9}, "unknown transform key 'crop'"),
    ],
)
def test_bad_transform_values_are_named(transform, message):
    with pytest.raises(ValueError, match=message):
        JointEmbedding.from_config({"image": {"encoder": "test_resnet", "expander": "none", "transform": transform}})


def test_augment_on_device_moves_the_colour_half_of_the_view_to_the_batch():
    """Workers crop and flip only (a grey image stays grey); in training the loader's device stage jitters the
    batch, per sample, on its device; in evaluation it only normalises."""
    model = JointEmbedding.from_config({"image": {"encoder": "test_resnet", "expander": "8",
                                                  "transform": {"size": 32, "augment_on": "device"}}})
    declared = model.preprocessing()
    grey = Image.new("RGB", (60, 45), (GREY, GREY, GREY))
    pixels = torch.stack([item_preprocessor(declared["image"], train=True)(grey) for _ in range(16)])
    assert pixels.dtype == torch.uint8 and bool((pixels == GREY).all())  # no colour op ran in the worker
    plain = _normalised_grey(IMAGENET_MEAN, IMAGENET_STD)[None, :, None, None].expand(16, 3, 32, 32)
    torch.testing.assert_close(DeviceInput(declared, train=False)({"image": pixels})["image"], plain, atol=1e-5,
                               rtol=0)
    torch.manual_seed(0)
    jittered = DeviceInput(declared, train=True)({"image": pixels})["image"]
    moved = (jittered - plain).abs().amax(dim=(1, 2, 3)) > 1e-3
    assert 6 <= int(moved.sum()) < 16  # brightness/contrast jitter (p 0.8) moves most samples, not all
    assert model.config()["branches"]["image"]["transform"]["augment_on"] == "device"


def test_augment_on_device_needs_a_vicreg_view():
    with pytest.raises(ValueError, match="augment_on: device .* transform.train is 'light'"):
        JointEmbedding.from_config({"image": {"encoder": "test_resnet", "transform": {"train": "light",
                                                                                      "augment_on": "device"}}})
    with pytest.raises(ValueError, match="transform.augment_on"):
        JointEmbedding.from_config({"image": {"encoder": "test_resnet", "transform": {"augment_on": "gpu"}}})

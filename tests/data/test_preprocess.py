"""The model declares its preprocessing, the data package builds it (issue 25): the per-item transforms, the device
stage that ends a loader, and the one encode path. A branch handed uint8 images directly normalises them exactly as
the device stage does; no augmentation runs inside the model."""

import pytest
import torch
from tests.helpers.models import CAPTIONS, images

from mmvicreg import JointEmbedding, encode
from mmvicreg.data import DeviceInput, branch_preprocessors, encode_batches
from mmvicreg.data.device_augment import DeviceViewAugment
from mmvicreg.data.preprocess import item_preprocessor
from mmvicreg.preprocessing import ImagePreprocessing, TextPreprocessing

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return JointEmbedding.from_config(
        {"image": {"encoder": "test_resnet", "expander": "16", "transform": {"size": 32, "augment_on": "device"}},
         "view": {"shares": "image", "transform": {"size": 32, "train": "vicreg_view2", "augment_on": "device"}},
         "caption": {"encoder": {"name": "gru", "word_dim": 8, "hidden_dim": 8}, "expander": "16"}},
        captions=CAPTIONS)


def test_each_branch_declares_its_preprocessing(model):
    declared = model.preprocessing()
    assert sorted(declared) == ["caption", "image", "view"]
    image, view, text = declared["image"], declared["view"], declared["caption"]
    assert isinstance(image, ImagePreprocessing) and (image.size, image.train, image.device_view) == (32, "vicreg_view1", 1)
    assert view.device_view == 2 and view.mean == image.mean and image.field == view.field == "image"
    assert isinstance(text, TextPreprocessing) and text.tokenizer is model.branch("caption").tokenizer
    pre = branch_preprocessors(declared, train=True)
    assert {n: p.pad_id for n, p in pre.items()} == {"image": None, "view": None, "caption": text.pad_id}


def test_a_branch_normalises_uint8_as_the_device_stage_does_and_never_augments(model):
    pixels = torch.stack([item_preprocessor(model.branch("image").preprocessing, train=True)(im) for im in images(4)])
    ready = DeviceInput(model.preprocessing(), train=False)({"image": pixels})["image"]
    model.train()
    torch.manual_seed(1)
    direct = model.branch("image")(pixels)
    torch.manual_seed(1)
    assert torch.equal(direct, model.branch("image")(ready))  # train mode, uint8 in: normalised, not jittered


def test_the_device_stage_draws_each_micro_batch_as_the_chunked_step_did():
    """With ``chunk``, a batch's views are drawn micro-batch by micro-batch, each micro-batch's branches in turn:
    the order the model's forwards drew them in before the device stage left the model (seeded runs repeat)."""
    spec = {"size": 16, "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bicubic", "crop_pct": 1.0,
            "eval": "eval", "augment_on": "device"}
    declared = {name: ImagePreprocessing.from_spec("image", {**spec, "train": name})
                for name in ("vicreg_view1", "vicreg_view2")}
    batch = {name: torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8) for name in declared}
    torch.manual_seed(0)
    staged = DeviceInput(declared, train=True, chunk=2)(batch)
    torch.manual_seed(0)
    augment = {name: DeviceViewAugment(d.device_view, 16) for name, d in declared.items()}
    parts = {name: [] for name in declared}
    for lo in range(0, 6, 2):
        for name, x in batch.items():
            parts[name].append(augment[name](x[lo : lo + 2]))
    for name, d in declared.items():
        assert torch.equal(staged[name], d.normalize(torch.cat(parts[name])))
    torch.manual_seed(0)
    whole = DeviceInput(declared, train=True)(batch)
    torch.manual_seed(0)
    assert torch.equal(whole["vicreg_view1"], declared["vicreg_view1"].normalize(augment["vicreg_view1"](
        batch["vicreg_view1"])))


def test_the_one_encode_path_and_the_per_batch_model_encode(model):
    pictures = images(5)
    z = encode(model, "image", pictures, batch_size=2)
    batches = list(encode_batches(model, "image", pictures, batch_size=2))
    assert [len(b) for b in batches] == [2, 2, 1] and torch.equal(torch.cat(batches), z)
    z = encode(model, "image", pictures, batch_size=5)  # one batch: what the model gets below, bit for bit
    declared = {"image": model.branch("image").preprocessing}
    pixels = torch.stack([item_preprocessor(declared["image"])(im) for im in pictures])
    assert torch.equal(model.encode("image", pixels), z)  # uint8 straight to the model: the same numbers
    ready = DeviceInput(declared, train=False)({"image": pixels})["image"]
    assert torch.equal(model.encode("image", ready), z)
    with pytest.raises(TypeError, match=r"mmvicreg.encode\(model, 'image', items\)"):
        model.encode("image", pictures)

"""Saving and loading: bit-identical round trips for every encoder kind, no pickle, clear errors on bad exports."""

import pytest
import torch
from tests.helpers.models import CAPTIONS, TINY_BERT, image_batch, images, register_tiny_open_clip

from mmvicreg import JointEmbedding, encode
from mmvicreg.data.preprocess import item_preprocessor

SMALL = "64-32"


def _round_trip(m, tmp_path, branch, items):
    m.save_pretrained(tmp_path / "export")
    files = [p for p in (tmp_path / "export").rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")]
    for p in files:  # no pickle stream anywhere (pickle protocol 2+ starts with 0x80)
        assert not p.read_bytes()[:2].startswith(b"\x80"), p
    loaded = JointEmbedding.from_pretrained(tmp_path / "export")
    a, b = encode(m, branch, items, batch_size=3), encode(loaded, branch, items, batch_size=3)
    assert torch.equal(a, b)
    return loaded


IMAGE_SPECS = [
    {"name": "test_resnet"},
    {"name": "vit_tiny_patch16_224", "image_size": 32},
    "open_clip_image",
]
TEXT_SPECS = [
    {"name": "gru", "word_dim": 8, "hidden_dim": 16},
    {"name": "hf", "config": TINY_BERT, "vocab_size": 150},
    "open_clip_text",
]


@pytest.mark.parametrize("spec", IMAGE_SPECS, ids=["timm-cnn", "timm-vit", "open_clip"])
def test_image_encoders_round_trip_bit_identical(spec, tmp_path):
    if spec == "open_clip_image":
        spec = {"name": f"open_clip:{register_tiny_open_clip(tmp_path)}"}
    m = JointEmbedding.from_config({"image": {"encoder": spec, "expander": SMALL, "transform": {"size": 32}}})
    # Train one step so that BatchNorm running statistics differ from their initial values.
    m({"image": image_batch(4)})["image"].sum().backward()
    _round_trip(m, tmp_path, "image", images(5))


@pytest.mark.parametrize("spec", TEXT_SPECS, ids=["gru", "hf", "open_clip"])
def test_text_encoders_round_trip_with_tokenizer(spec, tmp_path):
    if spec == "open_clip_text":
        spec = {"name": f"open_clip_text:{register_tiny_open_clip(tmp_path)}"}
    m = JointEmbedding.from_config({"caption": {"encoder": spec, "expander": SMALL}}, captions=CAPTIONS)
    loaded = _round_trip(m, tmp_path, "caption", CAPTIONS[:7] + ["an unseen zebra"])
    for text in ["a red circle left of a blue square", "an unseen zebra ."]:
        assert torch.equal(item_preprocessor(m.branch("caption").preprocessing)(text),
                           item_preprocessor(loaded.branch("caption").preprocessing)(text))


def test_hf_local_directory_round_trip(tmp_path):
    from transformers import AutoConfig, AutoModel

    from mmvicreg.encoders.text_tokenizers import wordpiece_tokenizer

    local = tmp_path / "local"
    tok = wordpiece_tokenizer(CAPTIONS, vocab_size=150)
    tok.tokenizer.save_pretrained(local)
    AutoModel.from_config(AutoConfig.for_model(vocab_size=tok.vocab_size, **TINY_BERT)).save_pretrained(local)
    m = JointEmbedding.from_config({"caption": {"encoder": {"name": "hf", "pretrained": str(local)}, "expander": "none"}})
    loaded = _round_trip(m, tmp_path, "caption", CAPTIONS[:5])
    assert loaded.branch("caption").tokenizer.kind == "hf"


def test_siamese_round_trip_keeps_sharing(tmp_path):
    m = JointEmbedding.from_config(
        {"v1": {"encoder": "test_resnet", "expander": SMALL}, "v2": {"shares": "v1", "transform": {"train": "vicreg_view2"}}}
    )
    loaded = _round_trip(m, tmp_path, "v2", images(3))
    assert loaded.branch("v1").encoder is loaded.branch("v2").encoder
    assert loaded.branch("v2").transform_spec["train"] == "vicreg_view2"


@pytest.mark.parametrize("missing", ["model.safetensors", "config.json", "tokenizers/caption/mmvicreg_tokenizer.json"])
def test_pretrained_directory_with_missing_file(image_text, tmp_path, missing):
    image_text.save_pretrained(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(FileNotFoundError, match=f"{missing}.* is missing"):
        JointEmbedding.from_pretrained(tmp_path)


def test_pretrained_directory_with_corrupt_weights(image_text, tmp_path):
    image_text.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="could not be read as safetensors"):
        JointEmbedding.from_pretrained(tmp_path)

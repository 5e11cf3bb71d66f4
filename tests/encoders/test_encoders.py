"""Encoders: offline builds, timm parity, each class's own answers (modality, tokenizer), clear errors."""

import os
import subprocess
import sys

import pytest
import torch

from mmvicreg.encoders import build_encoder, encoder_class, needs_tokenizer
from tests.helpers import REPO_ROOT
from tests.helpers.models import CAPTIONS, TINY_BERT


def test_every_encoder_kind_builds_offline_with_empty_cache(tmp_path):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "TORCH_HOME": str(tmp_path / "torch"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    proc = subprocess.run([sys.executable, "-m", "tests.helpers.offline_build"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    built = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("ok ")]
    assert built == [
        "resnet18",
        "vit_tiny_patch16_224",
        "open_clip:RN50",
        "open_clip:ViT-B-32",
        "gru",
        "hf",
        "hf",
        "open_clip_text:ViT-B-32",
    ]


@pytest.mark.parametrize("name", ["resnet50", "vit_small_patch16_224"])
def test_parameter_counts_equal_timm(name):
    import timm

    ours = build_encoder(name)
    theirs = timm.create_model(name, num_classes=0)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(ours) == count(theirs)
    assert ours.output_dim == theirs.num_features == (2048 if name == "resnet50" else 384)


def test_gru_reads_each_caption_to_its_true_length():
    enc = build_encoder({"name": "gru", "word_dim": 8, "hidden_dim": 12}, captions=CAPTIONS)
    ids = enc.tokenizer.encode("a red circle left of a blue square")
    short = enc.tokenizer.encode("a dog")
    padded = torch.nn.utils.rnn.pad_sequence([ids, short], batch_first=True, padding_value=enc.tokenizer.pad_id)
    alone = enc(short[None])
    torch.testing.assert_close(enc(padded)[1], alone[0])  # padding does not change the state


def test_word_vocabulary_min_count_and_unknown():
    enc = build_encoder({"name": "gru", "min_count": 2, "word_dim": 4, "hidden_dim": 4}, captions=["a cat", "a dog", "a cat"])
    tok = enc.tokenizer.tokenizer
    assert tok.convert_ids_to_tokens(enc.tokenizer.encode("a cat zebra").tolist()) == ["a", "cat", "<unk>"]
    assert enc.tokenizer.encode("dog").tolist() == [tok.unk_token_id]  # seen once < min_count
    assert enc.tokenizer.pad_id == 0


def test_hf_mean_pooling_ignores_padding():
    enc = build_encoder({"name": "hf", "config": TINY_BERT, "vocab_size": 100}, captions=CAPTIONS).eval()
    a, b = enc.tokenizer.encode(CAPTIONS[0]), enc.tokenizer.encode("a dog")
    batch = torch.nn.utils.rnn.pad_sequence([a, b], batch_first=True, padding_value=enc.tokenizer.pad_id)
    torch.testing.assert_close(enc(batch)[1], enc(b[None])[0], rtol=1e-5, atol=1e-5)


def test_unknown_encoder_name_lists_known_names():
    with pytest.raises(ValueError) as info:
        build_encoder("resnet5O")
    msg = str(info.value)
    # the one "did you mean" of the library (mmvicreg.choices.did_you_mean) writes it in lower case
    assert "unknown encoder 'resnet5O'" in msg and "did you mean" in msg and "resnet50" in msg and "gru" in msg
    with pytest.raises(ValueError, match="unknown encoder 'open_clip:RN5'"):
        build_encoder("open_clip:RN5")


def test_learned_vocabulary_needs_captions():
    with pytest.raises(ValueError, match="learns its vocabulary from the training captions"):
        build_encoder("gru")


def test_bad_encoder_options_are_named():
    with pytest.raises(ValueError, match="bad options for encoder 'gru'"):
        build_encoder({"name": "gru", "hiden_dim": 3}, captions=CAPTIONS)


def test_hf_pretrained_must_be_a_folder_or_hub_id(tmp_path):
    with pytest.raises(ValueError, match="neither an existing local folder nor a Hugging Face Hub id"):
        build_encoder({"name": "hf", "pretrained": str(tmp_path / "nope")})


def test_hf_path_option_is_renamed_pretrained(tmp_path):
    with pytest.raises(ValueError, match="hf option `path` is now `pretrained` \\(a local folder or a Hub id\\)"):
        build_encoder({"name": "hf", "path": str(tmp_path)})


@pytest.mark.parametrize(
    "spec, cls_name, modality, owns",
    [
        ("resnet18", "TimmImageEncoder", "image", False),
        ({"name": "vit_tiny_patch16_224", "image_size": 32}, "TimmImageEncoder", "image", False),
        ("open_clip:RN50", "OpenCLIPImageEncoder", "image", False),
        ({"name": "gru", "word_dim": 8}, "GRUTextEncoder", "text", True),
        ({"name": "hf", "config": TINY_BERT}, "HFTextEncoder", "text", True),
        ("open_clip_text:ViT-B-32", "OpenCLIPTextEncoder", "text", True),
    ],
)
def test_each_encoder_class_answers_its_modality_and_tokenizer(spec, cls_name, modality, owns):
    cls = encoder_class(spec)  # nothing is built: the class answers
    assert cls.__name__ == cls_name and cls.modality == modality and cls.owns_tokenizer is owns
    assert needs_tokenizer(spec) is owns


def test_a_built_encoder_is_of_the_class_its_spec_names():
    enc = build_encoder({"name": "gru", "word_dim": 4, "hidden_dim": 4}, captions=CAPTIONS)
    assert isinstance(enc, encoder_class("gru")) and enc.tokenizer is not None
    image = build_encoder("test_resnet")
    assert isinstance(image, encoder_class("test_resnet")) and image.tokenizer is None


def test_encoder_class_of_an_unknown_name_suggests_the_nearest():
    with pytest.raises(ValueError, match="unknown encoder 'grux' \\(did you mean .*'gru'"):
        needs_tokenizer("grux")
    with pytest.raises(ValueError, match="an encoder spec needs a string `name`"):
        encoder_class({"word_dim": 4})

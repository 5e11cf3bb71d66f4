"""Branches and JointEmbedding: the paper's settings, siamese sharing, building from config, encode, errors."""

import pytest
import torch
from tests.helpers.models import CAPTIONS, TINY_BERT, image_batch, images

from mmvicreg import JointEmbedding, encode
from mmvicreg.data import branch_preprocessors, encode_batches
from mmvicreg.data.preprocess import item_preprocessor

SMALL = "64-32"


def _texts(model, branch, captions=CAPTIONS[:4]):
    b = model.branch(branch)
    ids = [item_preprocessor(b.preprocessing)(c) for c in captions]
    return torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=b.pad_id)


def test_resnet152_gru_image_text():
    m = JointEmbedding.from_config(
        {
            "image": {"encoder": "resnet152", "expander": SMALL, "transform": {"size": 32, "train": "light"}},
            "caption": {"encoder": {"name": "gru", "word_dim": 300, "hidden_dim": 1024}, "expander": SMALL},
        },
        captions=CAPTIONS,
    )
    assert m.branch("image").encoder.output_dim == 2048 and m.branch("caption").encoder.output_dim == 1024
    z = m({"image": image_batch(3), "caption": _texts(m, "caption", CAPTIONS[:3])})
    assert z["image"].shape == z["caption"].shape == (3, 32)
    (z["image"] - z["caption"]).pow(2).mean().backward()
    assert m.branch("caption").encoder.gru.weight_hh_l0.grad is not None


def test_resnet50_siamese_shared_weights():
    m = JointEmbedding.from_config(
        {
            "view1": {"encoder": "resnet50", "expander": SMALL, "transform": {"size": 32, "train": "vicreg_view1"}},
            "view2": {"shares": "view1", "transform": {"size": 32, "train": "vicreg_view2"}},
        }
    )
    assert m.branch("view1").encoder is m.branch("view2").encoder
    assert m.branch("view1").expander is m.branch("view2").expander
    n_params = sum(p.numel() for p in m.parameters())
    assert n_params == sum(p.numel() for p in m.branch("view1").parameters())
    x = image_batch(2)
    m.eval()
    z = m({"view1": x, "view2": x})
    torch.testing.assert_close(z["view1"], z["view2"])


def test_resnet50_pair_with_different_weights_and_resnet50_with_vit_small():
    m = JointEmbedding.from_config(
        {
            "a": {"encoder": "resnet50", "expander": SMALL, "field": "image"},
            "b": {"encoder": "resnet50", "expander": SMALL, "field": "image"},
            "c": {"encoder": {"name": "vit_small_patch16_224", "image_size": 32}, "expander": SMALL, "field": "image"},
        }
    )
    assert m.branch("a").encoder is not m.branch("b").encoder
    x = image_batch(2)
    m.eval()
    z = m({"a": x, "b": x, "c": x})
    assert not torch.allclose(z["a"], z["b"])
    assert z["c"].shape == (2, 32) and m.branch("c").encoder.output_dim == 384


def test_vit_with_transformer_text():
    m = JointEmbedding.from_config(
        {
            "image": {"encoder": {"name": "vit_tiny_patch16_224", "image_size": 32}, "expander": SMALL},
            "caption": {"encoder": {"name": "hf", "config": TINY_BERT, "vocab_size": 120}, "expander": SMALL},
        },
        captions=CAPTIONS,
    )
    z = m({"image": image_batch(2), "caption": _texts(m, "caption", CAPTIONS[:2])})
    assert z["caption"].shape == (2, 32)


def test_encode_layers_and_mode():
    m = JointEmbedding.from_config({"image": {"encoder": "test_resnet", "expander": SMALL, "transform": {"size": 32}}})
    m.train()
    h = encode(m, "image", images(4), layer="representation")
    z = encode(m, "image", images(4), batch_size=1)
    assert h.shape == (4, 96) and z.shape == (4, 32) and z.dtype == torch.float32 and not z.requires_grad
    assert m.training  # encode restores the mode it found
    torch.testing.assert_close(z, encode(m, "image", images(4), batch_size=4), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------- bad input


def test_images_fed_to_text_branch(image_text):
    with pytest.raises(TypeError, match="a text branch tokenizes strings, got Image"):
        encode(image_text, "caption", images(2))
    with pytest.raises(ValueError, match="branch 'caption' has a text encoder and needs int64 token ids"):
        image_text({"caption": image_batch(2)})
    with pytest.raises(TypeError, match="reads images .* got str"):
        encode(image_text, "image", ["a caption"])
    with pytest.raises(ValueError, match="branch 'image' has an image encoder and needs images"):
        image_text({"image": _texts(image_text, "caption")})


def test_unknown_branch(image_text):
    with pytest.raises(KeyError, match="no branch 'text'; this model's branches: image, caption"):
        encode(image_text, "text", ["x"])
    with pytest.raises(KeyError, match="not branches"):
        image_text({"txt": torch.zeros(2, 3, dtype=torch.long)})


def test_config_errors():
    with pytest.raises(ValueError, match="shares 'v3', which is not a branch"):
        JointEmbedding.from_config({"v1": {"encoder": "test_resnet"}, "v2": {"shares": "v3"}})
    # An unknown key is named by its dotted path, with the nearest valid key (BranchConfig.from_mapping).
    with pytest.raises(ValueError, match="unknown config key 'branches.v1.expandr' \\(did you mean 'branches.v1.expander'\\?\\)"):
        JointEmbedding.from_config({"v1": {"encoder": "test_resnet", "expandr": "none"}})
    with pytest.raises(ValueError, match="transform.train is 'vicreg'"):
        JointEmbedding.from_config({"v1": {"encoder": "test_resnet", "transform": {"train": "vicreg"}}})
    with pytest.raises(ValueError, match="in a cycle"):
        JointEmbedding.from_config({"a": {"shares": "b"}, "b": {"shares": "a"}})


def test_from_config_takes_a_branch_config_or_a_mapping_with_loss_keys_alike():
    from mmvicreg.config import BranchConfig, ConfigError

    section = {"encoder": "test_resnet", "expander": SMALL, "transform": {"size": 32}}
    loss = {"variance_weight": 10.0, "covariance_weight": 0.5, "gamma": 2.0}  # per-branch loss keys: not the model's
    torch.manual_seed(0)
    typed = JointEmbedding.from_config({"image": BranchConfig(**section, **loss), "view": BranchConfig(shares="image")})
    torch.manual_seed(0)
    plain = JointEmbedding.from_config({"image": {**section, **loss}, "view": {"shares": "image"}})
    assert typed.config() == plain.config()
    assert typed.branch("view").encoder is typed.branch("image").encoder and not typed.branch("view").own_expander
    for (k, a), (_, b) in zip(typed.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(ConfigError, match="unknown config key 'branches.image.variance_wieght'.*'branches.image.variance_weight'"):
        JointEmbedding.from_config({"image": {**section, "variance_wieght": 1.0}})
    with pytest.raises(ConfigError, match="branches.image must be a mapping"):
        JointEmbedding.from_config({"image": "test_resnet"})


def test_preprocessors_name_field_function_and_pad_id(image_text):
    pre = branch_preprocessors(image_text.preprocessing(), train=False)
    assert list(pre) == ["image", "caption"]
    field, fn, pad_id = pre["image"]
    assert field == "image" and pad_id is None and fn(images(1)[0]).shape == (3, 32, 32)
    field, fn, pad_id = pre["caption"]
    assert field == "caption" and pad_id == image_text.branch("caption").tokenizer.pad_id
    assert torch.equal(fn(CAPTIONS[0]), item_preprocessor(image_text.branch("caption").preprocessing)(CAPTIONS[0]))


def test_encode_nothing_gives_an_empty_matrix_of_the_layer_width(image_text):
    assert encode(image_text, "image", []).shape == (0, 32)
    assert encode(image_text, "caption", [], layer="representation").shape == (0, 16)
    with pytest.raises(ValueError, match="layer is 'embeddings' \\(did you mean 'embedding'\\?\\)"):
        encode(image_text, "image", images(1), layer="embeddings")


def test_encode_with_worker_processes_equals_serial_encode_and_batches_concatenate(image_text):
    import pickle

    pictures, captions = images(10, size=36), CAPTIONS[:9]
    for branch, items in (("image", pictures), ("caption", captions)):
        serial = encode(image_text, branch, items, batch_size=4, workers=0)
        parallel = encode(image_text, branch, items, batch_size=4, workers=2)
        torch.testing.assert_close(parallel, serial, atol=1e-5, rtol=0)
        batches = list(encode_batches(image_text, branch, items, batch_size=4))
        assert [len(b) for b in batches] == [4, 4, len(items) - 8]
        torch.testing.assert_close(torch.cat(batches), serial, atol=0, rtol=0)
    # what a worker receives is the transform, not the network: no parameter tensor in the pickle
    state = image_text.branch("image").encoder.state_dict()
    assert len(pickle.dumps(item_preprocessor(image_text.branch("image").preprocessing, False))) < sum(
        t.numel() * t.element_size() for t in state.values())

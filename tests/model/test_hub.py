"""The Hub: the same export folder travels up (create_repo + upload_folder) and down (snapshot_download through the
Hugging Face cache), without a network: the upload is checked by the folder it would send, the download by a
cache laid out by hand, and offline failures are one line naming the repo and the local alternative.

huggingface_hub ships no local stand-in for the Hub server (its own tests use a staging Hub), so these tests stop
at its public API: ``HfApi`` methods are patched on the library class, ``snapshot_download`` reads a real cache.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import huggingface_hub.utils as hub_errors
import pytest
import torch

from mmvicreg import JointEmbedding, encode
from mmvicreg.model.hub import EXPORT_PATTERNS
from tests.helpers import REPO_ROOT
from tests.helpers.models import CAPTIONS, images

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TEXTS = ["a dog on the grass", "a red circle left of a blue square", "an unseen zebra"]
METRICS = {"i2t": {"R@1": 80.0}, "t2i": {"R@1": 70.5}}


@pytest.fixture(scope="module")
def model():
    return JointEmbedding.from_config(
        {
            "image": {"encoder": "test_resnet", "expander": "16", "transform": {"size": 32}},
            "caption": {"encoder": {"name": "gru", "word_dim": 8, "hidden_dim": 8}, "expander": "16"},
        },
        captions=CAPTIONS,
    )


def cache_repo(cache, repo_id, folder, commit=COMMIT):
    """Lay ``folder`` out in the Hugging Face cache as the snapshot of ``repo_id``'s ``main`` at ``commit``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit, dirs_exist_ok=True)
    return repo


class Recorder:
    """Stands in for the Hub's write methods on ``huggingface_hub.HfApi``; keeps what each call would send."""

    def __init__(self, monkeypatch):
        self.calls, self.sent = [], {}
        for name in ("create_repo", "create_branch", "upload_folder"):
            monkeypatch.setattr(huggingface_hub.HfApi, name, self._method(getattr(self, name)))

    @staticmethod
    def _method(record):
        """A function that, set on the class, is called as a method: it drops the ``HfApi`` instance."""
        return lambda api, *args, **kwargs: record(*args, **kwargs)

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        self.calls.append(("upload_folder", repo_id, kwargs))
        root = os.fspath(folder_path)
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = os.path.join(dirpath, name)
                self.sent[os.path.relpath(path, root)] = Path(path).read_bytes()
        return f"https://huggingface.co/{repo_id}/commit/{COMMIT}"


def test_push_sends_exactly_the_export_with_its_card(model, monkeypatch, tmp_path):
    hub = Recorder(monkeypatch)
    local = model.save_pretrained(tmp_path / "local")
    url = model.push_to_hub("org/name", private=True, metrics=METRICS, training_config={"train": {"lr": 0.2}})
    assert url == f"https://huggingface.co/org/name/commit/{COMMIT}"
    assert [(c[0], c[1]) for c in hub.calls] == [("create_repo", "org/name"), ("upload_folder", "org/name")]
    assert hub.calls[0][2]["private"] is True and hub.calls[0][2]["exist_ok"] is True
    assert set(hub.sent) == {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    tokenizer_files = {name for name in hub.sent if name.startswith("tokenizers/")}
    assert set(hub.sent) - tokenizer_files == {"config.json", "model.safetensors", "README.md"}
    assert "tokenizers/caption/mmvicreg_tokenizer.json" in tokenizer_files
    assert all(name.startswith("tokenizers/caption/") for name in tokenizer_files)
    assert hub.sent["model.safetensors"] == (local / "model.safetensors").read_bytes()
    card = hub.sent["README.md"].decode()
    assert "| i2t.R@1 | 80.0 |" in card and "| t2i.R@1 | 70.5 |" in card and "lr: 0.2" in card
    assert 'JointEmbedding.from_pretrained("org/name")' in card


def test_push_to_a_revision_creates_the_branch(model, monkeypatch):
    hub = Recorder(monkeypatch)
    model.push_to_hub("org/name", revision="v1", commit_message="first")
    assert [c[0] for c in hub.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert hub.calls[1][2]["branch"] == "v1"
    assert hub.calls[2][2]["revision"] == "v1" and hub.calls[2][2]["commit_message"] == "first"


def test_pushed_folder_loads_back_from_the_cache(model, monkeypatch, tmp_path):
    """Up and down: what push would send, laid out in a cache, loads offline into a model with equal outputs."""
    hub = Recorder(monkeypatch)
    model.push_to_hub("org/name")
    sent = tmp_path / "sent"
    for rel, data in hub.sent.items():
        (sent / rel).parent.mkdir(parents=True, exist_ok=True)
        (sent / rel).write_bytes(data)
    cache_repo(tmp_path / "cache", "org/name", sent)
    loaded = JointEmbedding.from_pretrained("org/name", cache_dir=tmp_path / "cache", local_files_only=True)
    assert torch.equal(encode(loaded, "caption", TEXTS), encode(model, "caption", TEXTS))
    assert torch.equal(encode(loaded, "image", images(3)), encode(model, "image", images(3)))


def test_hub_ids_reach_snapshot_download_and_paths_never_do(model, monkeypatch, tmp_path):
    model.save_pretrained(tmp_path / "export")
    seen = []

    def fake_snapshot_download(repo_id, **kwargs):
        seen.append((repo_id, kwargs))
        return str(tmp_path / "export")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    JointEmbedding.from_pretrained("org/name", revision="v1", token="t")
    assert seen[0][0] == "org/name" and seen[0][1]["revision"] == "v1" and seen[0][1]["token"] == "t"
    assert seen[0][1]["allow_patterns"] == EXPORT_PATTERNS
    monkeypatch.chdir(tmp_path)
    JointEmbedding.from_pretrained("export")  # an existing folder, read as is
    for name in ["a/b/c", "./missing", "missing", str(tmp_path / "missing"), tmp_path / "org" / "name"]:
        with pytest.raises(FileNotFoundError, match="is not a directory; pass the folder .* is neither"):
            JointEmbedding.from_pretrained(name)
    assert len(seen) == 1


def _hub_error(cls, status=None):
    """An instance of huggingface_hub's own error class, made without an HTTP response object."""
    error = cls.__new__(cls)
    error.args = (f"{cls.__name__} for url https://huggingface.co/api/models/org/name",)
    if status is not None:
        error.response = type("Response", (), {"status_code": status})()
    return error


@pytest.mark.parametrize(
    "error, expected, words",
    [
        (_hub_error(hub_errors.RepositoryNotFoundError), FileNotFoundError, "not found"),
        (_hub_error(hub_errors.GatedRepoError), PermissionError, "not authorised"),
        (_hub_error(hub_errors.RevisionNotFoundError), FileNotFoundError, "no such revision"),
        (_hub_error(hub_errors.HfHubHTTPError, 401), PermissionError, "not authorised"),
        (_hub_error(hub_errors.HfHubHTTPError, 503), ConnectionError, "HTTP 503"),
    ],
    ids=["not-found", "gated", "revision", "401", "503"],
)
def test_hub_failures_are_one_line(monkeypatch, error, expected, words):
    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing)
    with pytest.raises(expected) as info:
        JointEmbedding.from_pretrained("org/name")
    message = str(info.value)
    assert "\n" not in message and "'org/name'" in message and words in message
    assert info.value.__suppress_context__ and info.value.__cause__ is None


def test_a_repo_that_is_not_an_export(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "README.md").write_text("# not ours")
    cache_repo(tmp_path / "cache", "org/other", tmp_path / "other")
    with pytest.raises(FileNotFoundError, match="'org/other' on the Hugging Face Hub is not an mmvicreg model"):
        JointEmbedding.from_pretrained("org/other", cache_dir=tmp_path / "cache", local_files_only=True)


def test_an_incomplete_export_is_not_uploaded(model, monkeypatch, tmp_path):
    from mmvicreg.model.hub import upload_export

    hub = Recorder(monkeypatch)
    out = model.save_pretrained(tmp_path / "m")
    shutil.rmtree(out / "tokenizers")
    with pytest.raises(FileNotFoundError, match="tokenizers/caption is missing"):
        upload_export(out, "org/name")
    (out / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        upload_export(out, "org/name")
    assert hub.calls == []


def test_an_export_from_before_cards_gets_its_card_from_the_loaded_model(model, monkeypatch, tmp_path):
    from mmvicreg.model.hub import upload_export

    hub = Recorder(monkeypatch)
    out = model.save_pretrained(tmp_path / "m")
    (out / "README.md").unlink()
    with pytest.raises(FileNotFoundError, match="README.md is missing .*pass load_model"):
        upload_export(out, "org/name")
    assert hub.calls == []
    upload_export(out, "org/name", load_model=JointEmbedding.from_pretrained)
    assert 'JointEmbedding.from_pretrained("org/name")' in hub.sent["README.md"].decode()
    assert not (out / "README.md").exists()  # the folder itself is left as it was


OFFLINE_SCRIPT = """
import json, sys
from mmvicreg import JointEmbedding, encode
from tests.helpers.models import CAPTIONS
out = {}
try:
    model = JointEmbedding.from_pretrained("org/name")
    out["z"] = encode(model, "caption", json.loads(sys.argv[1])).tolist()
except Exception as e:
    out["cached"] = [type(e).__name__, str(e)]
for key, call in [("load", lambda: JointEmbedding.from_pretrained("org/missing")),
                  ("push", lambda: JointEmbedding.from_config(
                      {"caption": {"encoder": {"name": "gru", "word_dim": 8, "hidden_dim": 8}, "expander": "16"}},
                      captions=CAPTIONS).push_to_hub("org/name"))]:
    try:
        call()
        out[key] = None
    except Exception as e:
        out[key] = [type(e).__name__, str(e), e.__cause__ is None and e.__suppress_context__]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def offline_run(model, tmp_path_factory):
    """One subprocess with HF_HUB_OFFLINE=1 and a Hugging Face home of its own, holding only 'org/name'."""
    tmp = tmp_path_factory.mktemp("offline")
    model.save_pretrained(tmp / "export")
    cache_repo(tmp / "hf" / "hub", "org/name", tmp / "export")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf"), "HF_HUB_CACHE": str(tmp / "hf" / "hub")}
    env.pop("HF_TOKEN", None)
    proc = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, json.dumps(TEXTS)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_cached_repo_loads_with_hf_hub_offline(model, offline_run):
    assert "cached" not in offline_run, offline_run.get("cached")
    assert torch.equal(torch.tensor(offline_run["z"]), encode(model, "caption", TEXTS))


def test_offline_load_of_an_uncached_repo_is_one_line(offline_run):
    kind, message, clean = offline_run["load"]
    assert kind == "FileNotFoundError" and clean and "\n" not in message
    assert message.startswith("cannot load 'org/missing' from the Hugging Face Hub: offline (HF_HUB_OFFLINE=1)")
    assert "a local folder written by save_pretrained" in message


def test_offline_push_is_one_line(offline_run):
    kind, message, clean = offline_run["push"]
    assert kind == "ConnectionError" and clean and "\n" not in message
    assert message.startswith("cannot push to 'org/name' on the Hugging Face Hub: offline (HF_HUB_OFFLINE=1)")
    assert "a local folder written by save_pretrained" in message

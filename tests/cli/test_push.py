"""``mmvicreg push``: an export folder goes up as it is (checked complete first); failures are one line, no traceback."""

import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest

from mmvicreg import JointEmbedding
from mmvicreg.cli import main
from tests.helpers import REPO_ROOT
from tests.helpers.models import CAPTIONS


@pytest.fixture
def export(tmp_path):
    model = JointEmbedding.from_config(
        {
            "image": {"encoder": "test_resnet", "expander": "16"},
            "caption": {"encoder": {"name": "gru", "word_dim": 8, "hidden_dim": 8}, "expander": "16"},
        },
        captions=CAPTIONS,
    )
    return model.save_pretrained(tmp_path / "model", metrics={"i2t": {"R@1": 80.0}})


@pytest.fixture
def hub(monkeypatch):
    """The Hub's write methods on ``huggingface_hub.HfApi`` replaced by a recorder of what they would send."""
    record = {"calls": [], "sent": {}}

    def create_repo(api, repo_id, **kwargs):
        record["calls"].append(("create_repo", repo_id, kwargs))

    def upload_folder(api, *, repo_id, folder_path, **kwargs):
        record["calls"].append(("upload_folder", repo_id, kwargs))
        for dirpath, _, names in os.walk(folder_path):
            for name in names:
                path = os.path.join(dirpath, name)
                record["sent"][os.path.relpath(path, folder_path)] = Path(path).read_bytes()
        return "https://huggingface.co/org/name/commit/abc"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return record


def test_push_uploads_the_export_folder(export, hub, capsys):
    readme = (export / "README.md").read_text()
    code = main(["push", "--model", str(export), "--repo-id", "org/name", "--private", "--token", "hf_test"])
    assert code == 0, capsys.readouterr().err
    assert "https://huggingface.co/org/name/commit/abc" in capsys.readouterr().out
    (create, upload) = hub["calls"]
    assert create[1] == upload[1] == "org/name"
    assert create[2]["private"] is True and create[2]["token"] == upload[2]["token"] == "hf_test"
    on_disk = {p.relative_to(export).as_posix(): p.read_bytes() for p in export.rglob("*") if p.is_file()}
    assert set(hub["sent"]) == set(on_disk)
    assert all(hub["sent"][k] == on_disk[k] for k in on_disk if k != "README.md")
    card = hub["sent"]["README.md"].decode()
    assert "| i2t.R@1 | 80.0 |" in card and 'JointEmbedding.from_pretrained("org/name")' in card
    assert (export / "README.md").read_text() == readme  # the folder itself is left as it was


def test_push_refuses_an_incomplete_export(export, hub, capsys):
    (export / "model.safetensors").unlink()
    assert main(["push", "--model", str(export), "--repo-id", "org/name"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmvicreg: error: ") and "model.safetensors is missing" in err and "\n" not in err
    assert hub["calls"] == []


def test_push_offline_is_one_line_without_traceback(export, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hub")}
    env.pop("MMVICREG_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "mmvicreg", "push", "--model", str(export), "--repo-id", "org/name"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("mmvicreg: error: cannot push to 'org/name' on the Hugging Face Hub: offline")
    assert "a local folder written by save_pretrained" in lines[0]

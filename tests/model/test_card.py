"""The model card: written with every export, front matter the Hub reads, the branches, config and metrics, and a
Python snippet that really loads the model and encodes with its real branch names."""

import re

import pytest
import torch
import yaml

from mmvicreg import JointEmbedding, encode
from mmvicreg.model.card import (
    LOCAL_PLACEHOLDER,
    card_for_repo,
    flatten_metrics,
    model_card,
    write_model_card,
)
from tests.helpers.models import CAPTIONS, images

METRICS = {"i2t": {"R@1": 80.0, "R@5": 95.5}, "t2i": {"R@1": 70.25}, "rsum": 400.0, "protocol": "1k", "k": [1, 5]}
TRAINING = {"train": {"lr": 0.1, "batch_size": 32}, "loss": {"invariance_weight": 25.0}}


@pytest.fixture(scope="module")
def photo_text():
    """Branch names other than the defaults, so that the card must use the model's own."""
    return JointEmbedding.from_config(
        {
            "photo": {"encoder": "test_resnet", "expander": "16", "transform": {"size": 32}},
            "words": {"encoder": {"name": "gru", "word_dim": 8, "hidden_dim": 8}, "expander": "16"},
        },
        captions=CAPTIONS,
    )


def _front_matter(text):
    match = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    assert match, text[:200]
    return yaml.safe_load(match.group(1))


def _block(text, lang):
    (block,) = re.findall(rf"```{lang}\n(.*?)```", text, re.DOTALL)
    return block


def test_card_has_front_matter_branches_config_metrics_and_snippet(photo_text, tmp_path):
    photo_text.save_pretrained(tmp_path / "m", training_config=TRAINING, metrics=METRICS)
    text = (tmp_path / "m" / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["library_name"] == "mmvicreg"
    assert meta["tags"] == ["vicreg", "mmvicreg", "image-text-retrieval"]
    assert meta["eval_metrics"] == {"i2t.R@1": 80.0, "i2t.R@5": 95.5, "t2i.R@1": 70.25, "rsum": 400.0}
    assert "Bardes" in text and "VICReg" in text
    for row in ["| i2t.R@1 | 80.0 |", "| i2t.R@5 | 95.5 |", "| t2i.R@1 | 70.25 |", "| rsum | 400.0 |", "| protocol | 1k |"]:
        assert row in text
    assert "| `photo` | `test_resnet` | image | `image` | 96 | 16 | 16 |" in text
    assert "| `words` | `gru` | text | `caption` | 8 | 16 | 16 |" in text
    assert yaml.safe_load(_block(text, "yaml")) == TRAINING
    snippet = _block(text, "python")
    assert f'JointEmbedding.from_pretrained("{LOCAL_PLACEHOLDER}")' in snippet
    assert 'encode(model, "words", ["a dog on the grass"])' in snippet
    assert 'encode(model, "photo", [PIL.Image.open("dog.jpg")])' in snippet


def test_the_snippet_runs(photo_text, tmp_path, monkeypatch):
    """The card's Python, pointed at the export, loads the model and encodes text and an image."""
    photo_text.save_pretrained(tmp_path / "m")
    images(1)[0].save(tmp_path / "dog.jpg")
    monkeypatch.chdir(tmp_path)
    snippet = _block(card_for_repo((tmp_path / "m" / "README.md").read_text(), str(tmp_path / "m")), "python")
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102 - the point: the card's code runs
    assert scope["z_text"].shape == (1, 16) and scope["z_image"].shape == (1, 16)
    assert torch.equal(scope["z_text"], encode(photo_text, "words", ["a dog on the grass"]))


def test_a_save_without_metrics_still_writes_a_card(photo_text, tmp_path):
    photo_text.save_pretrained(tmp_path / "m")
    text = (tmp_path / "m" / "README.md").read_text()
    assert _front_matter(text) == {"library_name": "mmvicreg", "tags": ["vicreg", "mmvicreg", "image-text-retrieval"]}
    assert "## Evaluation" not in text and "## Training configuration" not in text and "## Branches" in text


def test_an_image_only_siamese_card(tmp_path):
    m = JointEmbedding.from_config(
        {"v1": {"encoder": "test_resnet", "expander": "16"}, "v2": {"shares": "v1", "transform": {"train": "vicreg_view2"}}}
    )
    m.save_pretrained(tmp_path / "m")
    text = (tmp_path / "m" / "README.md").read_text()
    assert _front_matter(text)["tags"] == ["vicreg", "mmvicreg", "image"]
    assert "| `v2` | shares `v1` | image | `image` | 96 | shares `v1` | 16 |" in text
    snippet = _block(text, "python")
    assert 'encode(model, "v1", [PIL.Image.open("dog.jpg")])' in snippet and "z_text" not in snippet


def test_write_model_card_rewrites_only_the_card(photo_text, tmp_path):
    out = photo_text.save_pretrained(tmp_path / "m")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file() and p.name != "README.md"}
    write_model_card(out, photo_text, training_config=TRAINING, metrics=METRICS)
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file() and p.name != "README.md"}
    assert after == before
    assert "| i2t.R@1 | 80.0 |" in (out / "README.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "tokenizers"]
    with pytest.raises(FileNotFoundError, match="no config.json"):
        write_model_card(tmp_path / "empty", photo_text)


def test_flatten_metrics_keeps_scalars_under_dotted_keys():
    import numpy as np

    flat = flatten_metrics({"a": {"b": {"c": np.float32(1.5)}, "n": np.int64(3)}, "ok": True, "arr": np.zeros(3)})
    assert flat == {"a.b.c": 1.5, "a.n": 3, "ok": True}


def test_card_for_repo_points_the_snippet_at_the_repo(photo_text):
    from mmvicreg.model.card import model_card

    text = card_for_repo(model_card(photo_text), "org/name")
    assert 'JointEmbedding.from_pretrained("org/name")' in text and LOCAL_PLACEHOLDER not in text


@pytest.mark.parametrize("loss, title, tag, says", [
    ("vicreg", "# VICReg joint embedding", "vicreg", "trained with VICReg (Variance-Invariance-Covariance"),
    ("infonce", "# InfoNCE joint embedding", "infonce", "trained with InfoNCE, the symmetric contrastive loss"),
    ("supervised", "# Supervised joint embedding", "supervised", "trained with cross-entropy on class labels"),
])
def test_the_card_names_the_objective_that_trained_the_model(photo_text, loss, title, tag, says):
    """A card says what trained the model (its config's loss.name), not VICReg whatever the objective."""
    text = model_card(photo_text, training_config={"loss": {"name": loss}})
    assert f"{title}: " in text and says in text and _front_matter(text)["tags"][0] == tag
    assert ("decorrelated" in text) == (loss == "vicreg")  # VICReg's aim is said of VICReg models only

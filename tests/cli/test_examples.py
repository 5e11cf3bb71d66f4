"""Every example config is valid; the quickstart config trains on the real Flickr8k and COCO subsets by
overriding only data.* keys (plus a short run length)."""

import json

import pytest

from mmvicreg.cli import main
from mmvicreg.config import load_config
from mmvicreg.data.build import format_options
from tests.helpers import REPO_ROOT

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
SHORT = ["train.max_steps=2", "train.batch_size=16", "train.progress=false"]


def test_expected_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"quickstart.yaml", "digits_siamese.yaml", "coco_resnet152_gru.yaml", "coco_vit_transformer.yaml",
            "imagenet_resnet50.yaml", "siamese_r50_vits.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid_and_says_what_it_reproduces(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# Reproduces:"), first
    assert "mmvicreg train" in path.read_text().splitlines()[1] or "mmvicreg train" in path.read_text()
    load_config(path, [], format_keys=format_options)


def _train_and_read(tmp_path, overrides):
    quickstart = next(p for p in EXAMPLES if p.name == "quickstart.yaml")
    assert main(["train", str(quickstart), f"output_dir={tmp_path}", *overrides, *SHORT]) == 0
    return json.loads((tmp_path / "eval.json").read_text())


def test_quickstart_config_trains_on_flickr8k(shared_data, tmp_path):
    root = shared_data / "flickr8k-1k"
    data = [f"data.{s}.format=csv" for s in ("train", "eval")] + [
        f"data.{s}.{k}={v}" for s in ("train", "eval")
        for k, v in (("captions", root / "captions.csv"), ("images", root / "images"))
    ]
    result = _train_and_read(tmp_path, data)
    assert result["num_images"] == 1000 and result["num_captions"] == 5000


def test_quickstart_config_trains_on_coco_mini(shared_data, tmp_path):
    root = shared_data / "coco-mini"
    data = ["data.train.format=coco", f"data.train.root={root}", "data.train.split=train",
            "data.eval.format=coco", f"data.eval.root={root}", "data.eval.split=val"]
    result = _train_and_read(tmp_path, data)
    assert result["num_images"] == 79 and result["num_captions"] == 395

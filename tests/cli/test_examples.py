"""Every example config is valid; the quickstart config trains on the real Flickr8k and COCO subsets by
overriding only data.* keys (plus a short run length)."""

import json
import re

import pytest

from mmvicreg.cli import main
from mmvicreg.config import load_config
from mmvicreg.data.build import format_options
from tests.helpers import REPO_ROOT

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
SHORT = ["train.max_steps=2", "train.batch_size=16", "train.progress=false"]


def test_expected_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"quickstart.yaml", "quickstart_infonce.yaml", "digits_siamese.yaml", "coco_resnet152_gru.yaml", "coco_vit_transformer.yaml",
            "imagenet_resnet50.yaml", "siamese_r50_vits.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid_and_says_what_it_reproduces(path):
    """The first line says "Reproduces" only with the paper's table named (its settings are the paper's), else
    "Follows"; either way the next line lists the departures from the paper."""
    first, second = path.read_text().splitlines()[:2]
    assert re.match(r"# (Reproduces: Bardes et al\. \(ICLR 2022\) Table \d+, |Follows: )", first), first
    assert second.startswith("# Departures: "), second
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


def _karpathy_from_coco_mini(root, out):
    """A dataset_coco.json over coco-mini: its train2017 images split train/restval, its val2017 images val/test."""
    images = []
    for folder, splits in (("train2017", ("train", "restval")), ("val2017", ("val", "test"))):
        annotations = json.loads((root / "annotations" / f"captions_{folder}.json").read_text())
        captions = {}
        for a in annotations["annotations"]:
            captions.setdefault(a["image_id"], []).append(a["caption"])
        for k, image in enumerate(sorted(annotations["images"], key=lambda i: i["id"])):
            images.append({"filepath": folder, "filename": image["file_name"], "cocoid": image["id"],
                           "split": splits[k % 2], "sentences": [{"raw": c} for c in captions[image["id"]]]})
    out.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return {s: sum(i["split"] == s for i in images) for s in ("train", "restval", "val", "test")}


@pytest.mark.parametrize("name", ["coco_resnet152_gru.yaml", "coco_vit_transformer.yaml", "openclip_finetune.yaml"])
def test_coco_examples_train_on_karpathy_train_and_restval_and_evaluate_on_its_test_split(name, shared_data, tmp_path):
    from mmvicreg.data import build_source

    root = shared_data / "coco-mini"
    counts = _karpathy_from_coco_mini(root, tmp_path / "dataset_coco.json")
    keys = [f"data.{s}.{k}={v}" for s in ("train", "eval")
            for k, v in (("captions", tmp_path / "dataset_coco.json"), ("images", root))]
    config = load_config(REPO_ROOT / "examples" / name, keys, format_keys=format_options)
    assert config.eval.protocol == ("5k" if name == "coco_resnet152_gru.yaml" else "1k")  # Table 3: 5K
    train = build_source(config.data.train, "train")
    test = build_source(config.data.eval, "test")
    assert train.num_images == counts["train"] + counts["restval"] and counts["restval"] > 0
    assert test.num_images == counts["test"] > 0
    retrieval = test.eval_set(config.eval.captions_per_image)
    assert len(retrieval.flat_captions) == 5 * test.num_images  # every COCO image keeps 5 captions

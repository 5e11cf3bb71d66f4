"""``mmvicreg eval`` reads local webdataset shards (``--format webdataset``): shards written by ``mmvicreg shards``
score exactly as the source they were written from. Retrieval on a Flickr8k-1k subset (the real images: skipped
when ../shared/data is absent), k-NN on generated labelled folders; and what does not fit is one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmvicreg.cli import main
from tests.helpers.models import CAPTIONS

N_IMAGES = 60  # the first images of Flickr8k-1k (5 captions each): fast on two CPU cores
RECALL_KEYS = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "rsum", "i2t_medr",
               "i2t_meanr", "t2i_medr", "t2i_meanr", "num_images", "num_captions"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny saved image–text model (random weights: the two readings must agree, not score well)."""
    from mmvicreg import JointEmbedding

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "model"
    JointEmbedding.from_config(
        {"image": {"encoder": "test_resnet", "expander": "32", "transform": {"size": 32}},
         "caption": {"encoder": {"name": "gru", "word_dim": 8, "hidden_dim": 16}, "expander": "32"}},
        captions=CAPTIONS,
    ).save_pretrained(folder)
    return folder


def _eval(json_out: Path, *argv: str) -> dict:
    assert main([*argv, "--workers", "0", "--no-progress", "--json", str(json_out)]) == 0
    return json.loads(json_out.read_text())


def _one_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def flickr_subset(shared_data, tmp_path) -> tuple[Path, Path]:
    """``(captions.csv of the first N_IMAGES images of Flickr8k-1k, its image folder)``."""
    root = shared_data / "flickr8k-1k"
    with open(root / "captions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    kept = list(dict.fromkeys(r["image"] for r in rows))[:N_IMAGES]
    subset = tmp_path / "captions.csv"
    with open(subset, "w", newline="") as f:
        writer = csv.DictWriter(f, ["image", "caption"])
        writer.writeheader()
        writer.writerows(r for r in rows if r["image"] in kept)
    return subset, root / "images"


@pytest.mark.parametrize("per", ["pair", "image"])
def test_retrieval_on_shards_equals_the_csv_they_were_written_from(model, flickr_subset, tmp_path, per):
    captions, images = flickr_subset
    shards = tmp_path / "shards"
    assert main(["shards", "--format", "csv", "--captions", str(captions), "--images", str(images),
                 "--out", str(shards), "--samples-per-shard", "35", "--per", per]) == 0
    assert len(list(shards.glob("*.tar"))) > 1  # an image's pairs may straddle two shards: regrouped by image_id
    common = ["eval", "retrieval", "--model", str(model), "--protocol", "5k"]
    from_csv = _eval(tmp_path / "csv.json", *common, "--format", "csv", "--captions", str(captions),
                     "--images", str(images))
    from_shards = _eval(tmp_path / "wds.json", *common, "--format", "webdataset", "--shards", str(shards))
    assert (from_csv["num_images"], from_csv["num_captions"]) == (N_IMAGES, 5 * N_IMAGES)
    assert from_shards["format"] == "webdataset"
    for key in RECALL_KEYS:
        assert from_shards[key] == pytest.approx(from_csv[key], abs=1e-9), key


def _labelled_folder(root: Path, per_class: int, seed: int, suffix: str = ".png", shape=(20, 24)) -> Path:
    """Class subfolders ``dark/`` and ``light/`` of small images (``suffix``: ``.png`` or ``.jpg``)."""
    rng = np.random.default_rng(seed)
    for label, level in (("dark", 60), ("light", 190)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(level + rng.normal(0, 40, (*shape, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}{suffix}")
    return root


@pytest.fixture
def labelled(tmp_path) -> dict[str, Path]:
    """Labelled train/test folders and the shards ``mmvicreg shards --format folder`` writes from them."""
    out = {}
    for split, per_class, seed in (("train", 8, 0), ("test", 4, 1)):
        folder = _labelled_folder(tmp_path / split, per_class, seed)
        shards = tmp_path / f"{split}-shards"
        assert main(["shards", "--format", "folder", "--images", str(folder), "--out", str(shards),
                     "--samples-per-shard", "5"]) == 0
        out[split], out[f"{split}-shards"] = folder, shards
    return out


def test_knn_on_labelled_shards_equals_the_folders_they_were_written_from(model, labelled, tmp_path):
    common = ["eval", "knn", "--model", str(model), "--k", "3", "5", "--image-branch", "image"]
    from_folder = _eval(tmp_path / "folder.json", *common, "--format", "folder", "--train-images",
                        str(labelled["train"]), "--test-images", str(labelled["test"]))
    from_shards = _eval(tmp_path / "wds.json", *common, "--format", "webdataset", "--train-shards",
                        str(labelled["train-shards"]), "--test-shards", str(labelled["test-shards"]))
    scores = from_folder["results"]["trained"]["image"]
    assert (scores["num_train"], scores["num_test"]) == (16, 8)
    assert from_shards["results"] == from_folder["results"]


def test_shards_that_do_not_fit_the_command_are_one_line(model, labelled, tmp_path, capsys):
    captioned = tmp_path / "captioned"
    assert main(["shards", "--format", "shapes", "--option", "num_images=6", "--option", "size=16",
                 "--out", str(captioned)]) == 0
    knn = ["eval", "knn", "--model", str(model), "--format", "webdataset", "--no-progress", "--workers", "0"]
    err = _one_line(capsys, [*knn, "--train-shards", str(captioned), "--test-shards", str(labelled["test-shards"])])
    assert f"the shards {captioned} do not give every image a label; k-NN and linear probes need labelled" in err
    err = _one_line(capsys, [*knn, "--train-images", str(labelled["train"]), "--test-shards", "x"])
    assert "--format webdataset reads --train-shards only; drop --train-images" in err
    err = _one_line(capsys, [*knn, "--test-shards", str(labelled["test-shards"])])
    assert "--format webdataset needs --train-shards (a folder written by mmvicreg shards" in err
    retrieval = ["eval", "retrieval", "--model", str(model), "--no-progress", "--workers", "0"]
    err = _one_line(capsys, [*retrieval, "--format", "webdataset", "--shards", str(labelled["test-shards"])])
    assert f"the shards {labelled['test-shards']} hold images without captions; retrieval needs" in err
    err = _one_line(capsys, [*retrieval, "--format", "shapes", "--shards", str(captioned)])
    assert "--shards is read by --format webdataset only; --format shapes reads --images / --captions" in err
    err = _one_line(capsys, [*retrieval, "--format", "webdataset", "--shards", str(captioned), "--option",
                             "streaming=true"])
    assert "evaluation reads shards through an index of their tar headers; drop --option streaming" in err


def test_a_wrong_branch_is_named_by_its_flag_in_one_line(model, labelled, tmp_path, capsys):
    knn = ["eval", "knn", "--model", str(model), "--format", "folder", "--train-images", str(labelled["train"]),
           "--test-images", str(labelled["test"]), "--no-progress", "--workers", "0"]
    err = _one_line(capsys, [*knn, "--image-branch", "caption"])
    assert err == ("mmvicreg: error: --image-branch 'caption' is a text branch; k-NN and linear probes score image "
                   "branches: ['image']")
    retrieval = ["eval", "retrieval", "--model", str(model), "--format", "shapes", "--no-progress"]
    err = _one_line(capsys, [*retrieval, "--image-branch", "caption"])
    assert err == "mmvicreg: error: --image-branch 'caption' is a text branch; the model's image branches: ['image']"
    err = _one_line(capsys, [*retrieval, "--text-branch", "nope"])
    assert err == "mmvicreg: error: --text-branch 'nope' is not a branch; the model's text branches: ['caption']"
    shapes = [*retrieval, "--option", "num_images=10", "--option", "size=16", "--text-branch", "caption"]
    result = _eval(tmp_path / "r.json", *[a for a in shapes if a != "--no-progress"])
    assert (result["image_branch"], result["text_branch"]) == ("image", "caption")  # the other: the model's first

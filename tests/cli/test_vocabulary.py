"""One data vocabulary: every caption source names its image folder ``images`` and its caption file
``captions``, in YAML keys, on the command line and in the eval flags alike."""

import json

import pytest

from mmvicreg.cli import main
from tests.helpers import REPO_ROOT

QUICKSTART = str(REPO_ROOT / "examples" / "quickstart.yaml")
SHORT = ["train.max_steps=2", "train.batch_size=32", "train.progress=false", "train.checkpoint_every=2"]


def _karpathy(tmp_path, coco_json, split):
    """A Karpathy split file made from a COCO captions file: every image in ``split``, filepath ``val2017``."""
    coco = json.loads(coco_json.read_text())
    captions = {}
    for a in coco["annotations"]:
        captions.setdefault(a["image_id"], []).append({"raw": a["caption"]})
    images = [{"filename": im["file_name"], "filepath": "val2017", "cocoid": im["id"], "split": split,
               "sentences": captions[im["id"]]} for im in coco["images"] if im["id"] in captions]
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": images}))
    return path


def test_train_on_flickr_csv_and_evaluate_on_coco_with_the_same_two_keys(tmp_path, shared_data, capsys):
    flickr, coco = shared_data / "flickr8k-1k", shared_data / "coco-mini"
    run = tmp_path / "run"
    code = main(["train", QUICKSTART, f"output_dir={run}", *SHORT,
                 "data.train.format=csv", f"data.train.images={flickr / 'images'}",
                 f"data.train.captions={flickr / 'captions.csv'}",
                 "data.eval.format=coco", f"data.eval.images={coco / 'val2017'}",
                 f"data.eval.captions={coco / 'annotations' / 'captions_val2017.json'}"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((run / "eval.json").read_text())
    assert result["num_images"] == 79 and result["num_captions"] == 395  # coco-mini val2017's captioned images
    report = json.loads((run / "data_report.json").read_text())
    assert report["train"]["samples"] == 1000 and report["eval"]["samples"] == 79

    # The exported model evaluated by the eval command with the same names, as flags.
    out = tmp_path / "eval.json"
    code = main(["eval", "retrieval", "--model", str(run / "model"), "--format", "coco",
                 "--images", str(coco / "val2017"), "--captions", str(coco / "annotations" / "captions_val2017.json"),
                 "--json", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    again = json.loads(out.read_text())
    assert again["num_images"] == 79 and again["rsum"] == pytest.approx(result["rsum"], abs=1e-6)


def test_karpathy_takes_the_same_two_keys(tmp_path, shared_data, capsys):
    coco = shared_data / "coco-mini"
    split_file = _karpathy(tmp_path, coco / "annotations" / "captions_val2017.json", "test")
    run = tmp_path / "run"
    code = main(["train", QUICKSTART, f"output_dir={run}", *SHORT, "data.eval=null",
                 "data.train.format=karpathy", "data.train.split=test", f"data.train.images={coco}",
                 f"data.train.captions={split_file}"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((run / "data_report.json").read_text())["train"]["samples"] == 79
    out = tmp_path / "eval.json"
    code = main(["eval", "retrieval", "--model", str(run / "model"), "--format", "karpathy", "--split", "test",
                 "--images", str(coco), "--captions", str(split_file), "--json", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["num_captions"] == 395


@pytest.mark.parametrize("old, new", [("image_root", "images"), ("path", "captions"), ("annotations", "captions")])
def test_the_old_names_are_refused_naming_the_new_one(tmp_path, capsys, old, new):
    code = main(["train", QUICKSTART, f"output_dir={tmp_path}", "data.train.format=csv",
                 f"data.train.{old}=x", "data.eval=null"])
    err = capsys.readouterr().err
    assert code == 2 and f"data.train.{old}" in err and new in err.split(old, 1)[1]

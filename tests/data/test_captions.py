"""Image–caption sources on the real Flickr8k / COCO subsets: counts, samples, evaluation view, every format."""

import csv
import json

import pytest
from PIL import Image

from mmvicreg.data import coco_captions, csv_captions, hf_captions, karpathy_captions
from tests.helpers.sources import caption_dataset, eval_captions, eval_images, image_dataset


def _flickr(shared_data, **kw):
    root = shared_data / "flickr8k-1k"
    return csv_captions(root / "captions.csv", root / "images", **kw)


def _flickr_rows(shared_data):
    with open(shared_data / "flickr8k-1k" / "captions.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("captions")


def test_flickr_csv_gives_5000_pairs_over_1000_images(shared_data):
    src = _flickr(shared_data, pairs="all")
    assert src.num_images == 1000 and src.num_pairs == 5000 and len(src) == 5000
    assert all(len(c) == 5 for c in src.captions)
    assert len(_flickr(shared_data)) == 1000  # default: one sample per image
    flat = [c for caps in src.captions for c in caps]
    assert flat == [r["caption"].strip() for r in _flickr_rows(shared_data)]  # quoted commas parsed as CSV
    assert sum("," in c for c in flat) > 200
    sample = src[7]
    assert set(sample) == {"image", "caption", "image_id"}
    assert isinstance(sample["image"], Image.Image) and sample["image"].mode == "RGB"
    assert sample["image_id"] == src.image_ids[1] and sample["caption"] == src.captions[1][2]


@pytest.mark.parametrize("split,images,captions", [("val", 79, 395), ("train", 80, 400)])
def test_coco_mini_counts_only_captioned_images(shared_data, split, images, captions):
    root = shared_data / "coco-mini"
    src = coco_captions(root / "annotations" / f"captions_{split}2017.json", root / f"{split}2017", pairs="all")
    assert (src.num_images, src.num_pairs, len(src)) == (images, captions, captions)
    data = json.loads((root / "annotations" / f"captions_{split}2017.json").read_text())
    assert src.image_ids == [img["id"] for img in data["images"]]  # the JSON's order, not the folder's
    assert len(list((root / f"{split}2017").glob("*.jpg"))) >= images
    sample = src[0]
    assert sample["image_id"] == data["images"][0]["id"] and sample["image"].mode == "RGB"


def test_eval_set_keeps_images_in_order_with_first_five_captions(shared_data, tmp_path):
    root = shared_data / "coco-mini"
    data = json.loads((root / "annotations" / "captions_val2017.json").read_text())
    first = data["images"][0]["id"]
    for k in range(2):  # a seventh caption for the first image: the protocol keeps five
        data["annotations"].append({"image_id": first, "id": -1 - k, "caption": f"extra {k}"})
    (tmp_path / "c.json").write_text(json.dumps(data))
    src = coco_captions(tmp_path / "c.json", root / "val2017")
    assert len(src.captions[0]) == 7
    ev = src.eval_set()
    assert len(ev) == 79 and len(ev.images) == 79 and ev.image_ids == src.image_ids
    assert all(len(c) == 5 for c in ev.captions) and ev.captions[0] == src.captions[0][:5]
    assert len(ev.flat_captions) == 395 and ev.caption_image_index[:6] == [0, 0, 0, 0, 0, 1]
    assert src.eval_set(max_captions=None).captions[0][-1] == "extra 1"
    assert ev.images[3].size == src.load_image(3).size and ev.images[-1].mode == "RGB"
    assert eval_captions(src, max_captions=2)[0] == src.captions[0][:2] and len(eval_images(src)) == 79
    assert caption_dataset(ev)[5] == {"caption": ev.captions[1][0], "image_index": 1}
    assert image_dataset(ev)[2]["image_id"] == src.image_ids[2]


def test_one_caption_per_image_draws_every_caption_over_time(shared_data):
    src = _flickr(shared_data)
    drawn = {src[0]["caption"] for _ in range(60)}
    assert drawn == set(src.captions[0])


def test_karpathy_json_built_from_flickr_gives_same_counts(shared_data, workdir):
    rows = _flickr_rows(shared_data)
    by_image: dict = {}
    for r in rows:
        by_image.setdefault(r["image"], []).append(r["caption"])
    splits = ["train"] * 600 + ["restval"] * 200 + ["val"] * 100 + ["test"] * 100
    images = [{"filename": name, "imgid": k, "split": splits[k], "sentids": [],
               "sentences": [{"raw": c, "tokens": c.lower().split()} for c in caps]}
              for k, (name, caps) in enumerate(by_image.items())]
    path = workdir / "dataset_flickr8k.json"
    path.write_text(json.dumps({"images": images, "dataset": "flickr8k"}))
    root = shared_data / "flickr8k-1k" / "images"
    counts = {s: karpathy_captions(path, root, s).num_images for s in ("train", "val", "test")}
    assert counts == {"train": 800, "val": 100, "test": 100}
    assert karpathy_captions(path, root, "train", include_restval=False).num_images == 600
    all_pairs = sum(karpathy_captions(path, root, s).num_pairs for s in ("train", "val", "test"))
    assert all_pairs == 5000
    test = karpathy_captions(path, root, "test")
    assert all(len(c) == 5 for c in test.captions) and test.image_ids[0] == 900


def test_karpathy_coco_layout_uses_filepath_and_cocoid(shared_data, tmp_path):
    root = shared_data / "coco-mini"
    images = []
    for split in ("train", "val"):
        data = json.loads((root / "annotations" / f"captions_{split}2017.json").read_text())
        caps: dict = {}
        for a in data["annotations"]:
            caps.setdefault(a["image_id"], []).append(a["caption"])
        images += [{"filepath": f"{split}2017", "filename": im["file_name"], "cocoid": im["id"],
                    "split": "test" if split == "val" else "train",
                    "sentences": [{"raw": c} for c in caps[im["id"]]]} for im in data["images"]]
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": images}))
    train = karpathy_captions(tmp_path / "dataset_coco.json", root, "train")
    test = karpathy_captions(tmp_path / "dataset_coco.json", root, "test")
    assert (train.num_images, train.num_pairs, test.num_images, test.num_pairs) == (80, 400, 79, 395)
    assert test.image_ids[0] == images[80]["cocoid"] and test[0]["image"].mode == "RGB"


def test_hf_saved_to_disk_from_flickr_gives_same_counts(shared_data, workdir):
    import datasets

    rows = _flickr_rows(shared_data)
    by_image: dict = {}
    for r in rows:
        by_image.setdefault(r["image"], []).append(r["caption"])
    root = shared_data / "flickr8k-1k" / "images"
    ds = datasets.Dataset.from_dict(
        {"image": [str(root / k) for k in by_image], "caption": list(by_image.values())}
    ).cast_column("image", datasets.Image())
    ds.save_to_disk(str(workdir / "flickr_hf"))
    src = hf_captions(workdir / "flickr_hf", "train", pairs="all")
    assert (src.num_images, src.num_pairs) == (1000, 5000)
    assert all(len(c) == 5 for c in src.captions)
    assert src[3]["image"].size == Image.open(root / list(by_image)[0]).size
    assert src[3]["caption"] == rows[3]["caption"]


def test_hf_rows_of_pairs_with_path_strings_group_per_image(shared_data, workdir):
    import datasets

    rows = _flickr_rows(shared_data)
    pairs = datasets.Dataset.from_dict({"file": [r["image"] for r in rows], "text": [r["caption"] for r in rows]})
    dd = datasets.DatasetDict({"test": pairs})
    dd.save_to_disk(str(workdir / "pairs_hf"))
    src = hf_captions(workdir / "pairs_hf", "test", image_column="file", caption_column="text",
                      images=shared_data / "flickr8k-1k" / "images")
    assert (src.num_images, src.num_pairs) == (1000, 5000)
    assert src.image_ids[0] == rows[0]["image"] and src[0]["image"].mode == "RGB"
    with pytest.raises(ValueError, match="no split 'train'.*'test'"):
        hf_captions(workdir / "pairs_hf", "train")


def _small_images(shared_data, n=6):
    root = shared_data / "flickr8k-1k"
    rows = _flickr_rows(shared_data)[: 5 * n]
    return root, rows


def test_hf_parquet_and_several_caption_columns(shared_data, tmp_path):
    import datasets

    root, rows = _small_images(shared_data)
    table = {"image": [], **{f"caption_{k}": [] for k in range(5)}}
    for i in range(0, len(rows), 5):
        table["image"].append({"bytes": (root / "images" / rows[i]["image"]).read_bytes(), "path": None})
        for k in range(5):
            table[f"caption_{k}"].append(rows[i + k]["caption"])
    ds = datasets.Dataset.from_dict(table).cast_column("image", datasets.Image())
    ds.to_parquet(str(tmp_path / "flickr.parquet"))
    src = hf_captions(tmp_path / "flickr.parquet", "train", caption_column=[f"caption_{k}" for k in range(5)],
                      cache_dir=tmp_path / "cache", pairs="all")
    assert (src.num_images, src.num_pairs) == (6, 30)
    assert src.captions[1] == [r["caption"] for r in rows[5:10]]
    assert src[0]["image"].mode == "RGB"


def test_hf_imagefolder_with_metadata(shared_data, tmp_path):
    root, rows = _small_images(shared_data)
    folder = tmp_path / "imagefolder" / "train"
    folder.mkdir(parents=True)
    with open(folder / "metadata.jsonl", "w") as f:
        for i in range(0, len(rows), 5):
            name = rows[i]["image"]
            (folder / name).write_bytes((root / "images" / name).read_bytes())
            f.write(json.dumps({"file_name": name, "caption": [r["caption"] for r in rows[i:i + 5]]}) + "\n")
    src = hf_captions(tmp_path / "imagefolder", "train", cache_dir=tmp_path / "cache")
    assert (src.num_images, src.num_pairs) == (6, 30)
    assert src[2]["image"].mode == "RGB"

"""Sources by composition: records + an image store + a bad-data policy; one index list filters records and store."""

import json
import os
import pickle

import pytest
from PIL import Image

from mmvicreg.data import (
    ArrayStore,
    BadDataPolicy,
    CaptionSource,
    FileStore,
    HFColumnStore,
    ImageSource,
    build_source,
    csv_captions,
    hf_captions,
)


@pytest.fixture
def folder(tmp_path):
    """Five PNGs 0.png..4.png and a CSV of two captions each."""
    images = tmp_path / "images"
    images.mkdir()
    for k in range(5):
        Image.new("RGB", (8, 8), (40 * k, 0, 0)).save(images / f"{k}.png")
    rows = ["image,caption"] + [f"{k}.png,picture {k} take {j}" for k in range(5) for j in range(2)]
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_every_format_is_a_caption_or_image_source(folder, shared_data):
    import datasets

    coco = shared_data / "coco-mini"
    data = json.loads((coco / "annotations" / "captions_val2017.json").read_text())
    karpathy = {"images": [{"filename": im["file_name"], "imgid": im["id"], "split": "test",
                            "sentences": [{"raw": "a photo"}]} for im in data["images"][:3]]}
    (folder / "karpathy.json").write_text(json.dumps(karpathy))
    datasets.Dataset.from_dict({"image": [f"{k}.png" for k in range(5)], "caption": ["x"] * 5,
                                "label": [0, 1, 0, 1, 1]}).save_to_disk(str(folder / "hf"))
    captioned = [
        {"format": "coco", "root": str(coco)},
        {"format": "karpathy", "captions": str(folder / "karpathy.json"), "images": str(coco / "val2017")},
        {"format": "csv", "captions": str(folder / "captions.csv"), "images": str(folder / "images")},
        {"format": "hf", "path": str(folder / "hf"), "images": str(folder / "images")},
        {"format": "shapes", "num_images": 5, "size": 16},
    ]
    image_only = [
        {"format": "hf", "path": str(folder / "hf"), "images": str(folder / "images"), "caption_column": None,
         "label_column": "label"},
        {"format": "folder", "images": str(folder / "images")},
        {"format": "digits", "size": 8},
    ]
    for section in captioned:
        src = build_source(section, "val" if section["format"] == "coco" else "test")
        assert isinstance(src, CaptionSource) and not isinstance(src, ImageSource), section
        assert src[0]["image"].mode == "RGB" and isinstance(src[0]["caption"], str)
    for section in image_only:
        src = build_source(section, "test")
        assert isinstance(src, ImageSource) and not isinstance(src, CaptionSource), section
        assert src[0]["image"].mode == "RGB" and isinstance(src[0]["label"], int)


def test_one_index_list_filters_records_and_store_together(folder):
    (folder / "images" / "1.png").unlink()
    lines = (folder / "captions.csv").read_text().splitlines()
    lines[7] = lines[8] = "3.png,"  # both captions of image 3 empty: it has no usable caption
    (folder / "captions.csv").write_text("\n".join(lines) + "\n")
    src = csv_captions(folder / "captions.csv", folder / "images", on_bad_image="skip", on_bad_caption="skip")
    assert src.image_ids == ["0.png", "2.png", "4.png"] and src.kept == [0, 2, 4]
    assert isinstance(src.store, FileStore) and [os.path.basename(p) for p in src.paths] == src.image_ids
    assert src.captions == [["picture 0 take 0", "picture 0 take 1"], ["picture 2 take 0", "picture 2 take 1"],
                            ["picture 4 take 0", "picture 4 take 1"]]
    assert [r for _, r in src.skipped] == ["missing", "no usable caption"]
    assert src.data_report()["skipped_caption_reasons"] == {"empty": 2}
    assert isinstance(src.policy, BadDataPolicy) and src.policy.on_bad_caption == "skip"
    assert src[1]["image"].getpixel((0, 0)) == (80, 0, 0)  # image and caption records stayed aligned


def test_hf_store_subset_keeps_its_rows(folder):
    import datasets

    (folder / "images" / "2.png").unlink()
    datasets.Dataset.from_dict({"file": [f"{k}.png" for k in range(5)], "text": [f"c{k}" for k in range(5)]}) \
        .save_to_disk(str(folder / "hf"))
    src = hf_captions(folder / "hf", image_column="file", caption_column="text", images=folder / "images",
                      on_bad_image="skip")
    assert isinstance(src.store, HFColumnStore) and src.store.rows == [0, 1, 3, 4]
    assert src.image_ids == ["0.png", "1.png", "3.png", "4.png"] and src[2]["caption"] == "c3"
    assert src[2]["image"].getpixel((0, 0)) == (120, 0, 0)


def test_embedded_sources_hold_arrays_and_pickle_for_workers():
    shapes = build_source({"format": "shapes", "num_images": 6, "size": 16}, "test")
    digits = build_source({"format": "digits", "size": 12}, "test")
    for src in (shapes, digits):
        assert isinstance(src.store, ArrayStore)
        again = pickle.loads(pickle.dumps(src))
        assert again.load_image(3).tobytes() == src.load_image(3).tobytes()
    assert shapes.images is shapes.store.arrays and len(shapes.keys) == 6
    assert digits.pixels.shape[1:] == (8, 8) and digits[0]["image"].size == (12, 12)


def test_policy_is_validated_and_reported():
    policy = BadDataPolicy("skip", verify=True)
    assert (policy.on_bad_image, policy.on_bad_caption, policy.verify) == ("skip", "error", True)
    assert policy.skipped == [] and policy.skipped_captions == []
    with pytest.raises(ValueError, match="on_bad_caption must be one of error, skip; got 'drop'"):
        BadDataPolicy(on_bad_caption="drop")


def test_shapes_cache_is_written_whole(tmp_path):
    build_source({"format": "shapes", "num_images": 4, "size": 16, "seed": 9, "cache_dir": str(tmp_path)}, "test")
    assert [p.name for p in tmp_path.iterdir()] == ["shapes-v1-test-4-16px-seed9.npz"]  # no temporary file left

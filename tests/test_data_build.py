"""``build_source``: every format by name, ``{split}`` templates, clear errors for unknown formats and options."""

import pytest

from mmvicreg.data import FORMATS, CaptionSource, ImageSource, build_source


def test_known_formats():
    assert set(FORMATS) == {"coco", "karpathy", "csv", "hf", "folder", "digits", "shapes"}


def test_unknown_format_lists_known_ones():
    with pytest.raises(ValueError, match="unknown data format 'webdataset'; known formats: coco, karpathy, csv"):
        build_source("webdataset", "train")


def test_unknown_option_lists_accepted_ones():
    with pytest.raises(ValueError, match=r"format 'shapes' does not take option\(s\) \['colour'\].*'num_images'"):
        build_source("shapes", "train", colour="red")


def test_coco_by_root_and_by_split_templates(shared_data):
    root = shared_data / "coco-mini"
    by_root = build_source("coco", "val", root=str(root), pairs="all")
    by_template = build_source("coco", "train", annotations=str(root / "annotations/captions_{split}2017.json"),
                               image_root=str(root / "{split}2017"))
    assert (by_root.num_images, len(by_root)) == (79, 395)
    assert (by_template.num_images, by_template.num_pairs) == (80, 400)


def test_csv_and_folder_by_name(shared_data):
    flickr = shared_data / "flickr8k-1k"
    src = build_source("csv", "train", path=str(flickr / "captions.csv"), image_root=str(flickr / "images"))
    assert isinstance(src, CaptionSource) and src.num_pairs == 5000
    folder = build_source("folder", "val", root=str(shared_data / "coco-mini" / "{split}2017"))
    assert isinstance(folder, ImageSource) and len(folder) == 159 and folder.labels[0] == -1  # every JPEG


def test_embedded_and_hf_by_name(tmp_path):
    import datasets
    from PIL import Image

    assert len(build_source("digits", "test", size=12)) == 360
    shapes = build_source("shapes", "test", num_images=20, size=24, seed=1)
    assert shapes.num_images == 20 and shapes[0]["image"].size == (24, 24)
    ds = datasets.Dataset.from_dict({"image": [Image.new("RGB", (4, 4))] * 2, "caption": [["x", "y"], ["z"]],
                                     "label": [0, 1]})
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "hf"))
    captions = build_source("hf", "val", path=str(tmp_path / "hf"), hf_split="validation")
    assert (captions.num_images, captions.num_pairs) == (2, 3)
    images = build_source("hf", "validation", path=str(tmp_path / "hf"), caption_column=None, label_column="label")
    assert isinstance(images, ImageSource) and images.labels == [0, 1]
    with pytest.raises(ValueError, match="caption_column=None"):
        build_source("hf", "validation", path=str(tmp_path / "hf"), label_column="label")


def test_format_options_for_config_validation():
    from mmvicreg.data.build import format_options

    assert format_options("nope") is None
    assert {"split", "annotations", "image_root", "root", "year", "pairs", "on_bad_image"} <= format_options("coco")
    assert {"caption_column", "label_column", "hf_split", "image_column"} <= format_options("hf")
    assert format_options("digits") == {"split", "size", "test_fraction", "seed"}

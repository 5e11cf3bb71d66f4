"""``build_source(section)``: every format by name, ``{split}`` templates, clear errors for unknown formats and
options."""

import pytest

from mmvicreg.choices import DATA_FORMATS
from mmvicreg.data import FORMATS, CaptionSource, ImageSource, build_source
from mmvicreg.data.build import format_options


def test_known_formats():
    assert set(FORMATS) == {"coco", "karpathy", "csv", "hf", "folder", "digits", "shapes", "scenes", "shape_objects", "webdataset"}
    assert FORMATS == DATA_FORMATS and all(format_options(f) is not None for f in DATA_FORMATS)


def test_unknown_format_lists_known_ones():
    with pytest.raises(ValueError, match="unknown data format 'tfrecord'; known formats: coco, karpathy, csv"):
        build_source({"format": "tfrecord"}, "train")


def test_unknown_option_lists_accepted_ones():
    with pytest.raises(ValueError, match=r"format 'shapes' does not take option\(s\) \['colour'\].*'num_images'"):
        build_source({"format": "shapes", "colour": "red"})


def test_coco_by_root_and_by_split_templates(shared_data):
    root = shared_data / "coco-mini"
    by_root = build_source({"format": "coco", "root": str(root), "pairs": "all"}, "val")
    by_template = build_source({"format": "coco", "captions": str(root / "annotations/captions_{split}2017.json"),
                                "images": str(root / "{split}2017")})
    assert (by_root.num_images, len(by_root)) == (79, 395)
    assert (by_template.num_images, by_template.num_pairs) == (80, 400)


def test_csv_and_folder_by_name(shared_data):
    flickr = shared_data / "flickr8k-1k"
    src = build_source({"format": "csv", "captions": str(flickr / "captions.csv"), "images": str(flickr / "images")})
    assert isinstance(src, CaptionSource) and src.num_pairs == 5000
    folder = build_source({"format": "folder", "images": str(shared_data / "coco-mini" / "{split}2017")}, "val")
    assert isinstance(folder, ImageSource) and len(folder) == 159 and folder.labels[0] == -1  # every JPEG


def test_embedded_and_hf_by_name(tmp_path):
    import datasets
    from PIL import Image

    assert len(build_source({"format": "digits", "size": 12}, "test")) == 360
    shapes = build_source({"format": "shapes", "num_images": 20, "size": 24, "seed": 1}, "test")
    assert shapes.num_images == 20 and shapes[0]["image"].size == (24, 24)
    ds = datasets.Dataset.from_dict({"image": [Image.new("RGB", (4, 4))] * 2, "caption": [["x", "y"], ["z"]],
                                     "label": [0, 1]})
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "hf"))
    captions = build_source({"format": "hf", "path": str(tmp_path / "hf"), "hf_split": "validation"}, "val")
    assert (captions.num_images, captions.num_pairs) == (2, 3)
    images = build_source({"format": "hf", "path": str(tmp_path / "hf"), "caption_column": None,
                           "label_column": "label"}, "validation")
    assert isinstance(images, ImageSource) and images.labels == [0, 1]
    with pytest.raises(ValueError, match="caption_column=None"):
        build_source({"format": "hf", "path": str(tmp_path / "hf"), "label_column": "label"}, "validation")


def test_format_options_for_config_validation():
    assert format_options("nope") is None
    assert {"split", "captions", "images", "root", "year", "pairs", "on_bad_image"} <= format_options("coco")
    assert {"caption_column", "label_column", "hf_split", "image_column"} <= format_options("hf")
    assert format_options("digits") == {"split", "size", "test_fraction", "seed", "labels", "classes"}


def test_one_vocabulary_for_files_and_folders():
    """Every caption format names its caption file ``captions`` and its image folder ``images``; hf keeps path."""
    for fmt in ("coco", "karpathy", "csv"):
        assert {"captions", "images"} <= format_options(fmt) and not {"annotations", "image_root", "path"} & \
            format_options(fmt)
    assert {"path", "images"} <= format_options("hf") and "image_root" not in format_options("hf")
    assert format_options("folder") == {"split", "images", "on_bad_image", "verify", "extensions", "classes"}


def test_section_split_wins_and_section_is_not_changed():
    section = {"format": "shapes", "split": "val", "num_images": 10, "size": 16}
    src = build_source(section, "train")
    assert src.name == "shapes:val" and section == {"format": "shapes", "split": "val", "num_images": 10, "size": 16}
    assert build_source({"format": "shapes", "num_images": 10, "size": 16}, "test").name == "shapes:test"
    with pytest.raises(ValueError, match="a data section needs a format; known formats: coco"):
        build_source({"num_images": 10})
    with pytest.raises(ValueError, match="format 'csv' needs the option\\(s\\) captions"):
        build_source({"format": "csv"})

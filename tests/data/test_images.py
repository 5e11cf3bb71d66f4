"""Image-only sources: the embedded digits, an image folder with class subfolders, a Hugging Face image dataset."""

import numpy as np
import pytest
from PIL import Image

from mmvicreg.data import DigitsSource, FolderImages, hf_images


def test_digits_split_is_deterministic_disjoint_and_complete():
    train, test = DigitsSource("train", size=16), DigitsSource("test", size=16)
    assert len(train) + len(test) == 1797 and len(test) == 360
    assert train.classes == [str(d) for d in range(10)]
    assert np.bincount(test.labels).min() >= 35  # stratified: every digit in the test split
    assert np.array_equal(DigitsSource("test").pixels, test.pixels)
    train_rows = {p.tobytes() for p in train.pixels}
    assert not any(p.tobytes() in train_rows for p in test.pixels)
    sample = test[0]
    assert set(sample) == {"image", "label"} and sample["label"] == test.labels[0]
    assert sample["image"].size == (16, 16) and sample["image"].mode == "RGB"
    assert DigitsSource("train", size=8)[0]["image"].size == (8, 8)
    with pytest.raises(ValueError, match="unknown digits split 'val'"):
        DigitsSource("val")


def test_folder_subfolders_become_sorted_labels(tmp_path):
    for cls, n in (("zebra", 2), ("ant", 3)):
        (tmp_path / cls).mkdir()
        for k in range(n):
            Image.new("L", (10, 6), 40 * k).save(tmp_path / cls / f"{k}.png")
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    src = FolderImages(tmp_path)
    assert src.classes == ["ant", "zebra"] and src.labels == [0, 0, 0, 1, 1]
    sample = src[4]
    assert sample["label"] == 1 and sample["image"].mode == "RGB" and sample["image"].size == (10, 6)


def test_folder_without_subfolders_is_unlabelled(tmp_path):
    for k in range(3):
        Image.new("RGB", (4, 4)).save(tmp_path / f"{k}.jpg")
    src = FolderImages(tmp_path)
    assert src.labels == [-1, -1, -1] and src.classes == []


def test_hf_images_with_class_labels_and_without(tmp_path):
    import datasets

    images = [Image.new("RGB", (6, 6), (30 * k, 0, 0)) for k in range(4)]
    ds = datasets.Dataset.from_dict(
        {"img": images, "label": [1, 0, 1, 1], "kind": ["b", "a", "b", "b"]},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"]),
                                    "kind": datasets.Value("string")}),
    )
    ds.save_to_disk(str(tmp_path / "hf"))
    src = hf_images(tmp_path / "hf", image_column="img", label_column="label")
    assert src.labels == [1, 0, 1, 1] and src.classes == ["cat", "dog"]
    assert src[2]["image"].getpixel((0, 0)) == (60, 0, 0)
    by_string = hf_images(tmp_path / "hf", image_column="img", label_column="kind")
    assert by_string.labels == [1, 0, 1, 1] and by_string.classes == ["a", "b"]
    assert hf_images(tmp_path / "hf", image_column="img").labels == [-1] * 4

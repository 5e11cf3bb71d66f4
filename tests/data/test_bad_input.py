"""Bad input gives one clear error naming the file and the fix; ``on_bad_image="skip"`` leaves out and reports."""

import json
import logging

import pytest
import torch
from PIL import Image

from mmvicreg.data import (
    BadImageError,
    FolderImages,
    build_source,
    coco_captions,
    csv_captions,
    hf_captions,
    karpathy_captions,
    make_loader,
)


@pytest.fixture
def tiny(tmp_path):
    """Four JPEGs a.jpg..d.jpg, a CSV of two captions each, and a COCO JSON of the same."""
    images = tmp_path / "images"
    images.mkdir()
    names = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    for k, name in enumerate(names):
        Image.new("RGB", (20, 16), (60 * k, 90, 200)).save(images / name)
    rows = ["image,caption"] + [f'{n},"a picture, number {k}"' for n in names for k in range(2)]
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    coco = {"images": [{"id": k, "file_name": n} for k, n in enumerate(names)],
            "annotations": [{"id": 10 * k + j, "image_id": k, "caption": f"c{j}"} for k in range(4) for j in range(2)]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    return tmp_path


def _clean(exc: BaseException) -> None:
    """The error is the one the user sees: PIL's or pandas' exception is not chained under it."""
    assert exc.__cause__ is None and exc.__suppress_context__


def _corrupt(path):
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG" * 3)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("make", [
    lambda p: csv_captions(p / "missing.csv", p / "images"),
    lambda p: coco_captions(p / "missing.json", p / "images"),
    lambda p: karpathy_captions(p / "missing.json", p / "images", "test"),
    lambda p: build_source({"format": "csv", "captions": str(p / "missing.csv")}),
])
def test_missing_caption_file_names_the_path(tiny, make):
    with pytest.raises(FileNotFoundError, match=r"missing\.(csv|json) does not exist; pass"):
        make(tiny)


def test_coco_json_without_annotations(tiny):
    (tiny / "bad.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}]}))
    with pytest.raises(ValueError, match=r"bad\.json is not a COCO captions file.*'annotations'.*found \['images'\]"):
        coco_captions(tiny / "bad.json", tiny / "images")


def test_invalid_json_names_the_file(tiny):
    (tiny / "broken.json").write_text('{"images": [')
    with pytest.raises(ValueError, match=r"broken\.json is not valid JSON") as info:
        coco_captions(tiny / "broken.json", tiny / "images")
    _clean(info.value)


def test_csv_without_the_named_column(tiny):
    with pytest.raises(ValueError, match=r"captions\.csv has no caption column 'title'.*\['image', 'caption'\]"):
        csv_captions(tiny / "captions.csv", tiny / "images", caption_column="title")
    with pytest.raises(ValueError, match=r"no image column 'filepath'.*sep"):
        csv_captions(tiny / "captions.csv", tiny / "images", image_column="filepath", sep="\t")


def test_tsv_open_clip_layout(tiny):
    lines = ["filepath\ttitle"] + [f"{tiny / 'images' / n}\ta caption of {n}" for n in ("a.jpg", "b.jpg")]
    (tiny / "train.tsv").write_text("\n".join(lines) + "\n")
    src = csv_captions(tiny / "train.tsv", image_column="filepath", caption_column="title")  # sep from suffix
    assert (src.num_images, src.num_pairs) == (2, 2) and src[1]["caption"] == "a caption of b.jpg"


def test_hf_missing_columns_name_the_columns(tiny):
    import datasets

    datasets.Dataset.from_dict({"img": ["a.jpg"], "text": ["x"]}).save_to_disk(str(tiny / "hf"))
    with pytest.raises(ValueError, match=r"no image column 'image'.*\['img', 'text'\]"):
        hf_captions(tiny / "hf")
    with pytest.raises(ValueError, match=r"no caption column 'caption'"):
        hf_captions(tiny / "hf", image_column="img", images=tiny / "images")


def test_karpathy_split_errors(tiny):
    (tiny / "k.json").write_text(json.dumps({"images": [
        {"filename": "a.jpg", "split": "train", "sentences": [{"raw": "x"}]}]}))
    with pytest.raises(ValueError, match="no image in split 'test'; splits present: train"):
        karpathy_captions(tiny / "k.json", tiny / "images", "test")
    with pytest.raises(ValueError, match="unknown Karpathy split 'dev'"):
        karpathy_captions(tiny / "k.json", tiny / "images", "dev")


@pytest.mark.parametrize("fmt", ["csv", "coco"])
def test_image_listed_but_missing(tiny, fmt, caplog):
    (tiny / "images" / "c.jpg").unlink()
    make = (lambda **kw: csv_captions(tiny / "captions.csv", tiny / "images", **kw)) if fmt == "csv" else \
        (lambda **kw: coco_captions(tiny / "coco.json", tiny / "images", **kw))
    with pytest.raises(FileNotFoundError, match=r"1 of 4 images .*c\.jpg.*images=.*on_bad_image='skip'"):
        make()
    with caplog.at_level(logging.WARNING, logger="mmvicreg.data"):
        src = make(on_bad_image="skip")
    assert src.num_skipped == 1 and src.skipped[0][0].endswith("c.jpg") and src.skipped[0][1] == "missing"
    assert (src.num_images, src.num_pairs) == (3, 6)
    assert "skipped 1 of 4 images" in caplog.text


@pytest.mark.parametrize("damage", [_corrupt, _truncate])
def test_corrupt_jpeg_error_names_the_file(tiny, damage):
    damage(tiny / "images" / "b.jpg")
    src = csv_captions(tiny / "captions.csv", tiny / "images")  # found when loaded, unless verify=True
    with pytest.raises(BadImageError, match=r"cannot decode image .*b\.jpg.*on_bad_image='skip'") as info:
        src.load_image(1)
    assert isinstance(info.value, ValueError)
    _clean(info.value)
    with pytest.raises(BadImageError, match=r"b\.jpg"):
        src[1]
    with pytest.raises(BadImageError, match=r"1 of 4 images .*b\.jpg \(corrupt\)"):
        csv_captions(tiny / "captions.csv", tiny / "images", verify=True)


def test_corrupt_jpeg_skipped_when_verified(tiny, caplog):
    _corrupt(tiny / "images" / "b.jpg")
    with caplog.at_level(logging.WARNING, logger="mmvicreg.data"):
        src = csv_captions(tiny / "captions.csv", tiny / "images", on_bad_image="skip", verify=True)
    assert src.num_skipped == 1 and src.num_images == 3 and "b.jpg" not in src.image_ids
    assert "skipped 1 of 4 images (corrupt)" in caplog.text
    assert len(src.eval_set().images) == 3 and src.eval_set().images[1].mode == "RGB"


def test_corrupt_jpeg_skipped_while_training(tiny, caplog):
    _corrupt(tiny / "images" / "b.jpg")
    src = csv_captions(tiny / "captions.csv", tiny / "images", on_bad_image="skip", pairs="all")
    with caplog.at_level(logging.WARNING, logger="mmvicreg.data"):
        sample = src[2]  # first caption of b.jpg: replaced by the next good image
        assert sample["image_id"] == "c.jpg" and sample["caption"].startswith("a picture")
        ids = [src[i]["image_id"] for i in range(len(src))]
    assert "b.jpg" not in ids and src.num_skipped == 1  # counted once, remembered afterwards
    assert src.skipped[0][0].endswith("b.jpg") and src.skipped[0][1] == "corrupt"
    assert "skipped image 1" in caplog.text and "b.jpg" in caplog.text
    batches = list(make_loader(src, {"img": ("image", lambda im: torch.zeros(1), None)}, batch_size=2, train=True))
    assert len(batches) == 4


def test_skip_policy_is_validated(tiny):
    with pytest.raises(ValueError, match="on_bad_image must be one of error, skip"):
        csv_captions(tiny / "captions.csv", tiny / "images", on_bad_image="ignore")


def test_image_folder_missing_and_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image folder .*nowhere does not exist"):
        FolderImages(tmp_path / "nowhere")
    for cls in ("cat", "dog"):
        (tmp_path / "f" / cls).mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (8, 8)).save(tmp_path / "f" / cls / f"{k}.png")
    _corrupt(tmp_path / "f" / "dog" / "0.png")
    with pytest.raises(BadImageError, match=r"dog/0\.png"):
        FolderImages(tmp_path / "f", verify=True)
    src = FolderImages(tmp_path / "f", verify=True, on_bad_image="skip")
    assert src.num_skipped == 1 and src.labels == [0, 0, 1]

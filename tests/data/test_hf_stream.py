"""``format: hf`` streamed (``HFStreamSource``): parquet files as shards of the epoch plan, rows read back exactly,
every row once per epoch over ranks and workers, bad rows under both policies, file resolution and its errors."""

import csv
import io
from collections import Counter

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from mmvicreg.data.batching import Preprocessor
from mmvicreg.data.build import build_source
from mmvicreg.data.protocols import StreamedSource
from mmvicreg.data.sources import BadImageError
from mmvicreg.data.sources.hf_stream import HFStreamSource
from mmvicreg.data.sources.shards import BadDataCounts
from mmvicreg.data.streaming import StreamDataset, StreamLoader
from tests.conftest import SHARED_DATA

FLICKR = SHARED_DATA / "flickr8k-1k"
SKIP = {"on_bad_image": "skip", "on_bad_caption": "skip"}


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def _write(rows: dict, folder, parts: int = 3, features=None, name: str = "part") -> list[tuple[int, int]]:
    """``rows`` as ``parts`` parquet files in ``folder``; returns each file's (first, end) row range."""
    ds = datasets.Dataset.from_dict(rows, features=features)
    bounds = np.linspace(0, len(ds), parts + 1).astype(int)
    ranges = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
    folder.mkdir(parents=True, exist_ok=True)
    for k, (a, b) in enumerate(ranges):
        ds.select(range(a, b)).to_parquet(str(folder / f"{name}-{k}.parquet"))
    return ranges


IMAGE_FEATURES = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"),
                                    "id": datasets.Value("int64")})


@pytest.fixture(scope="module")
def shapes_case(tmp_path_factory):
    """(folder, file ranges, expected samples by original row) for 40 shapes scenes (PNG bytes, one caption)."""
    shapes = build_source({"format": "shapes", "split": "train", "num_images": 40, "size": 32})
    folder = tmp_path_factory.mktemp("hf") / "shapes"
    rows = {"image": [{"bytes": _png(a), "path": None} for a in shapes.images],
            "caption": [c[0] for c in shapes.captions], "id": list(range(len(shapes.images)))}
    ranges = _write(rows, folder, features=IMAGE_FEATURES)
    expected = [(np.asarray(a), [c[0]]) for a, c in zip(shapes.images, shapes.captions)]
    return folder, ranges, expected


@pytest.fixture(scope="module")
def flickr_case(tmp_path_factory):
    """The first 50 flickr8k-1k photos (their JPEG bytes) with their five captions each, as a list cell."""
    if not (FLICKR / "captions.csv").is_file():
        pytest.skip(f"the flickr8k-1k subset is absent (looked in {FLICKR}); it comes with ../shared/data")
    captions: dict[str, list[str]] = {}
    with open(FLICKR / "captions.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["image"] in captions or len(captions) < 50:
                captions.setdefault(row["image"], []).append(row["caption"].strip())
    names = list(captions)[:50]
    folder = tmp_path_factory.mktemp("hf") / "flickr"
    rows = {"image": [{"bytes": (FLICKR / "images" / n).read_bytes(), "path": None} for n in names],
            "caption": [captions[n] for n in names], "id": list(range(len(names)))}
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string")),
                                  "id": datasets.Value("int64")})
    ranges = _write(rows, folder, features=features)
    expected = []
    for n in names:
        with Image.open(FLICKR / "images" / n) as img:
            expected.append((np.asarray(img.convert("RGB")), captions[n]))
    return folder, ranges, expected


@pytest.fixture(params=["shapes", "flickr"])
def case(request):
    return request.getfixturevalue(f"{request.param}_case")


def _small(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image.resize((8, 8)))).permute(2, 0, 1).float()


def _loader(source, rank: int, world: int, workers: int, global_batch: int = 10) -> StreamLoader:
    dataset = StreamDataset(source, {"image": Preprocessor("image", _small, None)}, global_batch, seed=7, rank=rank,
                            world=world, workers=workers, extra_fields=("key",))
    return StreamLoader(dataset, workers)


# ------------------------------------------------------------------------------------------ reading rows


def test_sizes_rows_and_decoded_samples_equal_the_data(case):
    folder, ranges, expected = case
    source = HFStreamSource("train", folder, shuffle_buffer=4)
    assert source.sizes == [b - a for a, b in ranges] and len(source) == len(expected)
    assert source.name == f"hf-stream:{folder} (3 files)" and isinstance(source, StreamedSource)
    for shard, (a, b) in enumerate(ranges):
        samples = [source.decode(raw, source.new_counts()) for raw in source.raw_samples(shard, 2, b - a - 1)]
        assert [s["key"] for s in samples] == [f"{shard}:{r}" for r in range(2, b - a - 1)]  # rows 2..end-2
        for row, sample in enumerate(samples, start=a + 2):
            image, captions = expected[row]  # the content of that very row
            assert np.array_equal(np.asarray(sample["image"]), image) and sample["image"].mode == "RGB"
            assert sample["caption"] == captions[0] and sample["captions"] == captions
    assert list(source.raw_samples(0, 3, 3)) == []
    assert list(source.iter_captions()) == [c for _, caps in expected for c in caps]


def test_iter_captions_reads_only_the_caption_column(shapes_case, monkeypatch):
    folder, _, expected = shapes_case
    source = HFStreamSource("train", folder)
    asked = []
    stream = source.stream
    monkeypatch.setattr(source, "stream", lambda files, columns: asked.append(list(columns)) or stream(files, columns))
    assert len(list(source.iter_captions())) == len(expected) and asked == [["caption"]]


@pytest.mark.parametrize("workers", [0, 2])
def test_every_row_is_read_once_per_epoch_over_ranks_and_workers(case, workers):
    folder, ranges, expected = case
    world = 2
    sources = [HFStreamSource("train", folder, shuffle_buffer=6) for _ in range(world)]
    every = {f"{k}:{r}" for k, (a, b) in enumerate(ranges) for r in range(b - a)}
    for epoch in (0, 1):
        keys: Counter = Counter()
        steps = []
        for rank, source in enumerate(sources):
            loader = _loader(source, rank, world, workers)
            loader.set_epoch(epoch)
            batches = list(loader)
            steps.append(len(batches))
            for batch in batches:
                assert batch["image"].shape == (5, 3, 8, 8)
                keys.update(batch["key"])
        assert steps == [len(expected) // 10] * world  # every rank steps together
        assert set(keys) == every and set(keys.values()) == {1}  # 40 / 50 rows: 10 a global batch, none dropped
    assert all(s.counts.total == 0 for s in sources)


# ------------------------------------------------------------------------------------------ bad rows


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    arrays = [np.full((8, 8, 3), 30 * k, np.uint8) for k in range(8)]
    images = [{"bytes": _png(a), "path": None} for a in arrays]
    images[2] = {"bytes": b"\x89PNG not really", "path": None}
    captions = [f"a grey square number {k}" for k in range(8)]
    captions[5] = "   "
    folder = tmp_path_factory.mktemp("hf") / "bad"
    _write({"image": images, "caption": captions, "id": list(range(8))}, folder, parts=1, features=IMAGE_FEATURES)
    return folder


def test_bad_rows_are_counted_under_skip(bad_folder):
    source = HFStreamSource("train", bad_folder, shuffle_buffer=0, **SKIP)
    counts = BadDataCounts()
    decoded = [source.decode(raw, counts) for raw in source.raw_samples(0, 0, 8)]
    assert [k for k, s in enumerate(decoded) if s is None] == [2, 5]
    assert counts.as_dict() == {"corrupt image": 1, "empty caption": 1}
    loader = _loader(source, 0, 1, 0, global_batch=4)
    keys = [k for batch in loader for k in batch["key"]]
    assert len(keys) == 8 and not {"0:2", "0:5"} & set(keys)  # their places taken by good rows of their batch
    report = source.data_report()
    assert (report["skipped_images"], report["skipped_captions"], report["samples"]) == (1, 1, 8)
    assert report["skipped_image_reasons"] == {"corrupt image": 1}


def test_bad_rows_raise_one_line_under_error(bad_folder):
    source = HFStreamSource("train", bad_folder)
    raws = list(source.raw_samples(0, 0, 8))
    with pytest.raises(BadImageError) as image_error:
        source.decode(raws[2], source.new_counts())
    with pytest.raises(ValueError) as caption_error:
        source.decode(raws[5], source.new_counts())
    for exc, reason, option in ((image_error, "corrupt image", "on_bad_image"),
                                (caption_error, "empty caption", "on_bad_caption")):
        message = str(exc.value)
        assert "\n" not in message and reason in message and option in message and "row " in message
    assert HFStreamSource("train", bad_folder, on_bad_image="skip").decode(raws[2], BadDataCounts()) is None


def test_a_file_shorter_than_its_size_pads_with_missing_rows(shapes_case):
    folder, _, _ = shapes_case
    source = HFStreamSource("train", folder, **SKIP)
    source.sizes[0] += 2  # as if the file lost rows after the plan was made
    n = source.sizes[0]
    raws = list(source.raw_samples(0, n - 4, n))
    counts = BadDataCounts()
    assert [source.decode(r, counts) is None for r in raws] == [False, False, True, True]
    assert counts.as_dict() == {"truncated shard": 2}
    with pytest.raises(ValueError, match="fewer rows than its parquet metadata"):
        HFStreamSource("train", folder).decode(raws[-1], BadDataCounts())


# ------------------------------------------------------------------------------------------ files and options


def test_split_names_data_files_and_labels(tmp_path):
    rows = {"image": [{"bytes": _png(np.zeros((4, 4, 3), np.uint8)), "path": None}] * 6,
            "caption": [f"caption {k}" for k in range(6)], "kind": ["dog", "cat", "dog", "ant", None, "cat"]}
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"),
                                  "kind": datasets.Value("string")})
    _write(rows, tmp_path / "data", parts=2, features=features, name="train")
    _write(rows, tmp_path / "data", parts=1, features=features, name="test")
    assert HFStreamSource("train", tmp_path).sizes == [3, 3]
    assert HFStreamSource("train", tmp_path, hf_split="test").sizes == [6]
    with pytest.raises(ValueError, match="no parquet files of split 'validation'"):
        HFStreamSource("validation", tmp_path)
    listed = HFStreamSource("train", tmp_path, data_files=["data/test-0.parquet", "data/train-1.parquet"])
    assert listed.sizes == [6, 3]
    by_split = HFStreamSource("val", tmp_path / "data", data_files={"val": "train-*.parquet"})
    assert by_split.sizes == [3, 3]
    labelled = HFStreamSource("train", tmp_path, hf_split="test", caption_column=None, label_column="kind")
    assert labelled.classes == ["ant", "cat", "dog"]
    samples = [labelled.decode(r, BadDataCounts()) for r in labelled.raw_samples(0, 0, 6)]
    assert [s["label"] for s in samples] == [2, 1, 2, 0, -1, 1] and "caption" not in samples[0]
    assert list(labelled.iter_captions()) == []


def test_image_paths_relative_to_images(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(3):
        Image.new("RGB", (6, 4), (40 * k, 0, 0)).save(folder / f"{k}.png")
    rows = {"file": ["0.png", "1.png", "gone.png", "2.png"], "text": ["one", "two", "three", "four"]}
    _write(rows, tmp_path / "table", parts=2)
    source = HFStreamSource("train", tmp_path / "table", image_column="file", caption_column="text", images=folder,
                            on_bad_image="skip")
    counts = BadDataCounts()
    samples = [source.decode(r, counts) for shard in (0, 1) for r in source.raw_samples(shard, 0, 2)]
    assert [s and s["image"].getpixel((0, 0))[0] for s in samples] == [0, 40, None, 80]
    assert counts.as_dict() == {"no image": 1}
    with pytest.raises(BadImageError, match="no image .*gone.png"):
        HFStreamSource("train", tmp_path / "table", image_column="file", caption_column="text",
                       images=folder).decode(list(source.raw_samples(1, 0, 1))[0], BadDataCounts())


def test_inputs_it_cannot_stream_raise_one_clear_line(shapes_case, tmp_path, monkeypatch):
    folder, _, _ = shapes_case
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"caption": ["a", "b"]}).save_to_disk(str(saved))
    cases = [
        (dict(path=saved), "holds no parquet files"),
        (dict(path=tmp_path / "nowhere" / "data"), "does not exist"),
        (dict(path=folder, data_files=["*.csv"]), "matches no file"),
        (dict(path=folder, caption_column="text"), "no caption column 'text'"),
        (dict(path=folder, caption_column="caption", label_column="id"), "label_column is for image-only"),
        (dict(path=folder, image_column="id"), "neither images, bytes nor paths"),
    ]
    (tmp_path / "captions.csv").write_text("image,caption\na.jpg,a dog\n")
    cases.append((dict(path=None, data_files=str(tmp_path / "captions.csv")), "streaming: true reads parquet"))
    for kwargs, expected in cases:
        with pytest.raises(ValueError) as exc:
            HFStreamSource("train", **kwargs)
        assert expected in str(exc.value) and "\n" not in str(exc.value), (kwargs, str(exc.value))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError) as exc:
        HFStreamSource("train", "someone/some-dataset")
    message = str(exc.value)
    assert "'someone/some-dataset'" in message and "must be local" in message and "\n" not in message


def test_training_on_a_streamed_hf_dataset(flickr_case, tmp_path):
    """The acceptance run: parquet files built from the flickr8k-1k files train the quickstart towers streamed."""
    import json

    from mmvicreg.config import load_config
    from mmvicreg.data.build import format_options
    from mmvicreg.train import train

    folder, _, _ = flickr_case
    tree = {
        "output_dir": str(tmp_path / "run"),
        "branches": {"image": {"encoder": "test_resnet", "expander": "64-64",
                               "transform": {"train": "vicreg_view1", "eval": "eval", "size": 32}},
                     "caption": {"encoder": {"name": "gru", "word_dim": 16, "hidden_dim": 32}, "expander": "64-64"}},
        "data": {"train": {"format": "hf", "path": str(folder), "streaming": True, "shuffle_buffer": 20},
                 "workers": 2},
        "train": {"batch_size": 16, "max_steps": 4, "checkpoint_every": 4, "progress": False, "log_every": 1},
    }
    train(load_config(tree, format_keys=format_options))
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())["train"]
    assert report["samples"] == 50 and report["source"].startswith("hf-stream:")

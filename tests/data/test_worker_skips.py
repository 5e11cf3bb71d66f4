"""Issue 24: the data report counts every image skipped at load time, in every DataLoader worker and every rank.

A worker's skips travel back with the batch it made and the main process's source records them (each image once),
so ``data_report()`` is the same with 0 and 2 workers; ``merge_reports`` totals the ranks of a data-parallel run
without counting twice what every rank left out when it built the source.
"""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from mmvicreg.data import EpochBatchSampler, csv_captions, make_loader, merge_reports
from mmvicreg.data.batching import SKIPPED_KEY
from mmvicreg.data.sources.shards import BadDataCounts
from mmvicreg.data.transforms import build_transform

N_GOOD, GARBAGE, TRUNCATED = 7, ("b", "e", "h"), ("d", "k")  # 12 listed images, 5 of them corrupt


def _jpeg(rng) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def corrupt(tmp_path):
    """12 captioned JPEGs a..l: three are not JPEGs (the header fails), two are cut in half (the decode fails);
    the CSV also lists a 13th image that does not exist (left out when the source is built)."""
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = ["image,caption"]
    for name in "abcdefghijkl":
        data = _jpeg(rng)
        if name in GARBAGE:
            data = b"\xff\xd8\xff\xe0 this is not really a JPEG" * 3
        elif name in TRUNCATED:
            data = data[: len(data) // 2]
        (tmp_path / "images" / f"{name}.jpg").write_bytes(data)
        rows.append(f"{name}.jpg,a photo {name}")
    rows.append("zz.jpg,an image that is not there")
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def _source(folder):
    return csv_captions(folder / "captions.csv", folder / "images", on_bad_image="skip")


def _flat(image):
    """A picklable non-decoding transform (the loader then hands it decoded PIL images)."""
    return torch.zeros(1)


PREPROCESSORS = {
    "encoded": {"img": ("image", build_transform("eval", 16), None)},  # decodes in the transform (late failure)
    "decoded": {"img": ("image", _flat, None)},  # the source decodes (failure at load)
}


@pytest.mark.parametrize("path", sorted(PREPROCESSORS))
def test_worker_skips_are_in_the_main_process_report(corrupt, path):
    reports = {}
    for workers in (0, 2):
        source = _source(corrupt)
        batches = list(make_loader(source, PREPROCESSORS[path], batch_size=4, train=False, workers=workers))
        assert all(SKIPPED_KEY not in batch for batch in batches)
        assert sum(len(batch["img"]) for batch in batches) == 12
        reports[workers] = source.data_report()
    assert reports[2] == reports[0]
    assert reports[0]["skipped_images"] == 6  # 5 corrupt at load time + 1 missing at build time
    assert reports[0]["skipped_image_reasons"] == {"missing": 1, "corrupt": 5}
    assert sorted(image.rsplit("/", 1)[-1] for image, _ in reports[0]["skipped_while_loading"]) == \
        [f"{n}.jpg" for n in sorted(GARBAGE + TRUNCATED)]


def test_a_second_epoch_counts_nothing_twice(corrupt):
    source = _source(corrupt)
    loader = make_loader(source, PREPROCESSORS["encoded"], batch_size=4, train=False, workers=2,
                         persistent_workers=True)
    for _ in range(2):
        assert len(list(loader)) == 3
    assert source.data_report()["skipped_images"] == 6


def _rank_report(folder, rank, world, epochs):
    """One data-parallel process: its own source, its slice of every global batch (the training path)."""
    source = _source(folder)
    sampler = EpochBatchSampler(len(source), 4, seed=0, rank=rank, world=world)
    loader = make_loader(source, PREPROCESSORS["encoded"], batch_sampler=sampler, workers=0)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        list(loader)
    return source.data_report()


def test_merge_reports_totals_ranks_once_per_image(corrupt):
    single = _rank_report(corrupt, 0, 1, epochs=1)
    ranks = [_rank_report(corrupt, rank, 2, epochs=3) for rank in range(2)]
    assert sum(r["skipped_images"] for r in ranks) > single["skipped_images"]  # a plain sum would count twice
    merged = merge_reports(ranks)
    assert merged["skipped_images"] == single["skipped_images"] == 6
    assert merged["skipped_image_reasons"] == single["skipped_image_reasons"] == {"missing": 1, "corrupt": 5}
    assert merged["samples"] == single["samples"] and merged["source"] == single["source"]
    assert merge_reports([single]) == single


def test_merge_reports_adds_streamed_counts_and_refuses_mixed_sources():
    a = BadDataCounts({"corrupt image": 2, "empty caption": 1}).report("webdataset:2 shards", 100)
    b = BadDataCounts({"corrupt image": 1, "no image": 1}).report("webdataset:2 shards", 100)
    merged = merge_reports([a, b])
    assert merged["skipped_images"] == 4 and merged["skipped_captions"] == 1 and merged["samples"] == 100
    assert merged["skipped_image_reasons"] == {"corrupt image": 3, "no image": 1}
    with pytest.raises(ValueError, match="needs at least one data report"):
        merge_reports([])
    with pytest.raises(ValueError, match="different sources"):
        merge_reports([a, {**b, "source": "other"}])

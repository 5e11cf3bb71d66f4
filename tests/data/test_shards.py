"""Webdataset shards: the library's sources written as shards and read back exactly; listing, sizes, skip,
bad samples under both policies, truncated shards, and the ``mmvicreg shards`` command."""

import io
import itertools
import json
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from webdataset import TarWriter

from mmvicreg.cli import main
from mmvicreg.data.build import build_source
from mmvicreg.data.sources import BadDataPolicy, BadImageError
from mmvicreg.data.sources.shards import (
    BadDataCounts,
    count_samples,
    decode_sample,
    expand_shards,
    read_shard,
    shard_sizes,
)
from mmvicreg.data.sources.shard_writer import write_shards

SKIP = BadDataPolicy(on_bad_image="skip", on_bad_caption="skip")


@pytest.fixture(scope="module")
def shapes():
    return build_source({"format": "shapes", "split": "train", "num_images": 40, "size": 32})


@pytest.fixture(scope="module")
def shapes_shards(shapes, tmp_path_factory):
    return write_shards(shapes, tmp_path_factory.mktemp("shapes") / "shards", samples_per_shard=16)


def _raws(spec, **kw):
    return [raw for url in expand_shards(spec) for raw in read_shard(url, **kw)]


def _jpeg(colour=(200, 40, 40), size=(24, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _pairs_of(source):
    """``{pair index: (image index, caption index)}`` in the order ``pairs="all"`` numbers them."""
    pairs = [(i, j) for i, caps in enumerate(source.captions) for j in range(len(caps))]
    return dict(enumerate(pairs))


# ------------------------------------------------------------------------------------------ round trips


def test_shapes_pairs_round_trip_exactly(shapes, shapes_shards):
    out = shapes_shards[0].parent
    assert [p.name for p in shapes_shards] == [f"{k:05d}.tar" for k in range(13)]  # 200 pairs, 16 a shard
    assert (shapes_shards.samples, shapes_shards.images, shapes_shards.skipped) == (200, 40, 0)
    assert (out / "shards.txt").read_text().split() == [p.name for p in shapes_shards]
    raws = _raws(out / "shards.txt")
    pairs = _pairs_of(shapes)
    assert [r["__key__"] for r in raws] == [f"{k:09d}" for k in range(200)]  # every pair once, in order
    for raw in raws:
        sample = decode_sample(raw, BadDataPolicy())
        meta = json.loads(raw["json"])
        i, j = pairs[int(raw["__key__"])]
        assert (meta["image_id"], meta["caption_index"]) == (shapes.image_ids[i], j)
        assert sample["caption"] == shapes.captions[i][j] and sample["captions"] == shapes.captions[i]
        assert sample["key"] == raw["__key__"] and "png" in raw  # tiny synthetic images: lossless PNG
        assert np.array_equal(np.asarray(sample["image"]), shapes.images[i])


def test_per_image_and_image_only_sources(shapes, tmp_path):
    written = write_shards(shapes, tmp_path / "per-image", samples_per_shard=25, per="image")
    samples = [decode_sample(r, BadDataPolicy()) for r in _raws(tmp_path / "per-image")]
    assert len(written) == 2 and [s["key"] for s in samples] == [f"{i:09d}" for i in range(40)]
    assert [s["captions"] for s in samples] == shapes.captions
    assert [s["caption"] for s in samples] == [c[0] for c in shapes.captions]
    digits = build_source({"format": "digits", "size": 16}, "test")
    write_shards(digits, tmp_path / "digits", samples_per_shard=100)
    raws = _raws(tmp_path / "digits")
    assert all(set(r) == {"__key__", "__url__", "png", "cls"} for r in raws)
    decoded = [decode_sample(r, BadDataPolicy()) for r in raws]
    assert [d["label"] for d in decoded] == digits.labels and "caption" not in decoded[0]
    assert all(np.array_equal(np.asarray(d["image"]), np.asarray(digits.load_image(i)))
               for i, d in enumerate(decoded))


def test_flickr_pairs_keep_the_original_jpeg_bytes(shared_data, tmp_path):
    root = shared_data / "flickr8k-1k"
    src = build_source({"format": "csv", "captions": str(root / "captions.csv"), "images": str(root / "images")})
    written = write_shards(src, tmp_path / "flickr", samples_per_shard=1000)
    assert (len(written), written.samples, written.images) == (5, 5000, 1000)
    index = {image_id: i for i, image_id in enumerate(src.image_ids)}
    pairs = _pairs_of(src)
    seen = set()
    for n, raw in enumerate(_raws(tmp_path / "flickr" / "shards.txt")):
        meta = json.loads(raw["json"])
        i, j = index[meta["image_id"]], meta["caption_index"]
        assert pairs[int(raw["__key__"])] == (i, j) and raw["txt"].decode() == src.captions[i][j]
        assert raw["jpg"] == Path(src.paths[i]).read_bytes()  # the file's own bytes, not re-encoded
        if n % 97 == 0:
            sample = decode_sample(raw, BadDataPolicy())
            assert sample["caption"] == src.captions[i][j]
            assert np.array_equal(np.asarray(sample["image"]), np.asarray(src.load_image(i)))
        seen.add((i, j))
    assert len(seen) == 5000


# ------------------------------------------------------------------------------------------ listing and sizes


def test_pattern_list_and_txt_name_the_same_shards(shapes_shards, tmp_path):
    out = shapes_shards[0].parent
    names = [str(p) for p in shapes_shards]
    listing = tmp_path / "mine.txt"
    relative = [os.path.relpath(n, tmp_path) for n in names]  # resolved against the list's folder
    listing.write_text("# my shards\n" + "".join(f"{r}\n" for r in relative))
    assert expand_shards(f"{out}/{{00000..00012}}.tar") == names
    assert expand_shards(names) == names and expand_shards(out / "shards.txt") == names
    assert [str(Path(u).resolve()) for u in expand_shards(str(listing))] == names
    assert expand_shards(out) == names  # a folder: its shards.txt
    assert expand_shards(f"{out}/{{00000..00005}}.tar::{out}/{{00006..00012}}.tar") == names


def test_a_missing_shard_is_one_line_naming_it(shapes_shards, tmp_path):
    out = shapes_shards[0].parent
    with pytest.raises(ValueError) as err:
        expand_shards(f"{out}/{{00000..00014}}.tar")
    message = str(err.value)
    assert "00013.tar does not exist" in message and "2 of 15 shards" in message and "\n" not in message
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    for spec in ([], str(tmp_path / "empty.txt")):
        with pytest.raises(ValueError, match="no shards"):
            expand_shards(spec)
    with pytest.raises(ValueError, match="cannot read the shard list"):
        expand_shards(str(tmp_path / "absent.txt"))
    assert expand_shards("pipe:cat /nowhere/{0..1}.tar", allow_pipe=True) == \
        ["pipe:cat /nowhere/0.tar", "pipe:cat /nowhere/1.tar"]


def test_sizes_json_equals_samples_read_and_header_scan(shapes_shards, tmp_path):
    out = shapes_shards[0].parent
    sizes = json.loads((out / "sizes.json").read_text())
    urls = expand_shards(out / "shards.txt")
    assert [sizes[Path(u).name] for u in urls] == [len(list(read_shard(u))) for u in urls] == shard_sizes(urls)
    assert [count_samples(u) for u in urls] == shard_sizes(urls) == [16] * 12 + [8]
    copy = tmp_path / "no-sizes"
    copy.mkdir()
    for u in urls:
        shutil.copy(u, copy)
    assert shard_sizes(expand_shards(f"{copy}/{{00000..00012}}.tar")) == shard_sizes(urls)  # scanned
    with pytest.raises(ValueError, match="write a sizes.json"):
        shard_sizes(["pipe:cat " + urls[0]])
    assert shard_sizes(["pipe:cat " + urls[0]], sizes_file=out / "sizes.json") == [16]


def test_skip_yields_exactly_the_samples_after_the_first_k(shapes_shards):
    url = str(shapes_shards[0])
    everything = list(read_shard(url))
    for k in (0, 1, 5, 15, 16, 20):
        assert list(read_shard(url, skip=k)) == everything[k:]
    piped = list(read_shard(f"pipe:cat {url}", skip=3))
    assert [r["__key__"] for r in piped] == [r["__key__"] for r in everything[3:]]
    assert piped[0]["txt"] == everything[3]["txt"]


# ------------------------------------------------------------------------------------------ bad data


@pytest.fixture
def bad_shard(tmp_path):
    """Four samples: good, corrupt JPEG (cut in half), no txt, good."""
    good = _jpeg()
    path = tmp_path / "bad.tar"
    with TarWriter(str(path), encoder=False) as tar:
        tar.write({"__key__": "a", "jpg": good, "txt": b"a red box"})
        tar.write({"__key__": "b", "jpg": good[: len(good) // 2], "txt": b"half a picture"})
        tar.write({"__key__": "c", "jpg": good})
        tar.write({"__key__": "d", "jpg": good, "txt": b"another red box"})
    return str(path)


def test_bad_samples_are_skipped_and_counted(bad_shard):
    counts = BadDataCounts()
    decoded = [decode_sample(raw, SKIP, counts) for raw in read_shard(bad_shard)]
    assert [d and d["caption"] for d in decoded] == ["a red box", None, None, "another red box"]
    assert counts.as_dict() == {"corrupt image": 1, "no caption": 1}
    policy = BadDataPolicy("skip", "skip")  # without counts: the policy's own lists
    [decode_sample(raw, policy) for raw in read_shard(bad_shard)]
    assert [r for _, r in policy.skipped + policy.skipped_captions] == ["corrupt image", "no caption"]


def test_bad_samples_raise_one_line_naming_the_key(bad_shard):
    b, c = list(read_shard(bad_shard))[1:3]
    with pytest.raises(BadImageError) as err:
        decode_sample(b, BadDataPolicy(on_bad_caption="skip"))
    assert "sample b of shard" in str(err.value) and "bad.tar" in str(err.value) and "corrupt image" in str(err.value)
    with pytest.raises(ValueError) as err:
        decode_sample(c, BadDataPolicy(on_bad_image="skip"))
    assert "sample c of shard" in str(err.value) and "no caption" in str(err.value)
    assert "on_bad_caption: skip" in str(err.value) and "\n" not in str(err.value)


def test_caption_variants_labels_and_counts():
    image = _jpeg()
    raw = {"__key__": "k", "__url__": "u.tar", "jpg": image}
    listed = {**raw, "json": json.dumps({"captions": ["first one", "second"]}).encode()}
    assert decode_sample(listed, SKIP)["caption"] == "first one"
    assert decode_sample({**raw, "cls": b"7"}, SKIP)["label"] == 7
    assert decode_sample(raw, SKIP, captions=None)["label"] == -1
    counts = BadDataCounts()
    for bad in ({**raw, "txt": b"   "}, {**raw, "txt": b"caf\xe9"}, {"__key__": "x", "txt": b"no image"},
                {**raw, "cls": b"seven"}):
        assert decode_sample(bad, SKIP, counts) is None
    assert decode_sample({**raw, "png": b"not a png", "txt": b"jpg is read first"}, SKIP, counts) is not None
    assert counts.as_dict() == {"bad label": 1, "caption not UTF-8": 1, "empty caption": 1, "no image": 1}
    workers = [pickle.loads(pickle.dumps(counts)), BadDataCounts({"no image": 2})]
    total = BadDataCounts().merge(workers[0]).merge(workers[1]).merge({"truncated shard": 1})
    assert total.as_dict() == {"bad label": 1, "caption not UTF-8": 1, "empty caption": 1, "no image": 3,
                               "truncated shard": 1}


def _cut(src: str, dst: Path, member_index: int, into: float) -> None:
    """Copy ``src`` cut ``into`` (0..1) of the way through the data of its member number ``member_index``."""
    with tarfile.open(src) as tar:
        member = tar.getmembers()[member_index]
    data = Path(src).read_bytes()
    dst.write_bytes(data[: member.offset_data + int(member.size * into)])


@pytest.mark.parametrize("member", [16, 15])  # sample 5's png (its json was read), sample 5's json (its first)
def test_a_truncated_shard_yields_its_complete_samples_and_reports(shapes_shards, tmp_path, member):
    whole = list(read_shard(str(shapes_shards[0])))  # members: json, png, txt per sample
    cut = tmp_path / "cut.tar"
    _cut(str(shapes_shards[0]), cut, member, 0.5)
    problems = []
    got = list(read_shard(str(cut), on_error=lambda *p: problems.append(p)))
    assert [r["__key__"] for r in got] == [r["__key__"] for r in whole[:5]] and got[-1]["txt"] == whole[4]["txt"]
    assert [(url, reason) for url, reason, _ in problems] == [(str(cut), "truncated shard")]
    assert count_samples(cut) == 5
    skipped = itertools.islice(read_shard(str(cut), skip=2, on_error=lambda *p: None), 10)
    assert [{**r, "__url__": None} for r in skipped] == [{**r, "__url__": None} for r in whole[2:5]]


def test_a_shard_cut_between_members_is_reported_against_its_size(shapes_shards, tmp_path):
    with tarfile.open(shapes_shards[0]) as tar:
        start = tar.getmembers()[15].offset  # the header of sample 5's first member
    cut = tmp_path / "cut.tar"
    cut.write_bytes(shapes_shards[0].read_bytes()[:start])
    problems = []
    assert len(list(read_shard(str(cut), on_error=lambda *p: problems.append(p), expected=16))) == 5
    assert [reason for _, reason, _ in problems] == ["truncated shard"] and "5 of its 16" in problems[0][2]
    problems.clear()
    assert list(read_shard(str(tmp_path / "gone.tar"), on_error=lambda *p: problems.append(p))) == []
    assert [reason for _, reason, _ in problems] == ["unreadable shard"]


# ------------------------------------------------------------------------------------------ command line


def test_cli_writes_shards_and_refuses_bad_input(tmp_path, capsys):
    out = tmp_path / "cli"
    common = ["shards", "--format", "shapes", "--option", "num_images=20", "--option", "size=32", "--out", str(out)]
    assert main([*common, "--samples-per-shard", "30"]) == 0
    assert "wrote 4 shards, 100 samples of 20 images" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [f"{k:05d}.tar" for k in range(4)] + ["shards.txt", "sizes.json"]
    assert main([*common, "--samples-per-shard", "60"]) == 2  # already holds shards
    assert "already holds shards" in capsys.readouterr().err
    assert main([*common, "--samples-per-shard", "60", "--overwrite", "--per", "image"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["00000.tar", "shards.txt", "sizes.json"]
    assert json.loads((out / "sizes.json").read_text()) == {"00000.tar": 20}
    capsys.readouterr()
    bad = ["shards", "--format", "shapez", "--out", str(tmp_path / "x")]
    for argv in (bad, [*common[:-1], str(tmp_path / "y"), "--option", "colour=red"],
                 ["shards", "--format", "csv", "--captions", str(tmp_path / "none.csv"), "--out", str(tmp_path / "z")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("mmvicreg: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()

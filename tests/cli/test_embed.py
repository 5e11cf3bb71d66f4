"""``mmvicreg embed``: clip-retrieval's layout on a Flickr8k-1k subset (skipped when ../shared/data is absent), the
embeddings equal to ``mmvicreg.encode``'s, two gloo processes writing what one writes, resuming a partial run,
``index build --embeddings`` searching as an index built directly, and the one-line refusals."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from mmvicreg.cli import main
from tests.helpers.models import CAPTIONS

N_IMAGES = 12
REPO = Path(__file__).resolve().parents[2]


def _save_model(folder: Path, seed: int, width: int = 32) -> Path:
    from mmvicreg import JointEmbedding

    torch.manual_seed(seed)
    JointEmbedding.from_config(
        {"image": {"encoder": "test_resnet", "expander": str(width), "transform": {"size": 32}},
         "caption": {"encoder": {"name": "gru", "word_dim": 8, "hidden_dim": 16}, "expander": str(width)}},
        captions=CAPTIONS,
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny saved image–text model (random weights)."""
    return _save_model(tmp_path_factory.mktemp("model") / "model", 0)


@pytest.fixture
def flickr(shared_data, tmp_path) -> dict[str, Path]:
    """The first N_IMAGES photos of Flickr8k-1k copied into ``images/`` (sorted names), ``captions.csv`` with
    their captions (5 each) and ``first.csv`` / ``first.txt`` with each one's first caption, in name order."""
    root = shared_data / "flickr8k-1k"
    with open(root / "captions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    kept = sorted(dict.fromkeys(r["image"] for r in rows))[:N_IMAGES]
    images = tmp_path / "images"
    images.mkdir()
    for name in kept:
        (images / name).write_bytes((root / "images" / name).read_bytes())
    first = {name: next(r["caption"] for r in rows if r["image"] == name) for name in kept}
    for file, chosen in (("captions.csv", [r for r in rows if r["image"] in kept]),
                         ("first.csv", [{"image": n, "caption": first[n]} for n in kept])):
        with open(tmp_path / file, "w", newline="") as f:
            writer = csv.DictWriter(f, ["image", "caption"])
            writer.writeheader()
            writer.writerows(sorted(chosen, key=lambda r: r["image"]) if file == "first.csv" else chosen)
    (tmp_path / "first.txt").write_text("".join(first[n] + "\n" for n in kept))
    return {"images": images, "captions": tmp_path / "captions.csv", "first": tmp_path / "first.csv",
            "first_txt": tmp_path / "first.txt"}


def _embed_argv(model: Path, data: dict[str, Path], out: Path, *extra: str, captions: str = "captions") -> list[str]:
    return ["embed", "--model", str(model), "--format", "csv", "--captions", str(data[captions]), "--images",
            str(data["images"]), "--out", str(out), "--workers", "0", "--no-progress", *extra]


def _one_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _read(out: Path, stem: str, folder: str) -> np.ndarray:
    shards = sorted((out / folder).glob(f"{stem}_*.npy"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    return np.concatenate([np.load(p) for p in shards])


def _metadata(out: Path) -> list[dict]:
    shards = sorted((out / "metadata").glob("metadata_*.parquet"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    return [row for p in shards for row in pq.read_table(p).to_pylist()]


def test_embed_writes_clip_retrieval_layout_equal_to_encode(model, flickr, tmp_path):
    import mmvicreg

    out = tmp_path / "emb"
    assert main(_embed_argv(model, flickr, out, "--shard-size", "5", "--captions-per-image", "2")) == 0
    rows = 2 * N_IMAGES
    assert sorted(p.name for p in (out / "img_emb").iterdir()) == [f"img_emb_{i}.npy" for i in range(5)]
    assert sorted(p.name for p in (out / "text_emb").iterdir()) == [f"text_emb_{i}.npy" for i in range(5)]
    assert sorted(p.name for p in (out / "metadata").iterdir()) == [f"metadata_{i}.parquet" for i in range(5)]
    assert [len(np.load(out / "img_emb" / f"img_emb_{i}.npy")) for i in range(5)] == [5, 5, 5, 5, 4]
    meta = json.loads((out / "embed.json").read_text())
    assert meta["complete"] and meta["counts"] == {"rows": rows, "shards": 5, "images": N_IMAGES}
    assert meta["branches"] == {"image": "image", "text": "caption"} and meta["dims"] == {"image": 32, "text": 32}
    assert meta["layer"] == "embedding" and meta["model"]["fingerprint"].startswith("sha256:")

    with open(flickr["captions"], newline="") as f:
        by_image: dict[str, list[str]] = {}
        for r in csv.DictReader(f):
            by_image.setdefault(r["image"], []).append(r["caption"])
    expected = [(name, caps[j]) for name, caps in by_image.items() for j in range(2)]
    metadata = _metadata(out)
    assert [(r["id"], r["caption"]) for r in metadata] == expected
    assert [Path(r["image_path"]).name for r in metadata] == [name for name, _ in expected]

    loaded = mmvicreg.JointEmbedding.from_pretrained(model)
    pil = [Image.open(flickr["images"] / name).convert("RGB") for name, _ in expected]
    img = mmvicreg.encode(loaded, "image", pil).numpy()
    txt = mmvicreg.encode(loaded, "caption", [c for _, c in expected]).numpy()
    stored_img, stored_txt = _read(out, "img_emb", "img_emb"), _read(out, "text_emb", "text_emb")
    assert stored_img.dtype == np.float32 and stored_img.shape == (rows, 32)
    np.testing.assert_allclose(stored_img, img, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stored_txt, txt, rtol=1e-5, atol=1e-6)

    half = tmp_path / "half"
    assert main(_embed_argv(model, flickr, half, "--dtype", "float16", "--modality", "image")) == 0
    assert not (half / "text_emb").exists()
    stored = _read(half, "img_emb", "img_emb")
    assert stored.dtype == np.float16 and stored.shape == (N_IMAGES, 32)
    np.testing.assert_allclose(stored.astype(np.float32), img[::2], rtol=2e-3, atol=1e-4)


def test_webdataset_shards_embed_as_the_csv_they_were_written_from(model, flickr, tmp_path):
    shards, from_csv, from_shards = tmp_path / "shards", tmp_path / "csv", tmp_path / "wds"
    assert main(["shards", "--format", "csv", "--captions", str(flickr["captions"]), "--images",
                 str(flickr["images"]), "--out", str(shards), "--samples-per-shard", "5", "--per", "image"]) == 0
    assert main(_embed_argv(model, flickr, from_csv, "--shard-size", "5")) == 0
    assert main(["embed", "--model", str(model), "--format", "webdataset", "--shards", str(shards), "--out",
                 str(from_shards), "--shard-size", "5", "--workers", "0", "--no-progress"]) == 0
    for stem in ("img_emb", "text_emb"):
        np.testing.assert_array_equal(_read(from_shards, stem, stem), _read(from_csv, stem, stem))
    assert [(r["id"], r["caption"]) for r in _metadata(from_shards)] == \
        [(r["id"], r["caption"]) for r in _metadata(from_csv)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_write_what_one_writes(model, flickr, tmp_path, one_thread):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(_embed_argv(model, flickr, one, "--shard-size", "4")) == 0
    port, procs = _free_port(), []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        argv = _embed_argv(model, flickr, two, "--shard-size", "4", "--device", "cpu")
        procs.append(subprocess.Popen([sys.executable, "-m", "mmvicreg", *argv], env=env, cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "rank 0 of 2: wrote shards [0, 2]" in outputs[0] and "embedded 12 rows" in outputs[0]  # shard i: rank i % 2
    assert outputs[1].strip() == "rank 1 of 2: wrote shards [1]"
    files = sorted(p.relative_to(one).as_posix() for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two).as_posix() for p in two.rglob("*") if p.is_file())
    assert len(files) == 3 * 3 + 1  # 3 shards of img_emb, text_emb, metadata; embed.json
    for name in files:
        if name.endswith(".npy"):
            np.testing.assert_array_equal(np.load(one / name), np.load(two / name))
        elif name.endswith(".parquet"):
            assert pq.read_table(one / name).to_pylist() == pq.read_table(two / name).to_pylist()
    assert json.loads((one / "embed.json").read_text()) == json.loads((two / "embed.json").read_text())


def test_a_partial_run_resumes_keeping_finished_shards(model, flickr, tmp_path):
    from mmvicreg import JointEmbedding
    from mmvicreg.data import build_source
    from mmvicreg.evaluation.embed_source import embed_source

    out = tmp_path / "emb"
    source = build_source({"format": "csv", "captions": str(flickr["first"]), "images": str(flickr["images"])})
    net = JointEmbedding.from_pretrained(model)
    first = embed_source(net, source, out, shard_size=5)
    assert first["written_shards"] == [0, 1, 2]
    reference = {p.name: np.load(p) for p in (out / "img_emb").iterdir()}
    kept = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (out / "img_emb", out / "metadata")
            for p in p.iterdir() if p.name.endswith("_0.npy") or p.name.endswith("_0.parquet")}
    # partial shards: shard 1's image file short (3 of 5 rows) beside its metadata; shard 2's metadata never written
    np.save(out / "img_emb" / "img_emb_1.npy", reference["img_emb_1.npy"][:3])
    (out / "metadata" / "metadata_2.parquet").unlink()
    (out / "text_emb" / ".text_emb_2.npy.x1y2.tmp").write_bytes(b"half")  # what a killed atomic write leaves
    meta = json.loads((out / "embed.json").read_text())
    (out / "embed.json").write_text(json.dumps({**meta, "complete": False}))
    again = embed_source(net, source, out, shard_size=5)
    assert again["written_shards"] == [1, 2]
    assert not list(out.rglob("*.tmp"))
    assert json.loads((out / "embed.json").read_text())["complete"] is True
    for path, stamp in kept.items():
        assert (path.stat().st_mtime_ns, path.stat().st_ino) == stamp, path  # finished shards untouched
    for name, arr in reference.items():
        np.testing.assert_array_equal(np.load(out / "img_emb" / name), arr)
    assert embed_source(net, source, out, shard_size=5)["written_shards"] == []


def test_index_built_from_embeddings_searches_as_one_built_directly(model, flickr, tmp_path, capsys):
    emb, direct, from_emb = tmp_path / "emb", tmp_path / "direct", tmp_path / "from-emb"
    assert main(_embed_argv(model, flickr, emb, "--shard-size", "5", captions="first")) == 0
    assert main(["index", "build", "--embeddings", str(emb), "--out", str(from_emb), "--no-progress"]) == 0
    assert main(["index", "build", "--model", str(model), "--images", str(flickr["images"]), "--captions",
                 str(flickr["first_txt"]), "--out", str(direct), "--no-progress", "--workers", "0"]) == 0
    assert json.loads((from_emb / "meta.json").read_text())["model"] == \
        json.loads((direct / "meta.json").read_text())["model"]
    for query in (["--text", "a dog runs on the grass"], ["--image", str(sorted(flickr["images"].iterdir())[3])]):
        hits = []
        for index in (direct, from_emb):
            out = tmp_path / f"{index.name}.json"
            assert main(["search", "--index", str(index), *query, "-k", "24", "--json", str(out)]) == 0
            hits.append(json.loads(out.read_text()))
        assert len(hits[0]) == len(hits[1]) == 2 * N_IMAGES
        for a, b in zip(*hits):
            assert (a["rank"], a["kind"], a.get("text")) == (b["rank"], b["kind"], b.get("text"))
            assert a["score"] == pytest.approx(b["score"], abs=1e-5)
            if a["kind"] == "image":
                assert a["id"] == b["id"]
    err = _one_line(capsys, ["index", "build", "--embeddings", str(emb), "--model", str(model), "--out",
                             str(tmp_path / "x")])
    assert "drop --model" in err


def test_refusals_are_one_line(model, flickr, tmp_path, capsys):
    out = tmp_path / "emb"
    assert "'nope' is not a branch" in _one_line(capsys, _embed_argv(model, flickr, out, "--image-branch", "nope"))
    assert "is a text branch" in _one_line(capsys, _embed_argv(model, flickr, out, "--image-branch", "caption"))
    assert "does not embed" in _one_line(capsys, _embed_argv(model, flickr, out, "--modality", "image",
                                                             "--text-branch", "caption"))
    folder = tmp_path / "labelled" / "cats"
    folder.mkdir(parents=True)
    Image.new("RGB", (20, 20), (90, 10, 10)).save(folder / "0.png")
    image_only = ["embed", "--model", str(model), "--format", "folder", "--images", str(folder.parent), "--out",
                  str(out), "--workers", "0", "--no-progress"]
    assert "holds images without captions" in _one_line(capsys, image_only + ["--text-branch", "caption"])
    assert "holds images without captions" in _one_line(capsys, image_only + ["--modality", "text"])
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    assert "is not a folder" in _one_line(capsys, _embed_argv(model, flickr, a_file))
    assert a_file.read_text() == "mine"
    assert main(image_only) == 0  # image-only data: image embeddings only, with labels in the metadata
    assert _metadata(out)[0]["label"] == 0 and not (out / "text_emb").exists()
    other = _save_model(tmp_path / "other", 1)
    other_argv = [str(other) if a == str(model) else a for a in image_only]
    assert "another model" in _one_line(capsys, other_argv)
    assert main(other_argv + ["--force"]) == 0
    assert json.loads((out / "embed.json").read_text())["model"]["ref"] == str(other.resolve())
    (out / "notes.txt").write_text("mine")
    assert "never writes" in _one_line(capsys, other_argv + ["--force"])
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    (out / "embed.json").write_text("{not json")
    assert "cannot be read" in _one_line(capsys, other_argv)
    assert main(other_argv + ["--force"]) == 0 and json.loads((out / "embed.json").read_text())["complete"]

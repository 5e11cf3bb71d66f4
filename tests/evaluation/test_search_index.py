"""The search index library (mmvicreg.evaluation.search_index) and FAISS's device choice: chunked building equals
a one-shot build, IVF trains on a bounded sample, inputs are listed as documented, errors are one line."""

import json
import shutil

import faiss
import numpy as np
import pytest
import torch
from PIL import Image

from mmvicreg import JointEmbedding
from mmvicreg.evaluation import search_index as search_index_module
from mmvicreg.evaluation.metrics import search as search_module
from mmvicreg.evaluation.metrics.search import build_index, faiss_device, knn_search, on_faiss_device, search
from mmvicreg.evaluation.search_index import (
    SearchIndex,
    build_search_index,
    list_images,
    model_fingerprint,
    read_captions,
)
from tests.helpers.models import CAPTIONS

SMALL = "64-32"
REF = {"ref": "/models/tiny", "fingerprint": "sha256:test"}


def _model(seed: int = 0, text: bool = True) -> JointEmbedding:
    torch.manual_seed(seed)
    branches = {"image": {"encoder": "test_resnet", "expander": SMALL, "transform": {"size": 32}}}
    if text:
        branches["caption"] = {"encoder": {"name": "gru", "word_dim": 8, "hidden_dim": 16}, "expander": SMALL}
    return JointEmbedding.from_config(branches, captions=CAPTIONS if text else None)


class CountingModel:
    """A model whose encodes are recorded: ``calls`` holds the number of items of each (the index encodes through
    the one encode path, :func:`mmvicreg.data.encoding.encode`, one call per chunk; see ``_count_encodes``)."""

    def __init__(self, model):
        self.model, self.calls = model, []
        self.branch_names, self.branch, self.parameters = model.branch_names, model.branch, model.parameters

    def encode(self, branch, batch, **kwargs):  # one batch the encode path made
        return self.model.encode(branch, batch, **kwargs)


@pytest.fixture(autouse=True)
def _count_encodes(monkeypatch):
    """Each ``encode(model, branch, items)`` the index makes of a ``CountingModel`` is recorded in its ``calls``."""
    original = search_index_module.encode

    def counting(model, branch, items, *args, **kwargs):
        if isinstance(model, CountingModel):
            model.calls.append(len(items))
        return original(model, branch, items, *args, **kwargs)

    monkeypatch.setattr(search_index_module, "encode", counting)


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """40 small generated images (png/jpg, some in a subfolder, and a file that is not an image) and captions."""
    root = tmp_path_factory.mktemp("data")
    images = root / "images"
    (images / "nested" / "deeper").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(40):
        folder = images / "nested" / "deeper" if i % 7 == 0 else images / "nested" if i % 3 == 0 else images
        pixels = rng.integers(0, 256, (24 + i % 5, 30, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.{'png' if i % 2 else 'jpg'}")
    (images / "notes.txt").write_text("not an image")
    captions = root / "captions.txt"
    captions.write_text("\n".join(CAPTIONS[:5]) + "\n\n  \na dog on the grass\n")
    return images, captions


def test_list_images_and_read_captions(data):
    images, captions = data
    paths = list_images(images)
    assert len(paths) == 40 and paths == sorted(paths)
    assert "nested/deeper/img00.jpg" in paths and "nested/img03.png" in paths and "notes.txt" not in paths
    lines = read_captions(captions)
    assert lines[0] == ("line 1", CAPTIONS[0]) and lines[-1] == ("line 8", "a dog on the grass")  # blanks skipped
    assert len(lines) == 6


def test_chunked_build_equals_one_shot_build(model, data, tmp_path):
    images, captions = data
    counting = CountingModel(model)
    chunked = build_search_index(counting, tmp_path / "chunked", images=images, captions=captions, chunk_size=7,
                                 batch_size=4, model_ref=REF)
    assert max(counting.calls) <= 7 and len(counting.calls) == 6 + 1  # 40 images in 6 chunks, 6 captions in 1
    whole = build_search_index(model, tmp_path / "whole", images=images, captions=captions, chunk_size=10_000,
                               model_ref=REF)
    assert chunked.index.ntotal == whole.index.ntotal == 46
    np.testing.assert_allclose(chunked.index.reconstruct_n(0, 46), whole.index.reconstruct_n(0, 46), atol=1e-5)
    loaded = SearchIndex.load(tmp_path / "chunked")
    assert loaded.items == whole.items and loaded.device == "cpu"
    assert loaded.items[0] == {"id": "img01.png", "kind": "image"}
    assert loaded.items[-1] == {"id": "line 8", "kind": "caption", "text": "a dog on the grass"}
    meta = loaded.meta
    assert meta["model"] == REF and meta["branches"] == {"image": "image", "caption": "caption"}
    assert (meta["dim"], meta["index"], meta["count"], meta["counts"]) == (32, "flat", 46, {"image": 40, "caption": 6})
    assert meta["sources"]["images"] == str(images.resolve()) and meta["mmvicreg_version"]
    norms = np.linalg.norm(loaded.index.reconstruct_n(0, 46), axis=1)
    np.testing.assert_allclose(norms, 1, atol=1e-5)  # inner product = cosine
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_ivf_trains_on_a_bounded_sample_then_adds_the_rest(model, data, tmp_path):
    images, captions = data
    ivf = build_search_index(model, tmp_path / "ivf", images=images, captions=captions, kind="ivf",
                             options={"nlist": 2, "nprobe": 2}, chunk_size=5, train_size=12, model_ref=REF)
    assert ivf.index.ntotal == 46 and ivf.meta["index_options"] == {"nlist": 2, "nprobe": 2}
    flat = build_search_index(model, tmp_path / "flat", images=images, captions=captions, model_ref=REF)
    image = images / "nested" / "img03.png"
    exhaustive = SearchIndex.load(tmp_path / "ivf").query(model, image=image, k=5)  # nprobe = nlist: every cell
    assert [h["id"] for h in exhaustive] == [h["id"] for h in flat.query(model, image=image, k=5)]
    assert exhaustive[0]["id"] == "nested/img03.png"


def test_query_returns_ranked_hits(model, data, tmp_path):
    images, captions = data
    index = build_search_index(model, tmp_path / "idx", images=images, captions=captions, model_ref=REF)
    hits = index.query(model, text="a dog on the grass", k=46)
    assert [h["rank"] for h in hits] == list(range(1, 47))
    assert hits[0] == {"rank": 1, "score": pytest.approx(1, abs=1e-5), "row": 45, "id": "line 8", "kind": "caption",
                       "text": "a dog on the grass"}
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert len(index.query(model, image=Image.open(images / "img01.png"), k=500)) == 46  # k is clipped


def test_fingerprint_is_the_saved_model(model, tmp_path):
    a = model.save_pretrained(tmp_path / "a")
    shutil.copytree(a, tmp_path / "copy")
    b = _model(seed=1).save_pretrained(tmp_path / "b")
    assert model_fingerprint(a) == model_fingerprint(tmp_path / "copy")
    assert model_fingerprint(a) != model_fingerprint(b) and model_fingerprint(a).startswith("sha256:")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({}, ValueError, "nothing to index: pass --images FOLDER and/or --captions FILE"),
        ({"images": "MISSING"}, FileNotFoundError, "is not a directory; pass --images a folder of images"),
        ({"captions": "MISSING.txt"}, FileNotFoundError, "caption file .* does not exist"),
        ({"images": "IMAGES", "kind": "hnsw", "options": {"nprobe": 3}}, ValueError,
         r"unknown option\(s\) \['nprobe'\] for a 'hnsw' index"),
        ({"images": "IMAGES", "kind": "annoy"}, ValueError, "index is 'annoy'.*choose one of flat, hnsw, ivf"),
        ({"images": "IMAGES", "image_branch": "caption"}, ValueError,
         r"branch 'caption' is not one of the model's image branches: image \(image\), caption \(text\)"),
    ],
)
def test_build_errors_are_one_line(model, data, tmp_path, kwargs, error, match):
    kwargs = {k: str(data[0]) if v == "IMAGES" else str(tmp_path / v) if "MISSING" in str(v) else v
              for k, v in kwargs.items()}
    counting = CountingModel(model)
    with pytest.raises(error, match=match) as e:
        build_search_index(counting, tmp_path / "out", **kwargs)
    assert "\n" not in str(e.value) and counting.calls == []  # refused before encoding anything
    assert not (tmp_path / "out").exists()


def test_build_refuses_a_folder_that_is_not_an_index(model, data, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    with pytest.raises(FileExistsError, match="exists and is not a search index"):
        build_search_index(model, out, captions=data[1])
    assert (out / "thesis.tex").read_text() == "keep me"


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


@pytest.mark.parametrize("case", ["index-and-more", "foreign-meta", "folder-named-as-an-index-file", "no-meta"])
def test_build_replaces_nothing_but_an_index(model, data, tmp_path, case):
    """Only a folder holding an index's files, its meta.json an index's, is replaced; anything else is refused in
    one line naming what else is there, and nothing in it is deleted."""
    out = tmp_path / "out"
    build_search_index(model, out, captions=data[1], model_ref=REF)
    if case == "index-and-more":  # the folder: an index's meta.json beside other work
        (out / "precious.txt").write_text("keep me")
        (out / "sub").mkdir()
        (out / "sub" / "notes.md").write_text("mine")
    elif case == "foreign-meta":
        (out / "meta.json").write_text(json.dumps({"title": "my dataset's meta"}))
    elif case == "folder-named-as-an-index-file":
        (out / "index.faiss").unlink()
        (out / "index.faiss").mkdir()
        (out / "index.faiss" / "precious.txt").write_text("keep me")
    else:
        (out / "meta.json").unlink()
    before = _tree(out)
    counting = CountingModel(model)
    with pytest.raises(FileExistsError) as e:
        build_search_index(counting, out, images=data[0], model_ref=REF)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{out} exists and is not a search index")
    assert _tree(out) == before and counting.calls == []  # refused before encoding; nothing touched
    expected = {"index-and-more": "it holds precious.txt, sub/, which an index build never writes",
                "foreign-meta": "its meta.json is not a search index's",
                "folder-named-as-an-index-file": "it holds index.faiss/", "no-meta": "it has no meta.json"}[case]
    assert expected in message and message.endswith("pass --out another folder, or remove only those entries")


def test_build_replaces_a_previous_index_whole(model, data, tmp_path):
    out = tmp_path / "out"
    build_search_index(model, out, captions=data[1], model_ref=REF)
    index = build_search_index(model, out, images=data[0], model_ref=REF)
    assert SearchIndex.load(out).items == index.items and index.meta["counts"] == {"image": 40}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or old folder left
    (tmp_path / "empty").mkdir()
    assert build_search_index(model, tmp_path / "empty", captions=data[1], model_ref=REF).meta["count"] == 6


def test_a_file_added_during_the_build_stops_the_swap(model, data, tmp_path):
    """The folder is checked again when the new index is swapped in: a file put there meanwhile is kept, with the
    old index, and the build is refused."""
    out = tmp_path / "out"
    old = build_search_index(model, out, captions=data[1], model_ref=REF)

    class Intruder(CountingModel):
        def encode(self, branch, batch, **kwargs):
            (out / "results.csv").write_text("written while the index was built")
            return super().encode(branch, batch, **kwargs)

    with pytest.raises(FileExistsError, match="it holds results.csv, which an index build never writes"):
        build_search_index(Intruder(model), out, images=data[0], model_ref=REF)
    assert (out / "results.csv").read_text() == "written while the index was built"
    assert SearchIndex.load(out).items == old.items
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_shuffled_items_are_refused(model, data, tmp_path):
    """Reordered items.jsonl would give every hit another item's id: the load refuses it in one line."""
    build_search_index(model, tmp_path / "idx", images=data[0], captions=data[1], model_ref=REF)
    items = tmp_path / "idx" / "items.jsonl"
    lines = items.read_text().splitlines(keepends=True)
    items.write_text("".join(lines[1:] + lines[:1]))  # same rows, same count, other order
    with pytest.raises(ValueError) as e:
        SearchIndex.load(tmp_path / "idx")
    assert str(e.value) == (
        f"search index {tmp_path / 'idx'}: {items} is not the items file the index was built with (its SHA-256 "
        f"differs from the one in meta.json: edited, reordered or replaced); rebuild it with mmvicreg index build "
        f"--model MODEL --images FOLDER --out {tmp_path / 'idx'}"
    )


@pytest.mark.parametrize("kind", ["bomb", "not-an-image"])
def test_a_query_image_pillow_cannot_decode_is_one_line(model, data, tmp_path, monkeypatch, kind):
    index = build_search_index(model, tmp_path / "idx", images=data[0], model_ref=REF)
    query = data[0] / "img01.png"  # 30 x 25 pixels
    if kind == "bomb":
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 750 pixels: over twice the limit, Pillow's error
        expected = f"query image {query} is too large to decode (750 pixels, over twice Pillow's limit of 100"
    else:
        query = tmp_path / "fake.png"
        query.write_bytes(b"not a png")
        expected = f"cannot decode query image {query} (UnidentifiedImageError: cannot identify image file"
    with pytest.raises(ValueError) as e:
        index.query(model, image=query)
    assert str(e.value).startswith(expected) and "\n" not in str(e.value)


def test_query_errors(model, data, tmp_path):
    index = build_search_index(model, tmp_path / "idx", captions=data[1], model_ref=REF)
    with pytest.raises(ValueError, match="pass exactly one of --text TEXT / --image PATH"):
        index.query(model)
    with pytest.raises(ValueError, match="pass exactly one of"):
        index.query(model, text="a", image=data[0] / "img01.png")
    image_only = _model(text=False)
    with pytest.raises(ValueError, match=r"--text queries need a text branch; the model has image \(image\)"):
        index.query(image_only, text="a dog")


def test_load_errors(model, data, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no search index at .*nope: build one with mmvicreg index build"):
        SearchIndex.load(tmp_path / "nope")
    build_search_index(model, tmp_path / "idx", captions=data[1], model_ref=REF)
    build_search_index(model, tmp_path / "fewer", captions=data[1], model_ref=REF, images=data[0])
    shutil.copyfile(tmp_path / "fewer" / "index.faiss", tmp_path / "idx" / "index.faiss")
    with pytest.raises(ValueError, match=r"is inconsistent \(46 vectors, 6 items, count 6\); rebuild it"):
        SearchIndex.load(tmp_path / "idx")
    items = tmp_path / "idx" / "items.jsonl"
    items.write_text("".join(items.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(ValueError, match="items.jsonl is not the items file the index was built with"):
        SearchIndex.load(tmp_path / "idx")
    (tmp_path / "idx" / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot be read"):
        SearchIndex.load(tmp_path / "idx")


def test_check_model_names_both_models_and_the_rebuild(model, data, tmp_path):
    index = build_search_index(model, tmp_path / "idx", images=data[0], model_ref=REF)
    index.check_model("/elsewhere/tiny", REF["fingerprint"])  # the same weights elsewhere: fine
    with pytest.raises(ValueError) as e:
        index.check_model("/models/other", "sha256:other")
    assert str(e.value) == (
        f"index {tmp_path / 'idx'} was built with model /models/tiny (fingerprint sha256:test), not /models/other "
        f"(fingerprint sha256:other); rebuild it with mmvicreg index build --model /models/other "
        f"--images {data[0].resolve()} --out {tmp_path / 'idx'}"
    )


# ----------------------------------------------------------------------------------------------- FAISS device


def test_faiss_runs_on_the_cpu_without_a_gpu():
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        pytest.skip("this machine has GPU FAISS")
    assert faiss_device() == faiss_device("flat") == "cpu"
    index = build_index(np.eye(4, dtype=np.float32))
    assert on_faiss_device(index, "flat") == (index, "cpu")


def test_faiss_gpu_choice(monkeypatch):
    """With GPU FAISS and a GPU, flat and IVF indexes are copied to the GPUs; HNSW (no GPU version) stays."""
    moved = []
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda index: moved.append(index) or "on gpu", raising=False)
    assert (faiss_device(), faiss_device("flat"), faiss_device("ivf"), faiss_device("hnsw")) == (
        "gpu", "gpu", "gpu", "cpu")
    index = build_index(np.eye(4, dtype=np.float32))
    assert on_faiss_device(index, "flat") == ("on gpu", "gpu") and moved == [index]
    assert on_faiss_device(index, "hnsw") == (index, "cpu")
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    assert faiss_device("flat") == "cpu"
    monkeypatch.delattr(faiss, "StandardGpuResources")
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    assert faiss_device("flat") == "cpu"  # a CPU build of FAISS


def test_knn_search_equals_a_flat_index_search(monkeypatch):
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((50, 8)).astype(np.float32)
    queries = rng.standard_normal((7, 8)).astype(np.float32)
    sims, ids = knn_search(gallery, queries, 5)
    ref_sims, ref_ids = search(build_index(gallery), queries, 5)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(sims, ref_sims, rtol=1e-6)
    assert knn_search(gallery, queries, 500)[1].shape == (7, 50)  # k clipped to the gallery
    calls = []
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "knn_gpu", lambda res, xq, xb, k, metric: calls.append(res) or "gpu", raising=False)
    monkeypatch.setattr(search_module, "_gpu_resources", lambda: "resources")  # not cached from a fake FAISS
    assert knn_search(gallery, queries, 5) == "gpu" and calls == ["resources"]


def test_items_file_is_json_lines(model, data, tmp_path):
    build_search_index(model, tmp_path / "idx", images=data[0], captions=data[1], model_ref=REF)
    rows = [json.loads(line) for line in (tmp_path / "idx" / "items.jsonl").read_text().splitlines()]
    assert len(rows) == 46 and {r["kind"] for r in rows} == {"image", "caption"}

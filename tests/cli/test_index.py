"""``mmvicreg index build`` and ``mmvicreg search`` on Flickr8k-1k images (generated ones when the shared data is
absent) with a tiny random model: images find themselves, captions give ranked JSON, every FAISS kind answers,
and what the user can fix is one line."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmvicreg import JointEmbedding
from mmvicreg.cli import main
from tests.conftest import SHARED_DATA
from tests.helpers import REPO_ROOT
from tests.helpers.models import CAPTIONS

SMALL = "64-32"
N_IMAGES = 150


def _save_model(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    return JointEmbedding.from_config(
        {
            "image": {"encoder": "test_resnet", "expander": SMALL, "transform": {"size": 32}},
            "caption": {"encoder": {"name": "gru", "word_dim": 8, "hidden_dim": 16}, "expander": SMALL},
        },
        captions=CAPTIONS,
    ).save_pretrained(folder)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two saved models, a folder of N_IMAGES images (a third in a subfolder), a caption file, a built index."""
    root = tmp_path_factory.mktemp("index")
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    flickr = SHARED_DATA / "flickr8k-1k" / "images"
    if flickr.is_dir():
        for i, path in enumerate(sorted(flickr.iterdir())[:N_IMAGES]):
            os.symlink(path, (images / "sub" if i % 3 == 0 else images) / path.name)
    else:
        rng = np.random.default_rng(0)
        for i in range(N_IMAGES):
            pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save((images / "sub" if i % 3 == 0 else images) / f"{i:04d}.jpg")
    captions = root / "captions.txt"
    captions.write_text("\n".join(dict.fromkeys(CAPTIONS)) + "\na dog on the grass\n")
    model, other = _save_model(root / "model", 0), _save_model(root / "other", 1)
    out = root / "idx"
    assert main(["index", "build", "--model", str(model), "--images", str(images), "--captions", str(captions),
                 "--out", str(out), "--chunk-size", "64", "--no-progress"]) == 0
    return {"root": root, "images": images, "captions": captions, "model": model, "other": other, "index": out}


def _one_line_error(capsys, args) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_build_writes_the_index_folder(setup):
    meta = json.loads((setup["index"] / "meta.json").read_text())
    assert meta["model"]["ref"] == str(setup["model"].resolve()) and meta["model"]["fingerprint"].startswith("sha256:")
    assert meta["counts"] == {"image": N_IMAGES, "caption": 6} and meta["count"] == N_IMAGES + 6
    assert meta["branches"] == {"image": "image", "caption": "caption"} and meta["dim"] == 32
    assert meta["index"] == "flat" and meta["mmvicreg_version"]
    assert {p.name for p in setup["index"].iterdir()} == {"index.faiss", "items.jsonl", "meta.json"}


def test_image_query_finds_itself_first(setup, tmp_path, capsys):
    query = sorted((setup["images"] / "sub").iterdir())[2]
    out = tmp_path / "hits.json"
    assert main(["search", "--index", str(setup["index"]), "--image", str(query), "-k", "5", "--json", str(out)]) == 0
    hits = json.loads(out.read_text())
    assert hits[0]["id"] == f"sub/{query.name}" and hits[0]["kind"] == "image" and hits[0]["rank"] == 1
    assert hits[0]["score"] == pytest.approx(1, abs=1e-5) and hits[0]["score"] > hits[1]["score"]
    printed = capsys.readouterr().out
    assert "FAISS CPU" in printed and f"sub/{query.name}" in printed.splitlines()[2]


def test_caption_query_writes_top_10_json(setup, tmp_path, capsys):
    out = tmp_path / "hits.json"
    assert main(["search", "--index", str(setup["index"]), "--text", "a dog on the grass", "-k", "10",
                 "--json", str(out)]) == 0
    hits = json.loads(out.read_text())
    assert [h["rank"] for h in hits] == list(range(1, 11))
    assert hits[0] == {"rank": 1, "score": pytest.approx(1, abs=1e-5), "row": N_IMAGES + 5, "id": "line 6",
                       "kind": "caption", "text": "a dog on the grass"}  # rows: the images, then the captions
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    files = [h["id"] for h in hits if h["kind"] == "image"]
    assert all(f.endswith(".jpg") and (setup["images"] / f).is_file() for f in files)
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == ["rank", "score", "kind", "item"] and len(table) == 12
    assert table[2].split()[:4] == ["1", f"{hits[0]['score']:.4f}", "caption", "line"]


@pytest.mark.parametrize("kind, options", [("hnsw", ["ef_search=64"]), ("ivf", ["nlist=4", "nprobe=4"])])
def test_approximate_indexes_load_and_answer(setup, tmp_path, kind, options):
    out = tmp_path / kind
    args = ["index", "build", "--model", str(setup["model"]), "--images", str(setup["images"]), "--out", str(out),
            "--index-kind", kind, "--chunk-size", "40", "--batch-size", "16", "--no-progress"]
    assert main(args + [a for o in options for a in ("--index-option", o)]) == 0
    query = sorted(setup["images"].glob("*.jpg"))[7]
    hits_file = tmp_path / "hits.json"
    assert main(["search", "--index", str(out), "--image", str(query), "-k", "3", "--json", str(hits_file)]) == 0
    hits = json.loads(hits_file.read_text())
    assert hits[0]["id"] == query.name and len(hits) == 3
    assert json.loads((out / "meta.json").read_text())["index"] == kind


def test_a_moved_model_is_found_with_model(setup, tmp_path, capsys):
    moved = tmp_path / "moved"
    shutil.copytree(setup["model"], moved)
    assert main(["search", "--index", str(setup["index"]), "--model", str(moved), "--text", "a dog"]) == 0
    assert "line" in capsys.readouterr().out


def test_another_model_fails_with_one_line(setup, capsys):
    err = _one_line_error(capsys, ["search", "--index", str(setup["index"]), "--model", str(setup["other"]),
                                   "--text", "a dog"])
    assert f"index {setup['index']} was built with model {setup['model'].resolve()} (fingerprint sha256:" in err
    assert f"not {setup['other'].resolve()} (fingerprint sha256:" in err
    assert f"rebuild it with mmvicreg index build --model {setup['other'].resolve()} --images " in err


def test_a_gone_model_says_so(setup, tmp_path, capsys):
    index = tmp_path / "idx"
    shutil.copytree(setup["index"], index)
    meta = json.loads((index / "meta.json").read_text())
    meta["model"]["ref"] = str(tmp_path / "deleted")
    (index / "meta.json").write_text(json.dumps(meta))
    err = _one_line_error(capsys, ["search", "--index", str(index), "--text", "a dog"])
    assert "no longer there; pass --model" in err


def test_an_index_naming_a_hub_model_does_not_download_it(setup, tmp_path, capsys, monkeypatch):
    """A shared index's meta.json names a Hub repo: the search refuses rather than fetch it on the index's word."""
    import huggingface_hub

    def no_download(*args, **kwargs):
        raise AssertionError("the index made the search reach the Hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    index = tmp_path / "idx"
    shutil.copytree(setup["index"], index)
    meta = json.loads((index / "meta.json").read_text())
    meta["model"]["ref"] = "someone/payload-model"
    (index / "meta.json").write_text(json.dumps(meta))
    err = _one_line_error(capsys, ["search", "--index", str(index), "--text", "a dog"])
    assert "names the model 'someone/payload-model', which is not a local folder" in err
    assert "pass --model someone/payload-model to download it" in err


def test_missing_index_fails_with_one_line(tmp_path, capsys):
    err = _one_line_error(capsys, ["search", "--index", str(tmp_path / "nope"), "--text", "a dog"])
    assert err.endswith(f"no search index at {tmp_path / 'nope'}: build one with mmvicreg index build --model MODEL "
                        f"--images FOLDER --out {tmp_path / 'nope'}")


@pytest.mark.parametrize("query", [[], ["--text", "a dog", "--image", "x.jpg"]])
def test_a_query_is_text_or_image(setup, capsys, query):
    err = _one_line_error(capsys, ["search", "--index", str(setup["index"]), *query])
    assert "pass exactly one of --text TEXT / --image PATH" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--index-kind", "hnsw", "--index-option", "nprobe=3"], r"unknown option(s) ['nprobe'] for a 'hnsw' index"),
        (["--index-option", "nprobe"], "--index-option 'nprobe' must look like key=value"),
        (["--image-branch", "caption"], "branch 'caption' is not one of the model's image branches"),
    ],
)
def test_build_mistakes_fail_with_one_line(setup, tmp_path, capsys, extra, message):
    err = _one_line_error(capsys, ["index", "build", "--model", str(setup["model"]), "--images",
                                   str(setup["images"]), "--out", str(tmp_path / "out"), *extra])
    assert message in err and not (tmp_path / "out").exists()


def test_build_needs_something_to_index(setup, tmp_path, capsys):
    err = _one_line_error(capsys, ["index", "build", "--model", str(setup["model"]), "--out", str(tmp_path / "o")])
    assert "nothing to index: pass --images FOLDER and/or --captions FILE" in err


# ------------------------------------------------------------------------------------------- safe by default


def test_build_refuses_a_folder_with_more_than_an_index_and_deletes_nothing(setup, tmp_path, capsys):
    """The issue's folder: an index's meta.json beside precious.txt and sub/ is not replaced, nor touched."""
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    shutil.copyfile(setup["index"] / "meta.json", out / "meta.json")
    (out / "precious.txt").write_text("keep me")
    (out / "sub" / "data.csv").write_text("a,b")
    err = _one_line_error(capsys, ["index", "build", "--model", str(setup["model"]), "--captions",
                                   str(setup["captions"]), "--out", str(out), "--no-progress"])
    assert f"{out} exists and is not a search index: it holds precious.txt, sub/, which an index build never " in err
    assert err.endswith("nothing was deleted; pass --out another folder, or remove only those entries")
    assert (out / "meta.json").read_bytes() == (setup["index"] / "meta.json").read_bytes()
    assert (out / "precious.txt").read_text() == "keep me" and (out / "sub" / "data.csv").read_text() == "a,b"


def test_build_replaces_a_previous_index(setup, tmp_path, capsys):
    out = tmp_path / "idx"
    shutil.copytree(setup["index"], out)
    assert main(["index", "build", "--model", str(setup["model"]), "--captions", str(setup["captions"]),
                 "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "meta.json").read_text())["counts"] == {"caption": 6}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no staging or old folder left


def test_shuffled_items_fail_the_search_with_one_line(setup, tmp_path, capsys):
    index = tmp_path / "idx"
    shutil.copytree(setup["index"], index)
    items = index / "items.jsonl"
    lines = items.read_text().splitlines(keepends=True)
    items.write_text("".join(reversed(lines)))
    err = _one_line_error(capsys, ["search", "--index", str(index), "--text", "a dog"])
    assert f"{items} is not the items file the index was built with" in err and "rebuild it with" in err


def test_a_query_image_over_pillows_limit_is_one_line(setup, tmp_path, capsys, monkeypatch):
    query = tmp_path / "huge.png"
    Image.new("RGB", (64, 64)).save(query)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels: over twice the limit
    err = _one_line_error(capsys, ["search", "--index", str(setup["index"]), "--image", str(query)])
    assert err == (f"mmvicreg: error: query image {query} is too large to decode (4096 pixels, over twice Pillow's "
                   f"limit of 1000, PIL.Image.MAX_IMAGE_PIXELS); pass a smaller copy of the image")


def test_a_huge_query_image_is_decoded_reduced(setup, tmp_path, capsys, monkeypatch):
    """A photo far larger than the model's input is decoded at a reduced scale (JPEG DCT scaling), never whole."""
    from PIL import ImageFile

    from mmvicreg.evaluation.search_index import QUERY_SHORT_SIDE, read_query_image

    query = tmp_path / "big.jpg"
    Image.new("RGB", (9000, 6000), (200, 30, 30)).save(query, quality=90)
    decoded = []
    real_load = ImageFile.ImageFile.load

    def load(self):
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    image = read_query_image(query)
    assert min(image.size) == QUERY_SHORT_SIDE and image.size == (1536, 1024)
    assert decoded and max(w * h for w, h in decoded) <= 4500 * 3000  # at 1/2 scale or less, not 9000 x 6000
    monkeypatch.undo()
    assert main(["search", "--index", str(setup["index"]), "--image", str(query), "-k", "3"]) == 0


SAFE_SCRIPT = """
import json, sys
from mmvicreg import JointEmbedding
from mmvicreg.cli import main
from mmvicreg.evaluation.search_index import SearchIndex

model, captions, out, hits = sys.argv[1:5]
assert main(["index", "build", "--model", model, "--captions", captions, "--out", out, "--no-progress"]) == 0
assert main(["search", "--index", out, "--text", "a dog on the grass", "-k", "3", "--json", hits]) == 0
index = SearchIndex.load(out)
api = index.query(JointEmbedding.from_pretrained(index.model_ref), text="a dog on the grass", k=3)
print(json.dumps({"cli": json.loads(open(hits).read()), "api": api}))
"""


def test_an_index_of_a_model_whose_tokenizer_names_code_runs_none_of_it(setup, tmp_path):
    """`index build`, `search` and the Python API on a model whose tokenizer points at a payload: nothing asks (stdin
    is closed), nothing runs (the payload would write its marker), nothing reaches the Hub (offline)."""
    from tests.model.exports import TOKENIZER, add_code_tokenizer, minilm_model

    export = minilm_model().save_pretrained(tmp_path / "model")
    marker = tmp_path / "payload-ran"
    add_code_tokenizer(export / TOKENIZER, marker)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_MODULES_CACHE": str(tmp_path / "modules")}
    args = [str(export), str(setup["captions"]), str(tmp_path / "idx"), str(tmp_path / "hits.json")]
    proc = subprocess.run([sys.executable, "-c", SAFE_SCRIPT, *args], cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not marker.exists() and not (tmp_path / "modules").exists()
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["cli"] == out["api"] and out["cli"][0]["id"] == "line 6"  # "a dog on the grass" finds itself

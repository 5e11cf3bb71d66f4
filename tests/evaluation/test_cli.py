"""``mmvicreg eval ...`` and the eval scripts over it, on models exported by short trainings: real COCO/Flickr
subsets, and k-NN on digits."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmvicreg.cli import main
from tests.helpers import REPO_ROOT as ROOT

QUICKSTART = ROOT / "examples" / "quickstart.yaml"
RETRIEVAL_KEYS = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "rsum", "i2t_medr",
                  "i2t_meanr", "t2i_medr", "t2i_meanr", "num_images", "num_captions"]


def _short_training(run: Path, data: list[str]) -> Path:
    args = ["train", str(QUICKSTART), f"output_dir={run}", "train.max_steps=3", "train.batch_size=16",
            "train.progress=false", "data.eval=null", *data]
    assert main(args) == 0
    return run / "model"


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "eval" / name), *args], capture_output=True, text=True,
                          timeout=600)


def test_retrieval_script_on_coco_mini(shared_data, tmp_path):
    root = shared_data / "coco-mini"
    train = ["data.train.format=coco", f"data.train.images={root / 'train2017'}",
             f"data.train.captions={root / 'annotations' / 'captions_train2017.json'}"]
    model = _short_training(tmp_path / "run", train)
    out, plot = tmp_path / "coco.json", tmp_path / "coco.png"
    proc = _script("retrieval.py", "--model", str(model), "--format", "coco", "--images", str(root / "val2017"),
                   "--captions", str(root / "annotations" / "captions_val2017.json"), "--json", str(out),
                   "--plot", str(plot), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert all(k in result for k in RETRIEVAL_KEYS)
    assert result["num_images"] == 79 and result["num_captions"] == 395
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert "image→text" in proc.stdout


def test_retrieval_script_on_flickr8k_1k_protocol(shared_data, tmp_path):
    root = shared_data / "flickr8k-1k"
    csv = ["data.train.format=csv", f"data.train.captions={root / 'captions.csv'}",
           f"data.train.images={root / 'images'}"]
    model = _short_training(tmp_path / "run", csv)
    out = tmp_path / "flickr.json"
    proc = _script("retrieval.py", "--model", str(model), "--format", "csv", "--images", str(root / "images"),
                   "--captions", str(root / "captions.csv"), "--protocol", "1k", "--json", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert all(k in result for k in RETRIEVAL_KEYS) and result["protocol"] == "1k"
    assert result["num_images"] == 1000 and result["num_captions"] == 5000
    # FAISS's flat index ranks exactly: every R@K equals the exact pass (serial decoding this time)
    flat_out = tmp_path / "flat.json"
    assert main(["eval", "retrieval", "--model", str(model), "--format", "csv", "--images", str(root / "images"),
                 "--captions", str(root / "captions.csv"), "--protocol", "1k", "--index-kind", "flat", "--workers", "0",
                 "--json", str(flat_out), "--no-progress"]) == 0
    flat = json.loads(flat_out.read_text())
    assert flat["faiss"] == "cpu" or torch.cuda.is_available()
    for key in [k for k in RETRIEVAL_KEYS if "R@" in k] + ["rsum"]:
        assert flat[key] == pytest.approx(result[key], abs=1e-9), key


def test_eval_device_and_faiss_mistakes_are_one_line(tmp_path, capsys):
    from mmvicreg import JointEmbedding

    JointEmbedding.from_config({"image": {"encoder": "test_resnet", "expander": "8", "transform": {"size": 16}},
                                "caption": {"encoder": {"name": "gru", "word_dim": 4, "hidden_dim": 4},
                                            "expander": "8"}}, captions=["a cat"]).save_pretrained(tmp_path / "m")
    base = ["eval", "retrieval", "--model", str(tmp_path / "m"), "--format", "shapes", "--option", "num_images=20",
            "--option", "size=16", "--no-progress", "--workers", "0"]
    cases = [(["--index-kind", "hnsw", "--index-option", "nlist=4"], "unknown option(s) ['nlist'] for a 'hnsw' index"),
             (["--index-option", "nprobe=4"], "applies to a FAISS --index-kind (flat, ivf, hnsw), not exact")]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "torch sees no CUDA GPU"))
    for extra, message in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_retrieval_script_bad_input_is_one_line(tmp_path):
    proc = _script("retrieval.py", "--model", str(tmp_path / "nope"), "--format", "shapes")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is not a directory" in proc.stderr


@pytest.mark.timeout(900)
def test_knn_on_digits_trained_beats_random_init(tmp_path):
    run = tmp_path / "digits"
    assert main(["train", str(ROOT / "examples" / "digits_siamese.yaml"), f"output_dir={run}",
                 "train.epochs=12", "train.progress=false", "data.eval=null"]) == 0
    out = tmp_path / "knn.json"
    assert main(["eval", "knn", "--model", str(run / "model"), "--format", "digits", "--compare-random-init",
                 "--json", str(out), "--no-progress"]) == 0
    results = json.loads(out.read_text())["results"]
    for branch in ("cnn", "vit"):
        trained, random = results["trained"][branch]["top1_k20"], results["random_init"][branch]["top1_k20"]
        print(f"k-NN k=20 {branch}: trained {trained:.1f}% vs random init {random:.1f}%")
        assert trained > random + 2.0, (branch, trained, random)


def _folder_split(root: Path, per_class: int) -> Path:
    """Class subfolders ``dark/`` and ``light/`` of small PNGs: a labelled image folder."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, level in (("dark", 40), ("light", 210)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(level + rng.normal(0, 20, (20, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


@pytest.fixture
def folder_data(tmp_path):
    """A saved image-only model and labelled train/test folders."""
    import torch

    from mmvicreg import JointEmbedding

    torch.manual_seed(0)
    image = {"encoder": {"name": "test_vit", "image_size": 16, "patch_size": 8}, "expander": "16",
             "transform": {"train": "eval", "eval": "eval", "size": 16}}
    JointEmbedding.from_config({"image": image}).save_pretrained(tmp_path / "model")
    return tmp_path / "model", _folder_split(tmp_path / "train", 6), _folder_split(tmp_path / "test", 3)


def test_knn_and_linear_probe_read_labelled_folders(folder_data, tmp_path):
    model, train, test = folder_data
    common = ["--model", str(model), "--format", "folder", "--train-images", str(train), "--test-images", str(test),
              "--no-progress"]
    out = tmp_path / "knn.json"
    assert main(["eval", "knn", *common, "--k", "3", "50", "--json", str(out)]) == 0
    knn = json.loads(out.read_text())
    assert knn["layer"] == "representation" and list(knn["results"]) == ["trained"]
    scores = knn["results"]["trained"]["image"]
    assert set(scores) == {"top1_k3", "num_train", "num_test"}  # k = 50 > the 12 training images is dropped
    assert (scores["num_train"], scores["num_test"]) == (12, 6) and 0 <= scores["top1_k3"] <= 100
    out = tmp_path / "probe.json"
    assert main(["eval", "linear-probe", *common, "--epochs", "3", "--compare-random-init", "--json", str(out)]) == 0
    probe = json.loads(out.read_text())["results"]
    assert set(probe) == {"trained", "random_init"}
    assert set(probe["trained"]["image"]) == {"top1_best", "top1_last", "best_epoch", "num_classes"}


def test_image_scripts_report_missing_folders_in_one_line(folder_data):
    model, _, _ = folder_data
    for script in ("knn.py", "linear_probe.py"):
        proc = _script(script, "--model", str(model), "--format", "folder")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert proc.stderr.strip() == (
            "mmvicreg: error: format 'folder' needs --train-images and --test-images (class subfolders of images)")

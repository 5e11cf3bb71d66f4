"""Training on webdataset shards written by `mmvicreg shards` from Flickr8k: every key once per epoch with 0 and
2 workers, two processes, kill -9 and resume to the same weights, bad samples counted in data_report.json."""

import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from mmvicreg.config import load_config
from mmvicreg.data.build import format_options
from mmvicreg.data.preprocess import branch_preprocessors
from mmvicreg.data.streaming import StreamDataset, StreamLoader
from mmvicreg.train import train
from mmvicreg.train.setup import setup

IMAGES = 96  # Flickr8k images written to shards (one sample per image–caption pair: 480 samples)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from tests.conftest import SHARED_DATA

    flickr = SHARED_DATA / "flickr8k-1k"
    if not flickr.is_dir():
        pytest.skip(f"../shared/data/flickr8k-1k is absent (looked in {flickr}); these tests shard real Flickr8k")
    root = tmp_path_factory.mktemp("shards")
    with open(flickr / "captions.csv") as f:
        rows = list(csv.DictReader(f))
    keep = sorted({r["image"] for r in rows})[:IMAGES]
    subset = root / "captions.csv"
    with open(subset, "w", newline="") as f:
        w = csv.DictWriter(f, ["image", "caption"])
        w.writeheader()
        w.writerows(r for r in rows if r["image"] in keep)
    out = root / "flickr"
    proc = subprocess.run(
        [sys.executable, "-m", "mmvicreg", "shards", "--format", "csv", "--captions", str(subset), "--images",
         str(flickr / "images"), "--out", str(out), "--samples-per-shard", "64"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def _tree(run_dir, shards_dir, workers=0, **train_options):
    return {
        "output_dir": str(run_dir),
        "branches": {
            "image": {"encoder": "test_resnet", "expander": "64-64",
                      "transform": {"train": "vicreg_view1", "eval": "eval", "size": 32}},
            "caption": {"encoder": {"name": "gru", "word_dim": 16, "hidden_dim": 32}, "expander": "64-64"},
        },
        "data": {"train": {"format": "webdataset", "shards": f"{shards_dir}/shards.txt", "shuffle_buffer": 50},
                 "workers": workers},
        "train": {"batch_size": 32, "max_steps": 6, "checkpoint_every": 2, "seed": 0, "log_every": 1,
                  "progress": False, "optimizer": {"name": "adamw", "lr": 0.001}, **train_options},
    }


def _load(tree):
    return load_config(tree, format_keys=format_options)


@pytest.mark.parametrize("workers", [0, 2])
def test_an_epoch_of_shards_reads_every_key_once(shards, tmp_path, workers):
    config = _load(_tree(tmp_path, shards, workers))
    run = setup(config)
    counted = Counter()
    for rank in range(2):  # the plan of each of two processes, read here one after the other
        items = branch_preprocessors(run.unwrapped.preprocessing(), train=True)
        dataset = StreamDataset(run.train_source, items, 32, 0, rank, 2, workers, extra_fields=("key",))
        loader = StreamLoader(dataset, workers)
        loader.set_epoch(1)
        counted.update(k for batch in loader for k in batch["key"])
    total = len(run.train_source)
    assert total == IMAGES * 5
    assert len(counted) == total // 32 * 32 and max(counted.values()) == 1


def test_two_processes_train_on_shards(shards, tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(_tree(tmp_path / "two", shards, workers=2, max_steps=4)))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29547", "-m", "mmvicreg",
         "train", str(path)], env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [json.loads(line)["step"] for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def _train_process(tree, path):
    path.write_text(yaml.safe_dump(tree))
    return subprocess.Popen([sys.executable, "-m", "mmvicreg", "train", str(path)], env={**os.environ,
                            "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("workers", [0, 2])
def test_kill_9_and_resume_gives_the_uninterrupted_weights(shards, tmp_path, workers):
    # 15 batches an epoch: the run crosses two; long enough that a kill soon after a checkpoint comes before the end
    steps = {"max_steps": 36, "checkpoint_every": 3}
    straight = _train_process(_tree(tmp_path / "straight", shards, workers, **steps), tmp_path / "a.yaml")
    assert straight.wait(timeout=500) == 0, straight.stderr.read()[-2000:]
    rng = random.Random(workers)
    for attempt in range(2):  # killed twice, at a random moment after a checkpoint, then finished
        tree = _tree(tmp_path / "killed", shards, workers, **steps)
        tree["resume"] = attempt > 0
        proc = _train_process(tree, tmp_path / "b.yaml")
        ckpts = tmp_path / "killed" / "checkpoints"
        deadline = time.time() + 300
        while time.time() < deadline and len(list(ckpts.glob("step_*"))) < attempt + 1 and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(rng.uniform(0.0, 0.75))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / "killed" / "model").exists()  # the kills came before the end
    tree = _tree(tmp_path / "killed", shards, workers, **steps)
    tree["resume"] = True
    last = _train_process(tree, tmp_path / "b.yaml")
    assert last.wait(timeout=500) == 0, last.stderr.read()[-2000:]
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_corrupt_jpeg_and_a_captionless_sample_are_counted_and_training_finishes(shards, tmp_path):
    import webdataset as wds

    bad = tmp_path / "bad.tar"
    good = Image.new("RGB", (40, 30), (200, 10, 10))
    buffer = io.BytesIO()
    good.save(buffer, format="JPEG")
    with wds.TarWriter(str(bad)) as writer:
        writer.write({"__key__": "corrupt", "jpg": buffer.getvalue()[:40], "txt": "a red square"})
        writer.write({"__key__": "silent", "jpg": buffer.getvalue()})
        for i in range(30):
            writer.write({"__key__": f"fine{i:03d}", "jpg": buffer.getvalue(), "txt": "a red square"})
    listing = tmp_path / "shards.txt"
    written = [str(Path(shards, name)) for name in Path(shards, "shards.txt").read_text().split()]
    listing.write_text("\n".join([*written, str(bad)]) + "\n")
    tree = _tree(tmp_path / "run", shards, max_steps=16)
    tree["data"]["train"].update(shards=str(listing), on_bad_image="skip", on_bad_caption="skip")
    train(_load(tree))
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())["train"]
    assert report["skipped_images"] == 1 and report["skipped_captions"] == 1, report

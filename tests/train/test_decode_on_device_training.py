"""``data.decode_on: device`` in training and evaluation: the same steps as ``decode_on: workers`` (the CPU decodes the
same pixels here), a resume that is bit-identical, micro-batches equal to the whole batch, and evaluation's recall
within a point of the workers' decode."""

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mmvicreg.config import load_config
from mmvicreg.data import csv_captions
from mmvicreg.data.build import format_options
from mmvicreg.evaluation.model_level import embed_for_retrieval, score_retrieval
from mmvicreg.model import JointEmbedding
from mmvicreg.train import train
from tests.data.test_decode_on_device import _picture
from tests.helpers.configs import tiny_config
from tests.helpers.interrupt import DieAfterCheckpoint, Interrupted

STEPS = 12


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """64 captioned 30 x 30 JPEGs (a 16 px view's crop is under 32 px: the workers never decode reduced), 4 colours."""
    folder = tmp_path_factory.mktemp("jpegs")
    (folder / "images").mkdir()
    colours = ("red", "green", "blue", "grey")
    rows = ["image,caption"]
    for i in range(64):
        picture = _picture(30, 30, seed=i) // 2
        picture[..., i % 3] += 120 if i % 4 < 3 else 0
        Image.fromarray(picture).save(folder / "images" / f"{i}.jpg", quality=90)
        rows.append(f"{i}.jpg,a {colours[i % 4]} picture")
    (folder / "captions.csv").write_text("\n".join(rows) + "\n")
    return folder


def _tree(run_dir, folder, decode_on="device", **train_options):
    tree = tiny_config(run_dir, max_steps=STEPS, checkpoint_every=6, **train_options)
    tree["branches"]["image"]["transform"] = {"train": "vicreg_view1", "augment_on": "device", "eval": "eval",
                                              "size": 16}
    tree["data"] = {"decode_on": decode_on, "eval": None,
                    "train": {"format": "csv", "captions": str(folder / "captions.csv"),
                              "images": str(folder / "images"), "pairs": "all"}}
    return tree


def _run(tree, **kwargs):
    return train(load_config(tree, [], format_keys=format_options), **kwargs)


def _weights(run_dir):
    return load_file(run_dir / "model" / "model.safetensors")


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def device_run(jpegs, tmp_path_factory):
    """A run with decode_on: device; ``decoded.txt`` beside it: the batch sizes its device stage decoded."""
    import mmvicreg.data.device_decode as device_decode

    run_dir = tmp_path_factory.mktemp("runs") / "device"
    sizes, real = [], device_decode.decode_jpeg
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(device_decode, "decode_jpeg", lambda data, **kw: sizes.append(len(data)) or real(data, **kw))
        _run(_tree(run_dir, jpegs))
    (run_dir / "decoded.txt").write_text(" ".join(map(str, sizes)))
    return run_dir


def test_training_trains_and_takes_the_same_steps_as_decoding_in_the_workers(device_run, jpegs, tmp_path):
    assert (device_run / "decoded.txt").read_text() == " ".join(["16"] * STEPS)  # every batch decoded there
    losses = _losses(device_run)
    assert len(losses) == STEPS and sum(losses[-3:]) < sum(losses[:3])
    _run(_tree(tmp_path / "workers", jpegs, decode_on="workers"))
    a, b = _weights(device_run), _weights(tmp_path / "workers")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # same pixels, same draws, same steps
    assert _losses(tmp_path / "workers") == losses


def test_a_killed_run_resumes_bit_identical(device_run, jpegs, tmp_path):
    tree = _tree(tmp_path / "resumed", jpegs)
    with pytest.raises(Interrupted):
        _run(tree, callbacks=[DieAfterCheckpoint(6)])
    tree["resume"] = True
    _run(tree)
    a, b = _weights(device_run), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_micro_batches_take_the_whole_batch_step(jpegs, tmp_path):
    """BatchNorm-free branches and no colour draw (``light``): chunks of 4 give the step of the batch of 16 (SGD, as
    tests/train/test_chunked.py: Adam's normalisation would magnify float rounding)."""
    runs = {}
    for micro in (None, 4):
        tree = _tree(tmp_path / f"micro{micro}", jpegs, micro_batch_size=micro,
                     optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9})
        tree["branches"]["image"]["transform"] = {"train": "light", "eval": "eval", "size": 16}
        tree["train"]["max_steps"] = 3
        _run(tree)
        runs[micro] = _weights(tmp_path / f"micro{micro}")
    flat = [torch.cat([s[k].double().flatten() for k in sorted(s)]) for s in runs.values()]
    assert float((flat[0] - flat[1]).norm() / flat[0].norm()) < 1e-5


def test_evaluation_recall_on_the_device_is_within_a_point_of_the_workers(device_run, jpegs):
    model = JointEmbedding.from_pretrained(str(device_run / "model"))
    source = csv_captions(jpegs / "captions.csv", jpegs / "images")
    scores = {}
    for decode_on in ("workers", "device"):
        emb = embed_for_retrieval(model, source, ["image", "caption"], batch_size=16, captions_per_image=1,
                                  decode_on=decode_on)
        scores[decode_on] = (emb, score_retrieval(emb, "5k"))
    (cpu, cpu_scores), (device, device_scores) = scores["workers"], scores["device"]
    assert torch.allclose(cpu.image, device.image, atol=0.05, rtol=0)
    for key in ("i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5"):
        assert abs(cpu_scores[key] - device_scores[key]) <= 100 / 64 + 1e-9, key  # at most one image of 64

"""loss.name: supervised through the trainer: from the command line the loss falls and VCReg's terms are logged;
the export loads for eval knn; resume is bit-identical (the head included); micro-batches equal the whole batch;
unlabelled training images are one line before training."""

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mmvicreg.cli import main
from mmvicreg.config import ConfigError, load_config
from mmvicreg.data.build import format_options
from mmvicreg.train import train
from tests.helpers import REPO_ROOT
from tests.helpers.interrupt import DieAfterCheckpoint, Interrupted

EXAMPLE = REPO_ROOT / "examples" / "digits_supervised_vcreg.yaml"
SIZE = 16
QUICK = [f"data.train.size={SIZE}", f"data.eval.size={SIZE}", f"branches.image.transform.size={SIZE}",
         "train.batch_size=64", "train.progress=false", "train.log_every=1", "train.warmup_steps=5"]


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_from_the_command_line_the_loss_falls_and_vcregs_terms_are_logged(tmp_path, one_thread, capsys):
    run = tmp_path / "run"
    assert main(["train", str(EXAMPLE), f"output_dir={run}", "train.max_steps=60", "train.checkpoint_every=60",
                 "train.optimizer.lr=0.005",
                 *QUICK]) == 0
    records = _metrics(run)
    assert [r["step"] for r in records] == list(range(1, 61))
    blocks = [k for k in records[0] if k.startswith("vcreg/")]
    assert len(blocks) == 4 and all("encoder.model.layer" in k for k in blocks)  # every block of the encoder
    for r in records:
        torch.testing.assert_close(r["loss"], r["supervised"] + r["vcreg"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(r["vcreg"], sum(r[k] for k in blocks), rtol=1e-5, atol=1e-5)
    first, last = (sum(r[key] for r in rs) / 5 for rs in (records[:5], records[-5:]) for key in ["supervised"])
    assert last < 0.8 * first, (first, last)
    assert sum(r["accuracy"] for r in records[-5:]) > sum(r["accuracy"] for r in records[:5])
    assert json.loads((run / "eval.json").read_text())["knn"]["image"]["top1_k20"] > 50
    out = tmp_path / "knn.json"  # the export loads for the image evaluations, on held-out classes too
    assert main(["eval", "knn", "--model", str(run / "model"), "--format", "digits", "--option", f"size={SIZE}",
                 "--option", "classes=[5, 6, 7, 8, 9]", "--workers", "0", "--no-progress", "--json", str(out)]) == 0
    held_out = json.loads(out.read_text())
    assert held_out, held_out


def _tree(run_dir, **train_options):
    config = load_config(EXAMPLE, [f"output_dir={run_dir}", *QUICK, "data.eval=null"], format_keys=format_options)
    tree = config.to_dict()
    tree["train"].update(train_options)
    return tree


def _run(tree, **kwargs):
    return train(load_config(tree, [], format_keys=format_options), **kwargs)


def test_a_resumed_supervised_run_is_bit_identical_to_an_uninterrupted_one(tmp_path, one_thread):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _run(_tree(straight, max_steps=6, checkpoint_every=2))
    with pytest.raises(Interrupted):
        _run(_tree(resumed, max_steps=6, checkpoint_every=2), callbacks=[DieAfterCheckpoint(2)])
    tree = _tree(resumed, max_steps=6, checkpoint_every=2)
    tree["resume"] = True
    _run(tree)
    a, b = load_file(straight / "model" / "model.safetensors"), load_file(resumed / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    heads = [torch.load(r / "checkpoints" / "step_00000006" / "custom_checkpoint_0.pkl") for r in (straight, resumed)]
    assert set(heads[0]) == {"head.weight", "head.bias"}  # the head is checkpointed: the resumed run trained it
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    assert [r["loss"] for r in _metrics(straight)] == [r["loss"] for r in _metrics(resumed)]


def test_micro_batches_give_the_whole_batch_step(tmp_path, one_thread):
    """A BatchNorm-free encoder: the gradient cache of ∂L/∂h with the labels whole is the unchunked step."""
    def tree(run_dir, micro):
        t = _tree(run_dir, max_steps=3, checkpoint_every=3, micro_batch_size=micro,
                  optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9})
        t["branches"]["image"]["encoder"] = {"name": "test_vit", "image_size": SIZE, "patch_size": 8}
        t["loss"]["vcreg_layers"] = []  # VCReg is per chunk by nature (the log says so)
        return t

    _run(tree(tmp_path / "whole", None))
    _run(tree(tmp_path / "chunked", 16))
    a, b = (load_file(tmp_path / r / "model" / "model.safetensors") for r in ("whole", "chunked"))
    flat = [torch.cat([s[k].double().flatten() for k in sorted(s)]) for s in (a, b)]
    assert float((flat[0] - flat[1]).norm() / flat[0].norm()) < 1e-5
    start = load_file(tmp_path / "whole" / "checkpoints" / "step_00000003" / "model.safetensors")
    assert start.keys() == a.keys()


def test_unlabelled_training_images_are_one_line_before_training(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(images / f"{i}.png")
    tree = _tree(tmp_path / "run", max_steps=2)
    tree["data"]["train"] = {"format": "folder", "images": str(images)}
    with pytest.raises(ConfigError, match=r"loss.name: supervised needs every training image labelled .*has 0 "
                                          r"classes: give folder class subfolders"):
        _run(tree)
    assert not (tmp_path / "run" / "checkpoints").exists()

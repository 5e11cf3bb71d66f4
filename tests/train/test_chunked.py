"""train.micro_batch_size: the gradient-cache step equals the whole-batch step; BatchNorm sees chunks; resume; errors."""

import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mmvicreg.config import ConfigError, LossConfig, load_config
from mmvicreg.data.build import format_options
from mmvicreg.model import JointEmbedding
from mmvicreg.objective import build_objective
from mmvicreg.train import train
from mmvicreg.train.chunked import cached_forward_backward
from tests.helpers.configs import tiny_config
from tests.helpers.interrupt import DieAfterCheckpoint, Interrupted


def _config(run_dir, micro=None, loss="vicreg", norm="layer", **train_options):
    """Batch 128 of shapes scenes, 3 SGD steps, BatchNorm-free branches unless ``norm="batch"``."""
    options = {"batch_size": 128, "max_steps": 3, "checkpoint_every": 3, "micro_batch_size": micro,
               "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, **train_options}
    tree = tiny_config(run_dir, **options)
    tree["data"]["train"].update(num_images=128, pairs="all")  # no random caption draw: both runs see one batch
    tree["data"]["eval"] = None
    for branch in tree["branches"].values():
        branch.update(expander="32-32", expander_norm=norm)
    tree["loss"] = {"name": loss}
    return tree


def _run(tree, overrides=(), **kwargs):
    return train(load_config(tree, list(overrides), format_keys=format_options), **kwargs)


def _weights(run_dir):
    return load_file(run_dir / "model" / "model.safetensors")


def _relative_gap(a: dict, b: dict) -> float:
    """||a - b|| / ||a|| over every weight of the model at once (zero-initialised biases make per-tensor ratios
    of float32 round-off; the float64 test below checks each gradient to 1e-12)."""
    assert a.keys() == b.keys()
    flat_a, flat_b = (torch.cat([s[k].double().flatten() for k in sorted(s)]) for s in (a, b))
    return float((flat_a - flat_b).norm() / flat_a.norm())


@pytest.mark.parametrize("loss", ["vicreg", "infonce", "triplet", "barlow"])
def test_chunked_steps_equal_whole_steps_without_batchnorm(tmp_path, loss):
    _run(_config(tmp_path / "whole", loss=loss))
    _run(_config(tmp_path / "chunked", micro=32, loss=loss))
    assert _relative_gap(_weights(tmp_path / "whole"), _weights(tmp_path / "chunked")) < 1e-5


@pytest.mark.parametrize("loss", ["vicreg", "infonce", "triplet", "barlow"])
def test_chunked_gradients_equal_whole_gradients_in_float64(loss):
    torch.manual_seed(0)
    spec = {"image": {"encoder": {"name": "test_vit", "image_size": 16, "patch_size": 8}, "expander": "32-32",
                      "expander_norm": "layer"},
            "caption": {"encoder": {"name": "gru", "word_dim": 8, "hidden_dim": 16}, "expander": "32-32",
                        "expander_norm": "none"}}
    model, reference, batch = _twin_models(spec, torch.randn(32, 3, 16, 16, dtype=torch.float64))
    objective = build_objective(LossConfig(name=loss), spec).double()
    objective(reference(batch)).loss.backward()
    _chunked_step(model, objective, batch, 8)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_each_chunk_replays_the_dropout_and_drop_path_of_its_first_forward():
    """Reference: one graph over the chunks' forwards in order, drawing their masks from the same starting state.
    Without the replay the second forward would draw new masks and the gradients would differ."""
    vit = {"name": "test_vit", "image_size": 16, "patch_size": 8, "drop_path_rate": 0.3, "proj_drop_rate": 0.3}
    spec = {"image": {"encoder": vit, "expander": "32-32", "expander_norm": "layer"},
            "caption": {"encoder": {"name": "gru", "word_dim": 8, "hidden_dim": 16}, "expander": "32"}}
    torch.manual_seed(0)
    model, reference, batch = _twin_models(spec, torch.randn(32, 3, 16, 16, dtype=torch.float64))
    objective = build_objective(LossConfig(), spec)
    torch.manual_seed(1)
    parts = [reference({k: v[i : i + 8] for k, v in batch.items()}) for i in range(0, 32, 8)]
    objective({b: torch.cat([p[b] for p in parts]) for b in spec}).loss.backward()
    torch.manual_seed(1)
    _chunked_step(model, objective, batch, 8)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12, msg=name)

    torch.manual_seed(2)  # other masks: a different gradient, so the comparison above could fail
    model.zero_grad()
    _chunked_step(model, objective, batch, 8)
    gaps = [float((p.grad - q.grad).norm()) for p, q in zip(model.parameters(), reference.parameters())]
    assert max(gaps) > 1e-6


def _twin_models(spec, images):
    """Two float64 copies of one model and a batch of ``images`` with 32 captions of equal length."""
    captions = [f"a red circle number {i}" for i in range(40)]
    model = JointEmbedding.from_config(spec, captions=captions).double()
    reference = JointEmbedding.from_config(spec, captions=captions).double()
    reference.load_state_dict(model.state_dict())
    tokens = torch.stack([model.branch("caption").tokenizer.encode(c) for c in captions[:32]])
    return model, reference, {"image": images, "caption": tokens}


def _chunked_step(model, objective, batch, size):
    from accelerate import Accelerator

    run = SimpleNamespace(accelerator=Accelerator(cpu=True), model=model, objective=objective, vcreg=None)
    return cached_forward_backward(run, batch, size)


def _train_in_a_process(tree, path, *launcher):
    """``mmvicreg train`` in a fresh interpreter (Accelerate's precision is fixed once per process)."""
    path.write_text(yaml.safe_dump(tree))
    proc = subprocess.run([sys.executable, *launcher, "-m", "mmvicreg", "train", str(path)],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_chunked_steps_under_bf16_autocast_follow_whole_steps(tmp_path):
    _train_in_a_process(_config(tmp_path / "whole", mixed_precision="bf16", cpu=True), tmp_path / "whole.yaml")
    _train_in_a_process(_config(tmp_path / "chunked", micro=32, mixed_precision="bf16", cpu=True), tmp_path / "c.yaml")
    assert _relative_gap(_weights(tmp_path / "whole"), _weights(tmp_path / "chunked")) < 2e-2


def test_batchnorm_sees_each_chunk_as_a_batch_of_its_own():
    """The reference: one autograd graph over the chunks' forwards, concatenated (what BatchNorm sees is the
    same chunks); its gradients and running statistics equal the gradient-cache step's."""
    torch.manual_seed(0)
    spec = {"image": {"encoder": {"name": "test_resnet"}, "expander": "32-32"},
            "caption": {"encoder": {"name": "gru", "word_dim": 8, "hidden_dim": 16}, "expander": "32-32"}}
    model, reference, batch = _twin_models(spec, torch.randn(32, 3, 32, 32, dtype=torch.float64))
    objective = build_objective(LossConfig(), spec)

    zs_parts = [reference({k: v[i : i + 8] for k, v in batch.items()}) for i in range(0, 32, 8)]
    ref_out = objective({b: torch.cat([p[b] for p in zs_parts]) for b in spec})
    ref_out.loss.backward()

    out, _ = _chunked_step(model, objective, batch, 8)
    assert float(out.loss.detach()) == pytest.approx(float(ref_out.loss.detach()), rel=1e-10)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-8, atol=1e-10, msg=name)
    for (name, b), c in zip(model.named_buffers(), reference.buffers()):
        assert torch.equal(b, c), f"{name}: running statistics moved differently"

    whole, _, _ = _twin_models(spec, batch["image"])  # BatchNorm over all 32 rows: not the same step
    whole.load_state_dict(reference.state_dict())
    objective(whole(batch)).loss.backward()
    gaps = [float((p.grad - q.grad).norm() / q.grad.norm()) for p, q in zip(whole.parameters(), reference.parameters())
            if q.grad is not None and q.grad.norm() > 0]
    assert max(gaps) > 1e-3


def test_a_killed_chunked_run_resumes_to_the_same_weights(tmp_path):
    options = dict(micro=32, max_steps=4)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    tree = _config(straight, **options)
    tree["train"]["checkpoint_every"] = 2
    _run(tree)
    tree = _config(resumed, **options)
    tree["train"]["checkpoint_every"] = 2
    with pytest.raises(Interrupted):
        _run(tree, callbacks=[DieAfterCheckpoint(2)])
    tree["resume"] = True
    _run(tree)
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_vcreg_hooks_run_per_chunk_and_the_log_says_so(tmp_path, capsys):
    tree = _config(tmp_path / "run", micro=32, norm="batch")
    tree["loss"]["vcreg_layers"] = ["branches.image.encoder.model.blocks.0"]
    _run(tree)
    said = capsys.readouterr().out
    assert "each process runs its 128 samples in 4 chunks" in said
    assert "VCReg penalty (loss.vcreg_layers) is computed per chunk" in said
    assert re.search("BatchNorm in branches (image, caption|caption, image) sees one chunk of 32", said)


@pytest.mark.parametrize("micro, message", [
    (48, "train.micro_batch_size 48 does not divide train.batch_size 128; choose a divisor .e.g. 32."),
    (256, "train.micro_batch_size is 256; it must be between 1 and train.batch_size .128."),
    (0, "train.micro_batch_size is 0"),
])
def test_bad_micro_batch_sizes_are_one_line(tmp_path, micro, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_config(tmp_path, micro=micro), format_keys=format_options)


def test_a_micro_batch_that_does_not_divide_each_process_share_is_one_line(tmp_path):
    from mmvicreg.config import check_batch_split  # the one batch-split rule (make_accelerator calls it too)

    train_section = load_config(_config(tmp_path, micro=64), format_keys=format_options).train  # 128 / 64: fine
    check_batch_split(train_section, 2)
    with pytest.raises(ConfigError, match=r"train.micro_batch_size 64 does not divide each process's share of the "
                                          r"batch, 32 \(train.batch_size 128 over 4 processes\); choose a divisor "
                                          r"of 32, e.g. 32"):
        check_batch_split(train_section, 4)


@pytest.mark.timeout(600)
def test_two_chunked_processes_follow_one_whole_process(tmp_path):
    _run(_config(tmp_path / "single"))
    said = _train_in_a_process(_config(tmp_path / "two", micro=32), tmp_path / "two.yaml",
                               "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541")
    assert "each process runs its 64 samples in 2 chunks" in said
    assert _relative_gap(_weights(tmp_path / "single"), _weights(tmp_path / "two")) < 1e-5

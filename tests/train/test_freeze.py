"""Per-branch training switches in a run: freeze (weights and statistics fixed, saved once), unfreeze_last,
gradient_checkpointing; and their one-line errors before any work."""

import pytest
import torch
from safetensors.torch import load_file

from mmvicreg.config import ConfigError, load_config
from mmvicreg.data.build import format_options
from mmvicreg.train import train
from mmvicreg.train.checkpoint import FROZEN_FILE
from mmvicreg.train.setup import setup
from tests.helpers.configs import tiny_config
from tests.helpers.interrupt import DieAfterCheckpoint, Interrupted


def _config(run_dir, **image):
    """The tiny run with a BatchNorm image tower (test_resnet) and BatchNorm expanders."""
    tree = tiny_config(run_dir, max_steps=4, checkpoint_every=2)
    tree["data"]["eval"] = None
    tree["branches"]["image"] = {"encoder": "test_resnet", "expander": "32-32",
                                 "transform": {"train": "eval", "eval": "eval", "size": 16}, **image}
    tree["branches"]["caption"]["expander"] = "32-32"
    return tree


def _load(tree):
    return load_config(tree, format_keys=format_options)


def _encoder(state: dict, branch: str = "image") -> dict:
    prefix = f"branches.{branch}.encoder."
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def test_a_frozen_encoder_stays_bit_identical_while_its_expander_trains(tmp_path):
    before = {k: v.clone() for k, v in setup(_load(_config(tmp_path / "init", freeze=True))).unwrapped.state_dict().items()}
    train(_load(_config(tmp_path / "frozen", freeze=True)))
    train(_load(_config(tmp_path / "free")))
    after = load_file(tmp_path / "frozen" / "model" / "model.safetensors")
    free = load_file(tmp_path / "free" / "model" / "model.safetensors")
    encoder = _encoder(before)
    assert any("running_mean" in k for k in encoder)  # BatchNorm statistics are part of what must not move
    for k in encoder:
        assert torch.equal(after[k], before[k]), k
    assert any(not torch.equal(free[k], before[k]) for k in encoder)  # unfrozen, the same run moves them
    expander = [k for k in before if k.startswith("branches.image.expander.")]
    assert all(not torch.equal(after[k], before[k]) for k in expander if "weight" in k)

    # Saved once: the checkpoints hold every tensor but the frozen encoder's, which has its own file.
    checkpoint = load_file(tmp_path / "frozen" / "checkpoints" / "step_00000004" / "model.safetensors")
    assert not _encoder(checkpoint) and _encoder(checkpoint, "caption")
    assert set(load_file(tmp_path / "frozen" / "checkpoints" / FROZEN_FILE)) == set(encoder)


def test_the_optimiser_holds_no_frozen_parameter(tmp_path):
    run = setup(_load(_config(tmp_path, freeze=True, unfreeze_last=1)))
    held = {id(p) for group in run.optimizer.param_groups for p in group["params"]}
    encoder = run.unwrapped.branch("image").encoder
    frozen = [p for p in encoder.parameters() if not p.requires_grad]
    trained = [p for p in encoder.parameters() if p.requires_grad]
    assert frozen and trained  # unfreeze_last=1: the last stage trains
    assert not any(id(p) in held for p in frozen)
    assert all(id(p) in held for p in trained)
    assert all(id(p) in held for p in run.unwrapped.branch("image").expander.parameters())


def test_a_partly_frozen_run_resumes_to_the_same_weights(tmp_path):
    options = {"freeze": True, "unfreeze_last": 1}
    train(_load(_config(tmp_path / "straight", **options)))
    with pytest.raises(Interrupted):
        train(_load(_config(tmp_path / "resumed", **options)), callbacks=[DieAfterCheckpoint(2)])
    tree = _config(tmp_path / "resumed", **options)
    tree["resume"] = True
    train(_load(tree))
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_checkpoint_whose_frozen_file_is_gone(tmp_path):
    train(_load(_config(tmp_path, freeze=True)))
    (tmp_path / "checkpoints" / FROZEN_FILE).unlink()
    tree = _config(tmp_path, freeze=True)
    tree["resume"] = True
    tree["train"]["max_steps"] = 6
    with pytest.raises(Exception, match=f"{FROZEN_FILE} is missing: it holds the frozen encoders' weights"):
        train(_load(tree))


def test_gradient_checkpointing_trains_the_same_weights(tmp_path):
    train(_load(_config(tmp_path / "plain")))
    train(_load(_config(tmp_path / "ckpt", gradient_checkpointing=True)))
    a = load_file(tmp_path / "plain" / "model" / "model.safetensors")
    b = load_file(tmp_path / "ckpt" / "model" / "model.safetensors")
    for k in a:
        if "running_" in k or "num_batches" in k:  # BatchNorm runs again in the recompute: its statistics move twice
            continue
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("change, message", [
    (lambda t: t["branches"]["caption"].update(gradient_checkpointing=True),
     "branches.caption.gradient_checkpointing: encoder 'gru' has no gradient checkpointing switch; remove the key"),
    (lambda t: t["branches"]["image"].update(unfreeze_last=1),
     "branches.image.unfreeze_last is 1; it counts the encoder's last layer groups that still train under "
     "`freeze: true`"),
    (lambda t: t["branches"].update(view={"shares": "image", "freeze": True}),
     "branches.view.freeze is True but branch 'image', whose encoder it shares, has None"),
])
def test_bad_switches_are_one_line_before_any_work(tmp_path, change, message):
    tree = _config(tmp_path / "run")
    change(tree)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train(_load(tree))
    assert not (tmp_path / "run").exists()

"""``loss.vcreg_layers: [blocks]`` puts VCReg on the output of every block, the VCReg paper's placement: each
residual block of a timm ResNet, each block of every ConvNeXt stage and of a ViT, our GRU tower's recurrent layer."""

import pytest
import timm
import torch
import yaml

from mmvicreg.cli import main
from mmvicreg.objective.vcreg import VCRegHooks, block_names, resolve_layers
from tests.helpers.configs import tiny_config


@pytest.mark.parametrize("name, depths", [("resnet18", (2, 2, 2, 2)), ("convnext_atto", (2, 2, 6, 2)),
                                          ("vit_tiny_patch16_224", (12,))])
def test_every_block_of_a_timm_model(name, depths):
    model = timm.create_model(name, pretrained=False)
    names = block_names(model)
    assert len(names) == sum(depths)
    modules = dict(model.named_modules())
    assert all(type(modules[n]).__name__ in ("BasicBlock", "ConvNeXtBlock", "Block") for n in names)


def test_hooks_on_every_block_give_a_penalty_with_gradients():
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    with VCRegHooks(model, resolve_layers(model, ["blocks"])) as hooks:
        out = model(torch.randn(4, 3, 32, 32))
        penalty = hooks.loss()
    assert len(hooks.layers) == 8 and set(hooks.last_terms) == {f"vcreg/{n}" for n in hooks.layers}
    penalty.backward()  # (timm zero-inits each block's last BN scale: the stem and that scale get gradients)
    assert model.conv1.weight.grad.abs().sum() > 0 and model.layer1[0].bn2.weight.grad.abs().sum() > 0
    assert out.shape == (4, 10)


def test_a_model_without_blocks_is_one_line():
    with pytest.raises(ValueError, match="'blocks' found no blocks in Linear"):
        resolve_layers(torch.nn.Linear(3, 3), ["blocks"])


def run_tiny(tmp_path, name, loss, max_steps):
    """The tiny run (no eval) with ``loss`` for ``max_steps``, from the command line, into ``tmp_path/name``."""
    tree = tiny_config(tmp_path / name, max_steps=max_steps)
    tree["loss"] = loss
    tree["data"].pop("eval")
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(tree))
    assert main(["train", str(tmp_path / f"{name}.yaml")]) == 0


def _first_loss(tmp_path, name, loss):
    run_tiny(tmp_path, name, loss, max_steps=1)
    return yaml.safe_load((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0])["loss"]


def test_blocks_from_the_command_line(tmp_path):
    """The same first step with VCReg on every block costs more than without: the penalty is in the loss."""
    plain = _first_loss(tmp_path, "plain", {})
    with_blocks = _first_loss(tmp_path, "blocks", {"vcreg_layers": ["blocks"]})
    assert with_blocks > plain + 1e-3

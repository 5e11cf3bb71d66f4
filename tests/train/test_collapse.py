"""The collapse ablation as a fast test: without the variance and covariance terms the embeddings collapse
(per-dimension std -> 0); full VICReg keeps them spread. Under a minute on a CPU."""

import json

import pytest

from mmvicreg.config import load_config
from mmvicreg.data.build import format_options
from mmvicreg.train import train
from tests.helpers.configs import tiny_config


def _final_std(tmp_path, name, loss):
    cfg = tiny_config(tmp_path / name, max_steps=150, log_every=50, rankme_every=50, checkpoint_every=1000,
                      batch_size=32, optimizer={"name": "adamw", "lr": 3e-3})
    cfg["loss"] = loss
    cfg["branches"]["image"] = {"encoder": {"name": "test_resnet"}, "expander": "64-64",
                                "transform": {"train": "eval", "eval": "eval", "size": 32}}
    cfg["branches"]["caption"]["expander"] = "64-64"
    cfg["data"] = {"train": {"format": "shapes", "split": "train", "num_images": 256, "size": 32}}
    train(load_config(cfg, [], format_keys=format_options))
    last = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[-1])
    return {b: last[f"std/{b}"] for b in ("image", "caption")}


@pytest.mark.timeout(300)
def test_invariance_only_collapses_and_full_vicreg_does_not(tmp_path):
    collapsed = _final_std(tmp_path, "inv", {"variance_weight": 0, "covariance_weight": 0})
    full = _final_std(tmp_path, "full", {})
    for branch in ("image", "caption"):
        assert collapsed[branch] < 0.05, (branch, collapsed)
        assert full[branch] > 0.3, (branch, full)
        assert full[branch] > 10 * collapsed[branch]

"""``eval linear`` and ``eval linear-probe`` keep what they learned (``--save-head``) and score it again without
training (``--head``): the same accuracy, and one line when the head does not fit the model or the data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmvicreg.cli import main


def _folder(root: Path, classes: dict[str, int], per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for label, level in classes.items():
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(level + rng.normal(0, 50, (20, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    from mmvicreg import JointEmbedding

    root = tmp_path_factory.mktemp("heads")
    torch.manual_seed(0)
    JointEmbedding.from_config({"image": {"encoder": "test_resnet", "expander": "16", "transform": {"size": 16}}}
                               ).save_pretrained(root / "model")
    levels = {"a": 40, "b": 100, "c": 160, "d": 220, "e": 130}
    return {"model": root / "model",
            "train": _folder(root / "train", levels, 6, 0), "test": _folder(root / "test", levels, 4, 1),
            "renamed": _folder(root / "renamed", {k.upper(): v for k, v in levels.items()}, 2, 2)}


def _run(tmp_path: Path, *argv: str) -> dict:
    out = tmp_path / f"r{len(list(tmp_path.glob('r*.json')))}.json"
    assert main([*argv, "--workers", "0", "--no-progress", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def _one_line(capsys, argv: list[str]) -> str:
    assert main([*argv, "--workers", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("command,settings,score", [
    ("linear-probe", ["--epochs", "4"], "top1_last"),
    ("linear", ["--epochs", "2", "--batch-size", "8"], "top1"),
])
def test_a_saved_head_scores_what_it_scored_when_trained(data, tmp_path, command, settings, score):
    common = ["eval", command, "--model", str(data["model"]), "--format", "folder", "--test-images",
              str(data["test"]), *settings]
    head = tmp_path / "head.safetensors"
    trained = _run(tmp_path, *common, "--train-images", str(data["train"]), "--save-head", str(head))
    info = json.loads(head.with_suffix(".json").read_text())
    assert info["classes"] == ["a", "b", "c", "d", "e"] and info["num_classes"] == 5 and info["dim"] == 96
    assert (info["branch"], info["layer"], info["kind"]) == ("image", "representation",
                                                             "probe" if command == "linear-probe" else "linear")
    again = _run(tmp_path, *common, "--head", str(head))  # no training data at all
    before, after = trained["results"]["trained"]["image"], again["results"]["trained"]["image"]
    assert after["top1"] == pytest.approx(before[score], abs=1e-9)
    assert info["accuracy"][score] == pytest.approx(before[score], abs=1e-9)
    if "top5" in before:
        assert after["top5"] == pytest.approx(before["top5"], abs=1e-9)
    # the head is what the scores came from: another head's weights score differently
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(head))
    save_file({**tensors, "weight": torch.flip(tensors["weight"], dims=[0])}, str(head))
    flipped = _run(tmp_path, *common, "--head", str(head))["results"]["trained"]["image"]
    assert flipped["top1"] != pytest.approx(before[score], abs=1e-9)


def test_a_head_that_does_not_fit_is_one_line(data, tmp_path, capsys):
    head = tmp_path / "head.safetensors"
    common = ["eval", "linear-probe", "--model", str(data["model"]), "--format", "folder"]
    _run(tmp_path, *common, "--train-images", str(data["train"]), "--test-images", str(data["test"]), "--epochs", "1",
         "--save-head", str(head))
    test = ["--test-images", str(data["test"])]
    assert "trained on the classes [a, b, c, d, e]" in _one_line(
        capsys, [*common, "--test-images", str(data["renamed"]), "--head", str(head)])
    assert "pass --layer representation" in _one_line(capsys, [*common, *test, "--head", str(head), "--layer",
                                                                "embedding"])
    wide = tmp_path / "wide.safetensors"
    from mmvicreg.evaluation.metrics.linear_head import LinearHead

    LinearHead(torch.zeros(5, 7), torch.zeros(5)).save(wide, {"kind": "probe", "branch": "image",
                                                              "layer": "representation", "classes": None})
    assert "takes 7-wide features" in _one_line(capsys, [*common, *test, "--head", str(wide)])
    few = tmp_path / "few.safetensors"
    LinearHead(torch.zeros(3, 96), torch.zeros(3)).save(few, {"kind": "probe", "branch": "image",
                                                              "layer": "representation", "classes": None})
    assert "has 3 classes" in _one_line(capsys, [*common, *test, "--head", str(few)])
    assert "no saved head" in _one_line(capsys, [*common, *test, "--head", str(tmp_path / "none.safetensors")])
    assert "pass one" in _one_line(capsys, [*common, *test, "--head", str(head), "--save-head", str(few)])
    assert "--compare-random-init" in _one_line(capsys, [*common, *test, "--head", str(head),
                                                         "--compare-random-init"])
    finetune = ["eval", "linear", "--model", str(data["model"]), "--format", "folder", "--train-images",
                str(data["train"]), *test, "--mode", "finetune", "--epochs", "1", "--save-head", str(few)]
    assert "--mode linear" in _one_line(capsys, finetune)

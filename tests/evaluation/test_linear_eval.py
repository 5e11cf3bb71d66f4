"""The published linear evaluation and semi-supervised fine-tuning (``evaluate_linear``), its labelled subsets and
the labelled memory of k-NN, on a toy model whose features are the mean colour of an image: six colours are
linearly separable, so a working protocol must reach (nearly) 100 %."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from mmvicreg.data import ArrayStore, DigitsSource, FolderImages, ImageSource
from mmvicreg.evaluation import linear_eval
from mmvicreg.evaluation.labelled import (
    choose_subset,
    is_labelled,
    labelled_memory,
    per_class_subset,
    read_subset_file,
)
from mmvicreg.evaluation.linear_eval import (
    evaluate_linear,
    format_linear,
    published_settings,
)

COLOURS = [(220, 30, 30), (30, 220, 30), (30, 30, 220), (220, 220, 30), (30, 220, 220), (220, 30, 220)]
SPEC = {"train": "vicreg_view1", "eval": "eval", "size": 8, "mean": [0.5] * 3, "std": [0.25] * 3,
        "interpolation": "bilinear", "crop_pct": 1.0}


class MeanColour(torch.nn.Module):
    """image -> mean colour -> a linear map -> BatchNorm: a backbone with weights and BatchNorm statistics."""

    output_dim = 6

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, self.output_dim)
        self.norm = torch.nn.BatchNorm1d(self.output_dim)

    def forward(self, x):
        return self.norm(self.proj(x.mean(dim=(2, 3))))


def _model(modality="image"):
    torch.manual_seed(0)
    branch = SimpleNamespace(modality=modality, encoder=MeanColour(), embedding_dim=6, transform_spec=dict(SPEC))
    return SimpleNamespace(branch=lambda name: branch, branch_names=["image"])


def _colours(per_class, seed, labelled=True):
    rng = np.random.default_rng(seed)
    labels = [c for c in range(len(COLOURS)) for _ in range(per_class)]
    pixels = np.stack([np.clip(np.array(COLOURS[c]) + rng.normal(0, 15, (8, 8, 3)), 0, 255) for c in labels])
    return ImageSource(labels if labelled else [-1] * len(labels), [f"c{c}" for c in range(len(COLOURS))] if labelled
                       else [], ArrayStore(pixels.astype(np.uint8)), name=f"colours{seed}")


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _spy_copies(monkeypatch):
    """Record the network ``evaluate_linear`` copies (the copy it trains)."""
    import copy

    copies = []

    def deepcopy(obj):
        copies.append(copy.deepcopy(obj))
        return copies[-1]

    monkeypatch.setattr(linear_eval, "copy", SimpleNamespace(deepcopy=deepcopy))
    return copies


def test_linear_mode_learns_separable_colours_with_a_frozen_backbone(monkeypatch):
    model, copies = _model(), _spy_copies(monkeypatch)
    before = _state(model.branch("image").encoder)
    result = evaluate_linear(model, _colours(20, 0), _colours(5, 1), "image", epochs=15, batch_size=16, lr_head=0.5,
                             device="cpu")
    assert result["top1"] >= 95 and result["top5"] == 100 and result["num_classes"] == 6
    assert (result["num_train"], result["num_test"], result["subset"]) == (120, 30, None)
    assert len(result["history"]) == 15 and result["best_epoch"] >= 1
    # the copy that was evaluated kept its weights and BatchNorm statistics; the caller's model is untouched
    (trained,) = copies
    for state in (_state(trained), _state(model.branch("image").encoder)):
        assert state.keys() == before.keys() and all(torch.equal(state[k], before[k]) for k in before)
    config = result["config"]
    assert (config["mode"], config["lr_head"], config["lr_backbone"], config["weight_decay"]) == ("linear", 0.5, 0.0, 1e-6)
    assert config["precision"] == "fp32" and config["transform"]["size"] == 8
    assert format_linear("image", result).startswith("linear evaluation of branch 'image' (frozen, 15 epochs): top-1")


def test_finetune_trains_a_copy_on_a_recorded_subset(monkeypatch):
    model, copies = _model(), _spy_copies(monkeypatch)
    before = _state(model.branch("image").encoder)
    result = evaluate_linear(model, _colours(20, 0), _colours(5, 1), "image", mode="finetune", train_percent=10,
                             epochs=2, batch_size=4, seed=3, device="cpu")
    (trained,) = copies
    after = _state(trained)
    assert not torch.equal(after["proj.weight"], before["proj.weight"])  # the backbone learned
    assert not torch.equal(after["norm.running_mean"], before["norm.running_mean"])  # BatchNorm in train mode
    assert all(torch.equal(v, before[k]) for k, v in _state(model.branch("image").encoder).items())
    subset = result["subset"]
    assert subset["kind"] == "per_class" and (subset["percent"], subset["seed"]) == (10, 3)
    assert subset["per_class"] == {f"c{c}": 2 for c in range(6)} and result["num_train"] == subset["num_images"] == 12
    # published 10 % settings, the learning rates scaled to the batch of 4
    assert result["config"]["lr_head"] == pytest.approx(0.1 * 4 / 256)
    assert result["config"]["lr_backbone"] == pytest.approx(0.01 * 4 / 256)
    assert result["config"]["weight_decay"] == 0.0 and result["config"]["epochs"] == 2


def test_published_settings():
    assert published_settings("linear") == {"epochs": 100, "lr_head": 0.02, "lr_backbone": 0.0, "weight_decay": 1e-6}
    assert published_settings("finetune", 1) == {"epochs": 20, "lr_head": 0.08, "lr_backbone": 0.03,
                                                 "weight_decay": 0.0}
    assert published_settings("finetune", 10)["lr_backbone"] == 0.01


def test_per_class_draw_is_seeded_per_class_and_keeps_one_of_each():
    labels = [0] * 30 + [1] * 3 + [2] * 1 + [-1] * 4
    drawn = per_class_subset(labels, 10, seed=0)
    assert drawn == sorted(drawn) and [labels[i] for i in drawn].count(0) == 3
    assert [labels[i] for i in drawn].count(1) == [labels[i] for i in drawn].count(2) == 1 and 33 in drawn
    assert per_class_subset(labels, 10, seed=0) == drawn
    assert any(per_class_subset(labels, 10, seed=s) != drawn for s in range(1, 6))
    # a class's draw does not depend on the others
    only_zero = per_class_subset(labels[:30], 10, seed=0)
    assert only_zero == [i for i in drawn if labels[i] == 0]
    assert len(per_class_subset(labels, 50, seed=0)) == 15 + 2 + 1 and len(per_class_subset(labels, 100)) == 34


@pytest.mark.parametrize("percent", [0, -5, 100.5, 1000, True])
def test_percent_outside_0_100_is_one_line(percent):
    with pytest.raises(ValueError, match=r"^train percent must be a number in \(0, 100\], got") as info:
        per_class_subset([0, 1], percent)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="train percent must be"):
        evaluate_linear(_model(), _colours(2, 0), _colours(1, 1), "image", mode="finetune", train_percent=percent,
                        epochs=1, device="cpu")


def _folder(tmp_path):
    for name, level in (("dark", 30), ("light", 220)):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (level, level, level)).save(tmp_path / "imgs" / name / f"{name}_{i}.png")
    return FolderImages(tmp_path / "imgs")


def test_subset_file_of_ids_or_indices_is_honoured_and_recorded(tmp_path):
    source = _folder(tmp_path)
    ids = tmp_path / "ids.txt"
    ids.write_text("# two images\nlight_2.png\n\ndark/dark_0.png\nlight_2.png\n")
    indices, record = choose_subset(source, subset=ids)
    assert [source.store.path(i).split("/")[-1] for i in indices] == ["light_2.png", "dark_0.png"]
    assert record == {"kind": "file", "file": str(ids), "num_images": 2, "indices": indices,
                      "ids": ["light_2.png", "dark/dark_0.png"]}
    numbers = tmp_path / "indices.txt"
    numbers.write_text("4\n0\n")
    assert read_subset_file(numbers, source) == ([4, 0], None)
    model = _model()
    result = evaluate_linear(model, source, source, "image", subset=str(numbers), epochs=1, batch_size=2,
                             device="cpu")
    assert result["num_train"] == 2 and result["subset"]["indices"] == [4, 0]
    assert result["num_classes"] == 2 and "top5" not in result


def test_bad_subset_entries_are_one_line(tmp_path):
    source = _folder(tmp_path)
    cases = {"light_9.png\n": r"line 1: 'light_9.png' is not an image of .*file names such as",
             "0\n6\n": r"line 2: index 6 is out of range for the 6 images",
             "\n# nothing\n": "lists no images"}
    for text, message in cases.items():
        path = tmp_path / "subset.txt"
        path.write_text(text)
        with pytest.raises(ValueError, match=message) as info:
            read_subset_file(path, source)
        assert "\n" not in str(info.value)
    path.write_text("a.png\n")
    with pytest.raises(ValueError, match="its images have no file names, so list 0-based indices"):
        read_subset_file(path, _colours(2, 0))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_subset_file(tmp_path / "missing.txt", source)
    with pytest.raises(ValueError, match="not both"):
        choose_subset(source, percent=10, subset=path)


def test_unlabelled_sources_and_text_branches_are_refused():
    with pytest.raises(ValueError, match="images without labels.*linear evaluation needs labelled training images"):
        evaluate_linear(_model(), _colours(2, 0, labelled=False), _colours(1, 1), "image", epochs=1, device="cpu")
    with pytest.raises(ValueError, match="is a text branch; linear evaluation scores image branches"):
        evaluate_linear(_model("text"), _colours(2, 0), _colours(1, 1), "image", epochs=1, device="cpu")
    with pytest.raises(ValueError, match="lr_backbone is for mode 'finetune'"):
        evaluate_linear(_model(), _colours(2, 0), _colours(1, 1), "image", lr_backbone=0.1, device="cpu")


def test_labelled_memory_is_the_reference_when_training_data_has_no_labels():
    labelled, unlabelled = _colours(2, 0), _colours(2, 0, labelled=False)
    assert is_labelled(labelled) and not is_labelled(unlabelled)
    assert labelled_memory(labelled) is labelled
    assert labelled_memory(unlabelled, labelled) is labelled
    with pytest.raises(ValueError, match=r"^the training source \(colours0\) has images without labels.*eval\.reference"):
        labelled_memory(unlabelled)
    with pytest.raises(ValueError, match=r"^eval.reference \(colours0\) has images without labels"):
        labelled_memory(labelled, unlabelled)
    built = labelled_memory(unlabelled, {"format": "digits", "size": 8})
    assert isinstance(built, DigitsSource) and len(built) == 1437 and is_labelled(built)
    withheld = DigitsSource("train", size=8, labels=False)
    assert not is_labelled(withheld) and withheld.classes == [] and set(withheld.labels) == {-1}

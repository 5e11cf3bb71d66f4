"""loss.name: supervised: the loss is F.cross_entropy of the head's logits; labels outside the head refused; the
config rules that name the labelled formats; data.*.classes selects and relabels classes."""

import pytest
import torch
import torch.nn.functional as F

from mmvicreg.config import BranchConfig, ConfigError, LossConfig, load_config
from mmvicreg.data.build import build_source, format_options
from mmvicreg.objective import ReadsTargets, SupervisedObjective, build_objective


def _objective(classes=4, dim=6, **loss):
    return build_objective(LossConfig(name="supervised", **loss), {"image": BranchConfig()}, gather=False,
                           num_classes=classes, representation_dims={"image": dim})


def test_the_loss_is_cross_entropy_of_the_heads_logits_computed_by_hand():
    torch.manual_seed(0)
    objective = _objective()
    assert isinstance(objective, SupervisedObjective) and isinstance(objective, ReadsTargets)
    assert objective.head.weight.shape == (4, 6) and objective.layer == "representation"
    h = torch.randn(10, 6, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 3, 3])
    out = objective({"image": h}, {"label": y})
    w, b = objective.head.weight.detach().clone().requires_grad_(), objective.head.bias.detach().clone().requires_grad_()
    h_ref = h.detach().clone().requires_grad_()
    logits = h_ref @ w.T + b
    by_hand = -(logits - logits.logsumexp(dim=1, keepdim=True))[torch.arange(10), y].mean()
    torch.testing.assert_close(out.loss, by_hand)
    torch.testing.assert_close(out.loss, F.cross_entropy(logits, y))
    assert out.terms["supervised"] == out.loss.detach()
    assert out.terms["accuracy"] == (logits.argmax(1) == y).float().mean()
    out.loss.backward()
    by_hand.backward()
    for mine, ref in ((h, h_ref), (objective.head.weight, w), (objective.head.bias, b)):
        torch.testing.assert_close(mine.grad, ref.grad)
    assert out.invariance == 0 and out.variance > 0 and set(out.per_branch) == {"image"}


def test_a_label_outside_the_heads_classes_is_one_line():
    objective = _objective(classes=3)
    h = torch.randn(4, 6)
    with pytest.raises(ValueError, match=r"label 3 is outside the classifier head's 3 classes \(0..2, taken from the "
                                         r"training data\).*data.train.classes"):
        objective({"image": h}, {"label": torch.tensor([0, 1, 3, 2])})
    with pytest.raises(ValueError, match=r"label -1 \(an unlabelled image\) is outside"):
        objective({"image": h}, {"label": torch.tensor([0, -1, 1, 2])})
    with pytest.raises(TypeError, match="1-D integer tensor"):
        objective({"image": h}, {"label": torch.zeros(4)})


def test_the_builder_needs_the_classes_and_one_branch():
    with pytest.raises(ValueError, match=r"loss.name: supervised needs num_classes .*build_objective\(..., num_classes"):
        build_objective(LossConfig(name="supervised"), {"image": BranchConfig()})
    with pytest.raises(ValueError, match="trains one image branch"):
        build_objective(LossConfig(name="supervised"), {"a": BranchConfig(), "b": BranchConfig()}, num_classes=3,
                        representation_dims={"a": 2, "b": 2})


def _tree(train, branches=None):
    image = {"encoder": {"name": "test_resnet"}, "expander": "none", "transform": {"size": 16}}
    return {"branches": branches or {"image": image}, "loss": {"name": "supervised"}, "data": {"train": train}}


@pytest.mark.parametrize("train, message", [
    ({"format": "shapes"}, "data.train.format: shapes gives images with captions and no labels; use labelled images: "
                           "data.train.format: folder .class subfolders., digits, or hf with caption_column: null"),
    ({"format": "coco", "captions": "c.json", "images": "i"}, "data.train.format: coco gives images with captions"),
    ({"format": "digits", "labels": False}, "data.train.labels: false withholds them; remove data.train.labels"),
    ({"format": "hf", "path": "p"}, "data.train .hf. reads captions or no label column; use labelled images"),
    ({"format": "hf", "path": "p", "caption_column": None, "label_column": "y", "streaming": True},
     "data.train.streaming: true is not supported"),
])
def test_supervised_on_data_without_labels_is_one_line_at_load(train, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_tree(train), [], format_keys=format_options)


def test_supervised_trains_one_image_branch_without_an_expander():
    two = {n: {"encoder": {"name": "test_resnet"}, "transform": {"size": 16}} for n in ("a", "b")}
    with pytest.raises(ConfigError, match=r"loss.name: supervised trains one image branch .*branches \['a', 'b'\]"):
        load_config(_tree({"format": "digits"}, two), [], format_keys=format_options)
    for expander in ({}, {"expander": "64-64"}):
        one = {"image": {"encoder": {"name": "test_resnet"}, "transform": {"size": 16}, **expander}}
        with pytest.raises(ConfigError, match="an expander would get no gradient .*set branches.image.expander: none"):
            load_config(_tree({"format": "digits"}, one), [], format_keys=format_options)


def test_classes_select_and_relabel_a_labelled_source():
    config = load_config(_tree({"format": "digits", "classes": [7, 2]}), [], format_keys=format_options)
    assert config.data.train["classes"] == ["7", "2"]  # parsed once, at load: names
    source = build_source(config.data.train, "train")
    full = build_source({"format": "digits"}, "train")
    assert source.classes == ["7", "2"] and sorted(set(source.labels)) == [0, 1]
    assert len(source) == sum(label in (7, 2) for label in full.labels)
    first = next(i for i, label in enumerate(full.labels) if label in (7, 2))
    assert source[0]["label"] == {7: 0, 2: 1}[full.labels[first]]
    assert source.pixels[0].tobytes() == full.pixels[first].tobytes()
    with pytest.raises(ValueError, match=r"digits:train has no class '11'; its classes: \['0', '1'"):
        build_source({"format": "digits", "classes": ["11"]}, "train")


@pytest.mark.parametrize("classes, message", [([], "give a non-empty list of class names"),
                                              ("3", "give a non-empty list"), ([1, "1"], "names a class twice")])
def test_bad_classes_are_one_line_at_load(classes, message):
    with pytest.raises(ConfigError, match=f"data.train.classes .*{message}"):
        load_config(_tree({"format": "digits", "classes": classes}), [], format_keys=format_options)

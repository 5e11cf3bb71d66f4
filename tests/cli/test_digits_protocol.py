"""The image-only protocols end to end (issue 14): the digits example pretrains with its labels withheld, and
what it learns beats the same architecture at random init by k-NN against the labelled reference set, by the
published linear evaluation (frozen backbone, augmented training images) and by fine-tuning on 10 % of the
labels.

The example is shrunk to run in about a minute on two CPU cores: 16-pixel images, the ViT's patches 8 pixels,
120 steps at a higher learning rate. Fine-tuning runs as published (its learning rates scaled to the batch);
the linear evaluation is shortened to 5 epochs with a larger head learning rate. One torch thread: these tensors
are small, and one thread makes the run repeat exactly.
"""

import argparse
import json

import pytest
import torch

from mmvicreg.cli.linear import add_linear_arguments, run_linear
from mmvicreg.config import load_config
from mmvicreg.data import build_source
from mmvicreg.data.build import format_options
from mmvicreg.evaluation.labelled import is_labelled, labelled_memory
from mmvicreg.evaluation.model_level import evaluate_knn
from mmvicreg.model import JointEmbedding
from mmvicreg.train import train
from tests.helpers import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "digits_siamese.yaml"
SIZE = 16
QUICK = [
    *(f"{key}.size={SIZE}" for key in ("data.train", "data.eval", "eval.reference")),
    *(f"branches.{b}.transform.size={SIZE}" for b in ("cnn", "vit")),
    f"branches.vit.encoder.image_size={SIZE}", "branches.vit.encoder.patch_size=8",
    "train.max_steps=120", "train.optimizer.lr=0.005", "train.checkpoint_every=1000", "train.progress=false",
]


def test_digits_can_withhold_their_labels():
    config = load_config(EXAMPLE, [], format_keys=format_options)
    assert config.data.train["labels"] is False and "labels" not in config.data.eval
    withheld = build_source(config.data.train, "train")
    assert not is_labelled(withheld) and withheld.classes == [] and len(withheld) == 1437
    assert withheld[0]["label"] == -1 and withheld.data_report()["samples"] == 1437
    reference = labelled_memory(withheld, config.eval.reference)
    assert is_labelled(reference) and reference.classes == [str(d) for d in range(10)]
    assert reference.pixels.tobytes() == withheld.pixels.tobytes()  # the same images, with their labels
    with pytest.raises(TypeError, match="labels must be true or false"):
        build_source({"format": "digits", "labels": "no"}, "train")


def _linear(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    add_linear_arguments(parser)
    return run_linear(parser.parse_args(list(argv)))


@pytest.mark.timeout(600)
def test_pretraining_without_labels_beats_random_init_by_every_protocol(tmp_path, one_thread, capsys):
    config = load_config(EXAMPLE, [f"output_dir={tmp_path / 'run'}", *QUICK], format_keys=format_options)
    final = train(config)  # the end-of-run k-NN: the labelled test split, eval.reference as the memory
    assert "knn" in final, final
    model = JointEmbedding.from_pretrained(tmp_path / "run" / "model")
    torch.manual_seed(0)
    untrained = JointEmbedding.from_config(model.config()["branches"])
    reference = labelled_memory(build_source(config.data.train, "train"), config.eval.reference)
    test = build_source(config.data.eval, "test")
    knn = {name: evaluate_knn(m, reference, test, "cnn")["top1_k20"] for name, m in
           (("trained", model), ("random_init", untrained))}

    common = ["--model", str(tmp_path / "run" / "model"), "--format", "digits", "--option", f"size={SIZE}",
              "--image-branch", "cnn", "--device", "cpu", "--compare-random-init", "--no-progress"]
    _linear(*common, "--epochs", "5", "--batch-size", "128", "--lr", "0.3", "--json", str(tmp_path / "linear.json"))
    # fine-tuning as published (20 epochs; backbone lr 0.01, head 0.1, scaled to the batch of 32)
    _linear(*common, "--mode", "finetune", "--train-percent", "10", "--batch-size", "32",
            "--json", str(tmp_path / "finetune.json"))
    linear = json.loads((tmp_path / "linear.json").read_text())["results"]
    finetune = json.loads((tmp_path / "finetune.json").read_text())["results"]
    with capsys.disabled():
        print(f"\nk-NN top-1 {knn}")
        for name, result in (("linear", linear), ("finetune 10%", finetune)):
            print(f"{name} top-1", {k: round(v["cnn"]["top1"], 1) for k, v in result.items()})

    assert knn["trained"] > knn["random_init"] + 5
    assert linear["trained"]["cnn"]["top1"] > linear["random_init"]["cnn"]["top1"] + 15
    assert finetune["trained"]["cnn"]["top1"] > finetune["random_init"]["cnn"]["top1"] + 4
    subset = finetune["trained"]["cnn"]["subset"]
    assert subset == finetune["random_init"]["cnn"]["subset"]  # both scored on the same labelled images
    assert (subset["kind"], subset["percent"], subset["seed"], subset["num_images"]) == ("per_class", 10, 0, 149)
    used = finetune["trained"]["cnn"]["config"]
    assert (used["epochs"], used["lr_head"], used["lr_backbone"], used["weight_decay"]) == (20, 0.1 / 8, 0.01 / 8, 0.0)
    assert linear["trained"]["cnn"]["config"]["train_transform"].startswith("RandomResizedCrop(16, scale=(0.08, 1))")

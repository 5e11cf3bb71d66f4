"""``mmvicreg eval linear``: the published linear evaluation of an image branch, or its
semi-supervised fine-tuning on 1 % / 10 % of the labels (:func:`mmvicreg.evaluation.linear_eval.evaluate_linear`).

    mmvicreg eval linear --model RUN/model --format folder --train-images train/ --test-images val/
    mmvicreg eval linear --model RUN/model --format digits --mode finetune --train-percent 10 --compare-random-init
    mmvicreg eval linear --model RUN/model --format digits --save-head head.safetensors   (then --head head.safetensors)

The data, branch, device and output flags are those of ``eval knn`` (``--format --train-images --test-images
--train-shards --test-shards --image-branch --device --precision --workers --json --compare-random-init``);
``--batch-size`` is the SGD batch.
Left out, ``--epochs``, the learning rates and ``--weight-decay`` are the published ones (the learning rates
scaled by batch size / 256).
"""

from __future__ import annotations

import argparse
from typing import Any

from mmvicreg.choices import LINEAR_EVAL_MODES
from mmvicreg.cli.images import add_head_arguments, add_image_arguments, image_eval


def add_linear_arguments(p: argparse.ArgumentParser) -> None:
    """``eval knn``'s data and output flags, then the protocol's own."""
    add_image_arguments(p, batch_help="the SGD batch (the published learning rates are scaled by it / 256)")
    p.add_argument("--mode", choices=LINEAR_EVAL_MODES, default="linear",
                   help="linear: frozen backbone (published linear evaluation); finetune: backbone and head")
    p.add_argument("--train-percent", type=float,
                   help="use this percent of each class's training images (seeded by --seed; at least one each)")
    p.add_argument("--subset", help="file of training images to use: 0-based indices or image file names, one a line")
    p.add_argument("--seed", type=int, default=0, help="the subset draw, the head's init and the augmentations")
    p.add_argument("--epochs", type=int, help="passes over the training images; default: published (linear 100, "
                                              "finetune 20)")
    p.add_argument("--lr", "--lr-head", dest="lr_head", type=float,
                   help="the head's learning rate; default: published (linear 0.02, finetune 1%%: 0.08, 10%%: 0.1) "
                        "× batch size / 256")
    p.add_argument("--lr-backbone", type=float,
                   help="finetune: the backbone's learning rate; default: published (1%%: 0.03, 10%%: 0.01) × batch / 256")
    p.add_argument("--weight-decay", type=float, help="SGD weight decay; default: published (linear 1e-6, finetune 0)")
    add_head_arguments(p)


def run_linear(args: argparse.Namespace) -> dict[str, Any]:
    """Top-1 (and top-5) per image branch, trained and (``--compare-random-init``) untrained: printed, and
    written to ``--json`` with the settings used and the labelled subset."""
    from mmvicreg.evaluation.linear_eval import evaluate_linear

    return image_eval(
        args, evaluate_linear, mode=args.mode, train_percent=args.train_percent, subset=args.subset, seed=args.seed,
        epochs=args.epochs, lr_head=args.lr_head, lr_backbone=args.lr_backbone, weight_decay=args.weight_decay,
        device=args.device,  # batch_size, workers, precision, progress and layer: passed by image_eval
    )

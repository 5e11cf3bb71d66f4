"""What the image commands (``eval knn``, ``eval linear-probe``, ``eval linear``) share: their data flags, the
labelled image sources those flags describe, and :func:`image_eval`, which scores every chosen image branch of
the model (and, with ``--compare-random-init``, of the same network untrained) with one evaluation function.

Labelled sources are ``folder`` (class subfolders), ``hf`` (a dataset with a label column), ``digits`` and
``webdataset``: shards of image-only samples with a ``cls`` label, as ``mmvicreg shards`` writes them from a
labelled image source (``--format folder|digits|hf``), given as ``--train-shards`` and ``--test-shards``.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from mmvicreg.choices import EMBEDDING_LAYERS, EVAL_IMAGE_FORMATS
from mmvicreg.cli.common import (
    add_common_arguments,
    add_retired_flag,
    branches_of,
    check_branch_flag,
    encoding,
    key_values,
    load_model,
    shard_section,
    write_json,
)

Score = Callable[..., dict[str, Any]]


def image_source(args: argparse.Namespace, which: str) -> Any:
    """The labelled image source of ``which`` ("train" or "test"): ``--format`` with ``--<which>-images`` (folder:
    class subfolders; hf: the dataset) or ``--<which>-shards`` (webdataset), ``--<which>-split`` and ``--option``.
    One ValueError line for a missing or misplaced data flag, or data without a label for every image."""
    from mmvicreg.data import build_source
    from mmvicreg.evaluation.labelled import is_labelled

    fmt, options = args.format, key_values(args.option, "--option")
    images, shards = getattr(args, f"{which}_images"), getattr(args, f"{which}_shards")
    section = shard_section(fmt, shards, f"--{which}-shards", {f"--{which}-images": images}, options)
    if section is None:
        section = {"format": fmt, **options}
        if fmt in ("folder", "hf"):
            if not images:
                what = "class subfolders of images" if fmt == "folder" else "datasets to load"
                raise ValueError(f"format {fmt!r} needs --train-images and --test-images ({what})")
            section["images" if fmt == "folder" else "path"] = images
    source = build_source(section, getattr(args, f"{which}_split"))
    if not is_labelled(source):
        what = f"the shards {shards}" if shards else f"the {which} data of --format {fmt}"
        raise ValueError(f"{what} do not give every image a label; k-NN and linear probes need labelled images "
                         f"(shards: write them from a labelled image source, e.g. mmvicreg shards --format folder)")
    return source


def _random_init_like(model: Any) -> Any:
    """The same architecture with fresh random weights: the baseline a trained model must beat."""
    import torch

    from mmvicreg.model import JointEmbedding

    tokenizers = {
        n: b.tokenizer for n, b in model.branches.items() if b.encoder.owns_tokenizer and b.shares is None
    }
    torch.manual_seed(0)
    return JointEmbedding.from_config(model.config()["branches"], tokenizers=tokenizers)


def image_eval(args: argparse.Namespace, evaluate: Score, **settings: Any) -> dict[str, Any]:
    """Score every chosen image branch of the model (and of its random-init twin) with ``evaluate``."""
    model = load_model(args.model, args.device, args.pretrained)
    branches = args.image_branch or branches_of(model, "image")
    for b in branches:
        check_branch_flag(model, "--image-branch", b, "image", "k-NN and linear probes score image branches")
    train_src = image_source(args, "train")
    test_src = image_source(args, "test")
    models = {"trained": model}
    if args.compare_random_init:
        models["random_init"] = _random_init_like(model).to(next(model.parameters()).device)
    result: dict[str, Any] = {"model": str(args.model), "layer": args.layer, "results": {}}
    for which, m in models.items():
        for branch in branches:
            scores = evaluate(m, train_src, test_src, branch, layer=args.layer, **encoding(args), **settings)
            result["results"].setdefault(which, {})[branch] = {
                k: v for k, v in scores.items() if k not in ("branch", "layer")
            }
    _print_image_table(result["results"])
    write_json(args.json, result)
    return result


def _print_image_table(results: dict[str, dict[str, dict[str, float]]]) -> None:
    keys = sorted({k for r in results.values() for b in r.values() for k in b if k.startswith("top1")})
    print(f"{'weights':14}{'branch':12}" + "".join(f"{k:>14}" for k in keys))
    for which, per_branch in results.items():
        for branch, scores in per_branch.items():
            print(f"{which:14}{branch:12}" + "".join(f"{scores.get(k, float('nan')):14.2f}" for k in keys))


def add_image_arguments(p: argparse.ArgumentParser, batch_help: str = "items per encoding batch") -> None:
    """The flags of every image command: :func:`add_common_arguments` (``--batch-size``: ``batch_help``), the
    labelled sources, branches and layer."""
    add_common_arguments(p, EVAL_IMAGE_FORMATS, "data format of the labelled images (webdataset: local shards of "
                                                "labelled images, given with --train-shards and --test-shards)",
                         batch_help)
    p.add_argument("--train-images", "--reference", dest="train_images",
                   help="the labelled reference / training images (folder: class subfolders; hf: dataset)")
    p.add_argument("--test-images", help="the labelled test images (folder: class subfolders; hf: dataset)")
    p.add_argument("--train-shards", help="webdataset: shards of the labelled reference / training images (a folder "
                                          "written by mmvicreg shards, its shards.txt or a brace pattern)")
    p.add_argument("--test-shards", help="webdataset: shards of the labelled test images")
    p.add_argument("--train-split", default="train", help="the reference / training split (digits, hf)")
    p.add_argument("--test-split", default="test", help="the test split (digits, hf)")
    p.add_argument("--image-branch", action="append",
                   help="image branch to evaluate (repeatable); default: every image branch")
    p.add_argument("--layer", choices=EMBEDDING_LAYERS, default="representation",
                   help="representation: the encoder's output h (published); embedding: the expander's z")
    p.add_argument("--compare-random-init", action="store_true", help="also score the same network untrained")
    add_retired_flag(p, "--branch", "--branch is now --image-branch (repeatable: --image-branch A --image-branch B)")

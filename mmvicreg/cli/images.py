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
    """Score every chosen image branch of the model (and of its random-init twin) with ``evaluate``; with
    ``--save-head`` keep the trained head, with ``--head`` score a saved one instead (:func:`_saved_head_eval`)."""
    model = load_model(args.model, args.device, args.pretrained)
    branches = args.image_branch or branches_of(model, "image")
    for b in branches:
        check_branch_flag(model, "--image-branch", b, "image", "k-NN and linear probes score image branches")
    head, save = getattr(args, "head", None), getattr(args, "save_head", None)  # eval linear / linear-probe only
    if head or save:
        _check_head_flags(args, branches)
    if head:
        return _saved_head_eval(args, model, branches[0], head)
    train_src = image_source(args, "train")
    test_src = image_source(args, "test")
    models = {"trained": model}
    if args.compare_random_init:
        models["random_init"] = _random_init_like(model).to(next(model.parameters()).device)
    if save:
        settings = {**settings, "keep_head": True}
    result: dict[str, Any] = {"model": str(args.model), "layer": args.layer, "results": {}}
    for which, m in models.items():
        for branch in branches:
            scores = evaluate(m, train_src, test_src, branch, layer=args.layer, **encoding(args), **settings)
            if save:
                _save_head(args, scores, branch, train_src, save)
            result["results"].setdefault(which, {})[branch] = {
                k: v for k, v in scores.items() if k not in ("branch", "layer", "head")
            }
    _print_image_table(result["results"])
    write_json(args.json, result)
    return result


def _check_head_flags(args: argparse.Namespace, branches: list[str]) -> None:
    """One line unless ``--head`` / ``--save-head`` concern one trained image branch."""
    flag = "--head" if args.head else "--save-head"
    if args.head and args.save_head:
        raise ValueError("--head evaluates a saved head without training; --save-head saves a trained one: pass one")
    if len(branches) != 1:
        raise ValueError(f"{flag} is one head of one image branch; the model has {branches}: pass --image-branch NAME")
    if args.compare_random_init:
        raise ValueError(f"{flag} is the head of the trained model; drop --compare-random-init")


def _save_head(args: argparse.Namespace, scores: dict[str, Any], branch: str, train_src: Any, path: str) -> None:
    """Save the head ``scores["head"]`` at ``path`` with what it expects and how it scored."""
    from mmvicreg.evaluation.linear_eval import source_classes

    kind = "linear" if "mode" in scores else "probe"  # eval linear's result names its mode; the probe's does not
    accuracy = {k: v for k, v in scores.items() if k in ("top1", "top5", "top1_last")}
    scores["head"].save(path, {"kind": kind, "branch": branch, "layer": args.layer, "model": str(args.model),
                               "classes": source_classes(train_src), "accuracy": accuracy})
    print(f"saved the {kind} head of branch {branch!r} to {path}")


def _saved_head_eval(args: argparse.Namespace, model: Any, branch: str, path: str) -> dict[str, Any]:
    """``--head PATH``: the saved head's top-1 (top-5) on the test data, without training."""
    from mmvicreg.evaluation.linear_eval import evaluate_head
    from mmvicreg.evaluation.metrics.linear_head import LinearHead

    head, info = LinearHead.load(path)
    scores = evaluate_head(model, image_source(args, "test"), branch, head, info, layer=args.layer,
                           name=f"the head {path}", device=args.device, **encoding(args))
    result = {"model": str(args.model), "layer": args.layer, "head": str(path),
              "results": {"trained": {branch: {k: v for k, v in scores.items() if k not in ("branch", "layer")}}}}
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


def add_head_arguments(p: argparse.ArgumentParser) -> None:
    """``--save-head`` / ``--head`` of the commands that train a linear head (``eval linear``, ``eval linear-probe``)."""
    p.add_argument("--save-head", metavar="PATH",
                   help="save the trained head here (safetensors; its classes and width in PATH's .json beside it)")
    p.add_argument("--head", metavar="PATH",
                   help="evaluate this saved head on the test data instead of training one (no --train-images needed)")

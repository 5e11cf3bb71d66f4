"""What the image commands (``eval knn``, ``eval linear-probe``, ``eval linear``) share: their data flags, the
labelled image sources those flags describe, and :func:`image_eval`, which scores every chosen image branch of
the model (and, with ``--compare-random-init``, of the same network untrained) with one evaluation function."""

from __future__ import annotations

import argparse
from typing import Any, Callable, Sequence

from mmvicreg.choices import EMBEDDING_LAYERS, IMAGE_FORMATS
from mmvicreg.cli.common import add_common_arguments, encoding, key_values, load_model, write_json

Score = Callable[..., dict[str, Any]]


def image_source(fmt: str, images: str | None, split: str, options: Sequence[str]) -> Any:
    """A labelled image source: ``folder`` reads class subfolders of ``images``, ``hf`` the dataset ``images``."""
    from mmvicreg.data import build_source

    section: dict[str, Any] = {"format": fmt, **key_values(options, "--option")}
    if fmt in ("folder", "hf"):
        if not images:
            what = "class subfolders of images" if fmt == "folder" else "datasets to load"
            raise ValueError(f"format {fmt!r} needs --train-images and --test-images ({what})")
        section["images" if fmt == "folder" else "path"] = images
    return build_source(section, split)


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
    model = load_model(args.model, args.device)
    images = [n for n in model.branch_names if model.branch(n).modality == "image"]
    branches = args.branch or images
    for b in branches:
        if b not in images:
            kind = f"a {model.branch(b).modality} branch" if b in model.branch_names else "not a branch"
            raise ValueError(f"--branch {b!r} is {kind}; k-NN and linear probes score image branches: {images}")
    train_src = image_source(args.format, args.train_images, args.train_split, args.option)
    test_src = image_source(args.format, args.test_images, args.test_split, args.option)
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


def add_image_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of every image command: :func:`add_common_arguments`, the labelled sources, branch and layer."""
    add_common_arguments(p, IMAGE_FORMATS)
    p.add_argument("--train-images", "--reference", dest="train_images",
                   help="the labelled reference / training images (folder: class subfolders; hf: dataset)")
    p.add_argument("--test-images", help="folder: class subfolders of the labelled test images; hf: dataset")
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--branch", action="append", help="branch to evaluate (repeatable); default: every image branch")
    p.add_argument("--layer", choices=EMBEDDING_LAYERS, default="representation")
    p.add_argument("--compare-random-init", action="store_true", help="also score the same network untrained")

"""``mmvicreg eval zeroshot``: zero-shot classification of labelled images with a model's image and text branches.

    mmvicreg eval zeroshot --model RUN/model --format folder --test-images DIR [--classnames FILE] [--templates FILE]
    mmvicreg eval zeroshot --model open_clip:ViT-B-32 --pretrained CKPT --format hf --test-images DATASET

The labelled images are given as the image commands give their test side (``--test-images``, ``--test-shards``,
``--test-split``); class names come from the data (folder names, a dataset's label names) or ``--classnames``
(one per line, in label order), prompt templates from ``--templates`` (one per line, ``{}`` for the name) or
CLIP's short ensemble. The work is :func:`mmvicreg.evaluation.zeroshot.evaluate_zeroshot`.
"""

from __future__ import annotations

import argparse
from typing import Any

from mmvicreg.choices import EVAL_IMAGE_FORMATS
from mmvicreg.cli.common import add_common_arguments, encoding, image_text_branches, load_model, write_json


def run_zeroshot(args: argparse.Namespace) -> dict[str, Any]:
    """Top-1, top-5, mean per-class recall and chance: printed, and written to ``--json``."""
    from mmvicreg.cli.images import image_source
    from mmvicreg.evaluation.zeroshot import check_templates, evaluate_zeroshot, read_lines

    classnames = read_lines(args.classnames, "--classnames") if args.classnames else None
    templates = check_templates(read_lines(args.templates, "--templates")) if args.templates else None
    model = load_model(args.model, args.device, args.pretrained)
    image, text = image_text_branches(model, args.image_branch, args.text_branch, "zero-shot (the class prompts)")
    source = image_source(args, "test")
    if classnames is not None and len(classnames) < len(source.classes):
        raise ValueError(f"--classnames {args.classnames} names {len(classnames)} classes; the data has "
                         f"{len(source.classes)} ({', '.join(source.classes[:5])}, ...): one name per class, in order")
    scores = evaluate_zeroshot(model, source, image, text, classnames=classnames, templates=templates,
                               **encoding(args))
    result = {"model": str(args.model), "format": args.format, **scores}
    print(f"zero-shot, {scores['classes']} classes, {scores['templates']} templates, {scores['images']} images "
          f"({image} / {text}):")
    print("".join(f"{k:>24}" for k in ("top1", "top5", "mean_per_class_recall", "chance_top1")))
    print("".join(f"{scores[k]:24.2f}" for k in ("top1", "top5", "mean_per_class_recall", "chance_top1")))
    write_json(args.json, result)
    return result


def add_zeroshot_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``eval zeroshot``: the eval commands' common flags, the labelled test images, names, prompts."""
    add_common_arguments(p, EVAL_IMAGE_FORMATS, "data format of the labelled images (webdataset: local shards of "
                                                "labelled images, given with --test-shards)")
    p.add_argument("--test-images", help="the labelled images (folder: class subfolders; hf: dataset)")
    p.add_argument("--test-shards", help="webdataset: shards of labelled images (a folder written by mmvicreg shards, "
                                         "its shards.txt or a brace pattern)")
    p.add_argument("--test-split", default="test", help="the split (digits, hf)")
    p.add_argument("--classnames", help="file of class names, one per line in label order (default: the data's)")
    p.add_argument("--templates", help="file of prompt templates, one per line with {} for the class name "
                                       "(default: CLIP's 7-template ensemble)")
    p.add_argument("--image-branch", help="branch embedding the images (default: the model's first image branch)")
    p.add_argument("--text-branch", help="branch embedding the prompts (default: the model's first text branch)")

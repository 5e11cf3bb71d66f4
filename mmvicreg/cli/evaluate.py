"""``mmvicreg eval retrieval|knn|linear-probe|linear`` (also ``eval/*.py``): parse the arguments, build the model
and the data sources, call :mod:`mmvicreg.evaluation`, print a table and write JSON with ``--json OUT``.

The model is a folder written by ``save_pretrained`` (a training run's ``model/``). The data flags are the config
file's data keys, one to one: ``--images`` is a source's ``images`` (its image folder), ``--captions`` its
``captions`` file (COCO/Karpathy JSON, CSV/TSV; for ``hf``, the dataset: the key ``path``) and ``--shards`` the
``shards`` of ``--format webdataset`` (local shards, read through an index of their tar headers); the image
commands take ``--train-images``/``--test-images`` (``folder``: the class-subfolder root; ``hf``: the dataset) or
``--train-shards``/``--test-shards``. Branches are chosen with ``--image-branch`` (and ``--text-branch``); a FAISS
index kind with ``--index-kind``. Errors are reported by the command line's one handler (``mmvicreg.cli.main``).
"""

from __future__ import annotations

import argparse
from typing import Any

from mmvicreg.choices import EVAL_CAPTION_FORMATS, RETRIEVAL_INDEXES, RETRIEVAL_PROTOCOLS
from mmvicreg.cli.common import (
    add_common_arguments,
    add_retired_flag,
    encoding,
    image_text_branches,
    key_values,
    load_model,
    shard_section,
    write_json,
)
from mmvicreg.cli.images import add_head_arguments, add_image_arguments, image_eval
from mmvicreg.cli.linear import add_linear_arguments, run_linear
from mmvicreg.cli.suite import add_suite_arguments, run_suite_command
from mmvicreg.cli.zeroshot import add_zeroshot_arguments, run_zeroshot

# ------------------------------------------------------------------------------------------- sources


def caption_section(args: argparse.Namespace) -> dict[str, Any]:
    """The data section ``{"format", "captions" | "path" | "shards", "images", **--option}`` of ``eval retrieval``."""
    fmt, options = args.format, key_values(args.option, "--option")
    shards = shard_section(fmt, args.shards, "--shards", {"--images": args.images, "--captions": args.captions},
                           options)
    if shards is not None:
        return shards
    section: dict[str, Any] = {"format": fmt, **options}
    if fmt in ("coco", "karpathy", "csv"):
        what = "the CSV/TSV file" if fmt == "csv" else "the captions JSON"
        section["captions"] = _required(args, "captions", what)
        if fmt != "csv":
            _required(args, "images", "the image folder")
    elif fmt == "hf":
        section["path"] = _required(args, "captions", "the dataset (save_to_disk folder, parquet files or name)")
    if args.images:
        section["images"] = args.images
    return section


def caption_source(args: argparse.Namespace) -> Any:
    """The captioned source that ``--format --images --captions --shards --split --option k=v`` describe; one
    ValueError line when the data holds no captions (image-only shards, an hf dataset without a caption column)."""
    from mmvicreg.data import build_source
    from mmvicreg.evaluation.model_level import is_captioned

    source = build_source(caption_section(args), args.split or ("test" if args.format in ("shapes", "scenes") else "train"))
    if not is_captioned(source):
        what = f"the shards {args.shards}" if args.format == "webdataset" else f"--format {args.format}"
        raise ValueError(f"{what} hold images without captions; retrieval needs image–caption data (shards: "
                         f"write them from a caption source, e.g. mmvicreg shards --format csv)")
    return source


def _required(args: argparse.Namespace, name: str, what: str) -> str:
    value = getattr(args, name)
    if not value:
        raise ValueError(f"--format {args.format} needs --{name} ({what})")
    return value


# ------------------------------------------------------------------------------------------- retrieval


def retrieval_branches(model: Any, image: str | None, text: str | None) -> list[str] | None:
    """``[image branch, text branch]`` from ``--image-branch`` / ``--text-branch``, or None when neither is given."""
    if image is None and text is None:
        return None
    return list(image_text_branches(model, image, text, "retrieval"))


def run_retrieval(args: argparse.Namespace) -> dict[str, Any]:
    """Retrieval metrics with chance level: printed, and written to ``--json`` (R@K curve to ``--plot``)."""
    from mmvicreg.evaluation.metrics.search import faiss_device
    from mmvicreg.evaluation.model_level import embed_for_retrieval, format_retrieval, recall_curve, score_retrieval
    from mmvicreg.train.rundir import pyplot

    plt = pyplot() if args.plot else None  # a missing matplotlib is named before the encoding, not after

    options = key_values(args.index_option, "--index-option", "nprobe=32")
    if options and args.index_kind == "exact":
        raise ValueError(f"--index-option {args.index_option} applies to a FAISS --index-kind (flat, ivf, hnsw), "
                         f"not exact")
    model = load_model(args.model, args.device, args.pretrained)
    branches = retrieval_branches(model, args.image_branch, args.text_branch)
    source = caption_source(args)
    emb = embed_for_retrieval(model, source, branches, captions_per_image=args.captions_per_image, **encoding(args))
    result = {"model": str(args.model), "format": args.format,
              **score_retrieval(emb, args.protocol, args.index_kind, options or None)}
    print(format_retrieval(result, result["chance"]))
    if args.index_kind != "exact":
        print(f"ranks from a FAISS {args.index_kind} index on the {faiss_device(args.index_kind)}")
    if plt is not None:
        _plot_recall_curve(plt, recall_curve(emb), args.plot)
    write_json(args.json, result)
    return result


def _plot_recall_curve(plt: Any, curve: dict[str, Any], path: str) -> None:
    from mmvicreg.train.rundir import save_figure

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label in (("i2t", "image→text"), ("t2i", "text→image")):
        ax.plot(curve["k"], curve[key], label=label)
    ax.set_xlabel("K")
    ax.set_ylabel("R@K (%)")
    ax.set_xscale("log")
    save_figure(plt, fig, path)


# ------------------------------------------------------------------------------------------- k-NN / probe


def run_knn(args: argparse.Namespace) -> dict[str, Any]:
    """Weighted k-NN top-1 per image branch: printed, and written to ``--json``."""
    from mmvicreg.evaluation.model_level import evaluate_knn

    return image_eval(args, evaluate_knn, ks=tuple(args.k), temperature=args.temperature)


def run_linear_probe(args: argparse.Namespace) -> dict[str, Any]:
    """Linear-probe top-1 per image branch: printed, and written to ``--json``."""
    from mmvicreg.evaluation.model_level import evaluate_linear_probe

    return image_eval(args, evaluate_linear_probe, epochs=args.epochs, lr=args.lr,
                       probe_batch_size=args.probe_batch_size)


# ------------------------------------------------------------------------------------------- parsers


def add_retrieval_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``eval retrieval``: :func:`add_common_arguments`, the captioned data, protocol, branches, index."""
    add_common_arguments(p, EVAL_CAPTION_FORMATS, "data format of the captioned evaluation set (webdataset: local "
                                                  "shards written by mmvicreg shards, given with --shards)")
    add_data_arguments(p)
    p.add_argument("--protocol", choices=RETRIEVAL_PROTOCOLS, default="5k",
                   help="5k: rank against the whole set; 1k: 5 folds of 1,000 images, averaged")
    p.add_argument("--image-branch", help="branch embedding the images (default: the model's first image branch)")
    p.add_argument("--text-branch", help="branch embedding the captions (default: the model's first text branch)")
    p.add_argument("--captions-per-image", type=int, default=5, help="captions kept per image (the first ones)")
    p.add_argument("--plot", help="write a PNG of R@K against K here")
    p.add_argument("--index-kind", choices=RETRIEVAL_INDEXES, default="exact",
                   help="exact ranks, or a FAISS index (flat is exact too; ivf, hnsw approximate; GPU when present)")
    p.add_argument("--index-option", action="append", default=[], metavar="KEY=VALUE",
                   help="FAISS option: hnsw m, ef_construction, ef_search; ivf nlist, nprobe (repeatable)")
    add_retired_flag(p, "--branches", "--branches is now --image-branch IMAGE --text-branch TEXT")
    add_retired_flag(p, "--index", "--index is now --index-kind (the FAISS index kind: exact, flat, ivf, hnsw); "
                                   "--index names an index folder only in mmvicreg search")


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """The data flags :func:`caption_section` reads: ``--images``, ``--captions``, ``--shards``, ``--split``."""
    p.add_argument("--images", help="the image folder (coco, karpathy; csv: default the CSV's folder; optional for hf)")
    p.add_argument("--captions", help="the captions file: COCO/Karpathy JSON, CSV/TSV; for hf, the dataset")
    p.add_argument("--shards", help="webdataset: the shards (a folder written by mmvicreg shards, its shards.txt or a "
                                    "brace pattern of local .tar files)")
    p.add_argument("--split", help="split name (karpathy: train/val/test; hf: its split); default: test for shapes "
                                   "and scenes, else train")


def add_knn_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``eval knn``: :func:`~mmvicreg.cli.images.add_image_arguments`, the neighbours and temperature."""
    add_image_arguments(p)
    p.add_argument("--k", type=int, nargs="+", default=[20, 200],
                   help="neighbours voting (one score per k; a k above the reference set's size is dropped)")
    p.add_argument("--temperature", type=float, default=0.07, help="the votes' weight: exp(similarity / T)")


def add_linear_probe_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``eval linear-probe``: the image commands' flags and the quick probe's settings."""
    add_image_arguments(p)
    # left out: the quick probe's (mmvicreg.evaluation.metrics.linear_probe.QUICK_PROBE)
    p.add_argument("--epochs", type=int, help="passes over the cached features; default: the quick probe's 100")
    p.add_argument("--lr", type=float, help="the head's learning rate; default: the quick probe's 0.1")
    p.add_argument("--probe-batch-size", type=int, help="the probe's SGD batch; default: the quick probe's 256")
    add_head_arguments(p)


COMMANDS = {
    "retrieval": (add_retrieval_arguments, run_retrieval, "image–text Recall@K, medr, meanr"),
    "suite": (add_suite_arguments, run_suite_command, "a suite of tasks and datasets against several models, one table"),
    "zeroshot": (add_zeroshot_arguments, run_zeroshot, "zero-shot classification: images against class-name prompts"),
    "knn": (add_knn_arguments, run_knn, "weighted k-NN top-1 of frozen image features"),
    "linear-probe": (add_linear_probe_arguments, run_linear_probe, "linear probe top-1 of frozen image features"),
    "linear": (add_linear_arguments, run_linear,
               "published linear evaluation (augmented), or fine-tuning on 1 or 10 percent of the labels"),
}

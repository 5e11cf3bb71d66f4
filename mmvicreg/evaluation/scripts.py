"""The evaluation commands: ``mmvicreg eval retrieval|knn|linear-probe`` and the ``eval/*.py`` scripts.

Each reads a model exported by ``save_pretrained`` (a training run's ``model/``), builds a data source from its
arguments, prints a table and writes JSON with ``--json OUT``. The work itself is in this package's functions.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

CAPTION_FORMATS = ("coco", "karpathy", "csv", "hf", "shapes")
IMAGE_FORMATS = ("digits", "folder", "hf")


def _options(pairs: Sequence[str]) -> dict[str, Any]:
    import yaml

    out = {}
    for text in pairs:
        if "=" not in text:
            raise ValueError(f"--option {text!r} must look like key=value")
        key, value = text.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def caption_source(args: argparse.Namespace) -> Any:
    """A captioned source from ``--format --images --captions --split --option k=v``."""
    from mmvicreg.data import build_source

    opts = _options(args.option)
    fmt = args.format
    if fmt in ("coco", "karpathy"):
        _require(args, "captions", "the captions JSON")
        _require(args, "images", "the image folder")
        opts.update(annotations=args.captions, image_root=args.images)
    elif fmt == "csv":
        _require(args, "captions", "the CSV/TSV file")
        opts.update(path=args.captions, image_root=args.images)
    elif fmt == "hf":
        _require(args, "captions", "the dataset (save_to_disk folder, parquet files or name)")
        opts.update(path=args.captions, **({"image_root": args.images} if args.images else {}))
    return build_source(fmt, args.split or ("test" if fmt == "shapes" else "train"), **opts)


def image_source(fmt: str, root: str | None, split: str, options: Sequence[str]) -> Any:
    from mmvicreg.data import build_source

    opts = _options(options)
    if fmt == "folder":
        if not root:
            raise ValueError("format 'folder' needs --train-root and --test-root (class subfolders of images)")
        opts["root"] = root
    elif fmt == "hf":
        if not root:
            raise ValueError("format 'hf' needs --train-root and --test-root (datasets to load)")
        opts["path"] = root
    return build_source(fmt, split, **opts)


def _require(args: argparse.Namespace, name: str, what: str) -> None:
    if not getattr(args, name):
        raise ValueError(f"--format {args.format} needs --{name} ({what})")


def _write_json(path: str | None, payload: dict[str, Any]) -> None:
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, out)


def _load_model(path: str):
    from mmvicreg.model import JointEmbedding

    return JointEmbedding.from_pretrained(path)


# ------------------------------------------------------------------------------------------- retrieval


def run_retrieval(args: argparse.Namespace) -> dict[str, Any]:
    from mmvicreg.evaluation.model_eval import chance_recall, format_retrieval, pick_retrieval_branches
    from mmvicreg.evaluation.retrieval import retrieval_metrics, retrieval_ranks

    model = _load_model(args.model)
    image_branch, text_branch = pick_retrieval_branches(model, args.branches)
    source = caption_source(args)
    rs = source.eval_set(args.captions_per_image)
    img = model.encode(image_branch, rs.images, batch_size=args.batch_size, progress=args.progress)
    txt = model.encode(text_branch, rs.flat_captions, batch_size=args.batch_size, progress=args.progress)
    owner = np.asarray(rs.caption_image_index)
    folds = 5 if args.protocol == "1k" else None
    metrics = retrieval_metrics(img, txt, owner, folds=folds)
    n = metrics["num_images"] if folds is None else metrics["num_images"] // 5
    cpi = metrics["num_captions"] / max(1, metrics["num_images"])
    chance: dict[str, float] = {}
    for k in (1, 5, 10):
        chance.update(chance_recall(int(n), cpi, k))
    result = {
        "model": str(args.model),
        "format": args.format,
        "protocol": args.protocol,
        "image_branch": image_branch,
        "text_branch": text_branch,
        **metrics,
        "chance": chance,
    }
    print(format_retrieval(result, chance))
    if args.plot:
        i2t, t2i = retrieval_ranks(img, txt, owner)
        _plot_recall_curve(i2t, t2i, args.plot)
    _write_json(args.json, result)
    return result


def _plot_recall_curve(i2t: np.ndarray, t2i: np.ndarray, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = np.arange(1, 51)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for ranks, label in ((i2t, "image→text"), (t2i, "text→image")):
        ax.plot(ks, [100 * float(np.mean(ranks <= k)) for k in ks], label=label)
    ax.set_xlabel("K")
    ax.set_ylabel("R@K (%)")
    ax.set_xscale("log")
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------- k-NN / probe


def _features(model, branch: str, source, layer: str, batch_size: int, progress: bool):
    from mmvicreg.data import LazyImages

    feats = model.encode(branch, LazyImages(source), batch_size=batch_size, layer=layer, progress=progress)
    return feats, np.asarray(source.labels)


def _random_init_like(model):
    """The same architecture with fresh random weights: the baseline a trained model must beat."""
    import torch

    from mmvicreg.model import JointEmbedding, _build_branches

    tokenizers = {n: b.tokenizer for n, b in model.branches.items() if b.modality == "text" and b.shares is None}
    torch.manual_seed(0)
    return JointEmbedding(_build_branches(model.config()["branches"], None, tokenizers))


def _image_eval(args: argparse.Namespace, score) -> dict[str, Any]:
    model = _load_model(args.model)
    images = [n for n in model.branch_names if model.branch(n).modality == "image"]
    branches = args.branch or images
    for b in branches:
        if b not in images:
            kind = f"a {model.branch(b).modality} branch" if b in model.branch_names else "not a branch"
            raise ValueError(f"--branch {b!r} is {kind}; k-NN and linear probes score image branches: {images}")
    train_src = image_source(args.format, args.train_root, args.train_split, args.option)
    test_src = image_source(args.format, args.test_root, args.test_split, args.option)
    models = {"trained": model}
    if args.compare_random_init:
        models["random_init"] = _random_init_like(model)
    result: dict[str, Any] = {"model": str(args.model), "layer": args.layer, "results": {}}
    for which, m in models.items():
        for branch in branches:
            tr = _features(m, branch, train_src, args.layer, args.batch_size, args.progress)
            te = _features(m, branch, test_src, args.layer, args.batch_size, args.progress)
            result["results"].setdefault(which, {})[branch] = score(*tr, *te)
    _print_image_table(result["results"])
    _write_json(args.json, result)
    return result


def _print_image_table(results: dict[str, dict[str, dict[str, float]]]) -> None:
    keys = sorted({k for r in results.values() for b in r.values() for k in b if k.startswith("top1")})
    print(f"{'weights':14}{'branch':12}" + "".join(f"{k:>14}" for k in keys))
    for which, per_branch in results.items():
        for branch, scores in per_branch.items():
            print(f"{which:14}{branch:12}" + "".join(f"{scores.get(k, float('nan')):14.2f}" for k in keys))


def run_knn(args: argparse.Namespace) -> dict[str, Any]:
    from mmvicreg.evaluation.knn import knn_classify

    def score(xtr, ytr, xte, yte):
        ks = tuple(k for k in args.k if k <= len(ytr)) or (len(ytr),)
        return knn_classify(xtr, ytr, xte, yte, ks=ks, temperature=args.temperature)

    return _image_eval(args, score)


def run_linear_probe(args: argparse.Namespace) -> dict[str, Any]:
    from mmvicreg.evaluation.linear_probe import linear_probe

    def score(xtr, ytr, xte, yte):
        return linear_probe(xtr, ytr, xte, yte, epochs=args.epochs, lr=args.lr, batch_size=args.probe_batch_size)

    return _image_eval(args, score)


# ------------------------------------------------------------------------------------------- parsers


def add_retrieval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="directory written by save_pretrained (a run's model/)")
    p.add_argument("--format", required=True, choices=CAPTION_FORMATS)
    p.add_argument("--images", help="image folder (coco, karpathy, csv; optional image_root for hf)")
    p.add_argument("--captions", help="captions file: COCO/Karpathy JSON, CSV/TSV, or the hf dataset")
    p.add_argument("--split", help="split name (karpathy: train/val/test; shapes: test; hf: its split)")
    p.add_argument("--protocol", choices=("5k", "1k"), default="5k", help="5k: whole set; 1k: 5 folds averaged")
    p.add_argument("--branches", nargs=2, metavar=("IMAGE", "TEXT"), help="default: first image and text branch")
    p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="extra source option")
    p.add_argument("--json", help="write the metrics here")
    p.add_argument("--plot", help="write a PNG of R@K against K here")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def _add_image_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="directory written by save_pretrained (a run's model/)")
    p.add_argument("--format", required=True, choices=IMAGE_FORMATS)
    p.add_argument("--train-root", help="folder/hf: the labelled training images")
    p.add_argument("--test-root", help="folder/hf: the labelled test images")
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--branch", action="append", help="branch to evaluate (repeatable); default: every image branch")
    p.add_argument("--layer", choices=("representation", "embedding"), default="representation")
    p.add_argument("--compare-random-init", action="store_true", help="also score the same network untrained")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="extra source option")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def add_knn_arguments(p: argparse.ArgumentParser) -> None:
    _add_image_arguments(p)
    p.add_argument("--k", type=int, nargs="+", default=[20, 200])
    p.add_argument("--temperature", type=float, default=0.07)


def add_linear_probe_arguments(p: argparse.ArgumentParser) -> None:
    _add_image_arguments(p)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--probe-batch-size", type=int, default=256)


COMMANDS = {
    "retrieval": (add_retrieval_arguments, run_retrieval, "image–text Recall@K, medr, meanr"),
    "knn": (add_knn_arguments, run_knn, "weighted k-NN top-1 of frozen image features"),
    "linear-probe": (add_linear_probe_arguments, run_linear_probe, "linear probe top-1 of frozen image features"),
}


def script_main(command: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eval/<command>.py``: parse, run, one clear line on bad input."""
    import sys

    add, run, help_ = COMMANDS[command]
    parser = argparse.ArgumentParser(prog=f"eval/{command.replace('-', '_')}.py", description=help_)
    add(parser)
    args = parser.parse_args(argv)
    try:
        run(args)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as e:
        if os.environ.get("MMVICREG_DEBUG"):
            raise
        print(f"{parser.prog}: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2
    return 0

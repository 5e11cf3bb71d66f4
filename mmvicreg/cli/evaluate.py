"""``mmvicreg eval retrieval|knn|linear-probe`` (also ``eval/*.py``): parse the arguments, build the model and
the data sources, call :mod:`mmvicreg.evaluation`, print a table and write JSON with ``--json OUT``.

The model is a folder written by ``save_pretrained`` (a training run's ``model/``). The data flags are the config
file's data keys, one to one: ``--images`` is a source's ``images`` (its image folder) and ``--captions`` its
``captions`` file (COCO/Karpathy JSON, CSV/TSV; for ``hf``, the dataset: the key ``path``); the image commands
take ``--train-images``/``--test-images`` (``folder``: the class-subfolder root; ``hf``: the dataset).
Errors are reported by the command line's one handler (``mmvicreg.cli.main``).
"""

from __future__ import annotations

import argparse
from typing import Any

from mmvicreg.choices import CAPTION_FORMATS, RETRIEVAL_INDEXES, RETRIEVAL_PROTOCOLS
from mmvicreg.cli.common import add_common_arguments, encoding, key_values, load_model, write_json
from mmvicreg.cli.images import add_image_arguments, image_eval
from mmvicreg.cli.linear import add_linear_arguments, run_linear

# ------------------------------------------------------------------------------------------- sources


def caption_section(args: argparse.Namespace) -> dict[str, Any]:
    """The data section ``{"format", "captions" | "path", "images", **--option}`` of ``mmvicreg eval retrieval``."""
    fmt = args.format
    section: dict[str, Any] = {"format": fmt, **key_values(args.option, "--option")}
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
    """The captioned source that ``--format --images --captions --split --option k=v`` describe."""
    from mmvicreg.data import build_source

    return build_source(caption_section(args), args.split or ("test" if args.format == "shapes" else "train"))


def _required(args: argparse.Namespace, name: str, what: str) -> str:
    value = getattr(args, name)
    if not value:
        raise ValueError(f"--format {args.format} needs --{name} ({what})")
    return value


# ------------------------------------------------------------------------------------------- retrieval


def run_retrieval(args: argparse.Namespace) -> dict[str, Any]:
    """Retrieval metrics with chance level: printed, and written to ``--json`` (R@K curve to ``--plot``)."""
    from mmvicreg.evaluation.model_level import embed_for_retrieval, format_retrieval, recall_curve, score_retrieval

    from mmvicreg.evaluation.metrics.search import faiss_device

    model = load_model(args.model, args.device)
    source = caption_source(args)
    options = key_values(args.index_option, "--index-option", "nprobe=32")
    if options and args.index == "exact":
        raise ValueError(f"--index-option {args.index_option} applies to a FAISS --index (flat, ivf, hnsw), not exact")
    emb = embed_for_retrieval(model, source, args.branches, captions_per_image=args.captions_per_image,
                              **encoding(args))
    result = {"model": str(args.model), "format": args.format,
              **score_retrieval(emb, args.protocol, args.index, options or None)}
    print(format_retrieval(result, result["chance"]))
    if args.index != "exact":
        print(f"ranks from a FAISS {args.index} index on the {faiss_device(args.index)}")
    if args.plot:
        _plot_recall_curve(recall_curve(emb), args.plot)
    write_json(args.json, result)
    return result


def _plot_recall_curve(curve: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmvicreg.files import atomic_write

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label in (("i2t", "image→text"), ("t2i", "text→image")):
        ax.plot(curve["k"], curve[key], label=label)
    ax.set_xlabel("K")
    ax.set_ylabel("R@K (%)")
    ax.set_xscale("log")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


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
    add_common_arguments(p, CAPTION_FORMATS)
    p.add_argument("--images", help="the image folder (coco, karpathy, csv; optional for hf)")
    p.add_argument("--captions", help="the captions file: COCO/Karpathy JSON, CSV/TSV; for hf, the dataset")
    p.add_argument("--split", help="split name (karpathy: train/val/test; shapes: test; hf: its split)")
    p.add_argument("--protocol", choices=RETRIEVAL_PROTOCOLS, default="5k",
                   help="5k: whole set; 1k: 5 folds averaged")
    p.add_argument("--branches", nargs=2, metavar=("IMAGE", "TEXT"), help="default: first image and text branch")
    p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--plot", help="write a PNG of R@K against K here")
    p.add_argument("--index", choices=RETRIEVAL_INDEXES, default="exact",
                   help="exact ranks, or a FAISS index (flat is exact too; ivf, hnsw approximate; GPU when present)")
    p.add_argument("--index-option", action="append", default=[], metavar="KEY=VALUE",
                   help="FAISS option: hnsw m, ef_construction, ef_search; ivf nlist, nprobe")


def add_knn_arguments(p: argparse.ArgumentParser) -> None:
    add_image_arguments(p)
    p.add_argument("--k", type=int, nargs="+", default=[20, 200])
    p.add_argument("--temperature", type=float, default=0.07)


def add_linear_probe_arguments(p: argparse.ArgumentParser) -> None:
    add_image_arguments(p)
    # left out: the quick probe's (mmvicreg.evaluation.metrics.linear_probe.QUICK_PROBE)
    p.add_argument("--epochs", type=int, help="default: the quick probe's 100")
    p.add_argument("--lr", type=float, help="the head's learning rate; default: the quick probe's 0.1")
    p.add_argument("--probe-batch-size", type=int, help="the probe's SGD batch; default: the quick probe's 256")


COMMANDS = {
    "retrieval": (add_retrieval_arguments, run_retrieval, "image–text Recall@K, medr, meanr"),
    "knn": (add_knn_arguments, run_knn, "weighted k-NN top-1 of frozen image features"),
    "linear-probe": (add_linear_probe_arguments, run_linear_probe, "linear probe top-1 of frozen image features"),
    "linear": (add_linear_arguments, run_linear, "published linear evaluation (augmented) or 1%%/10%% fine-tuning"),
}

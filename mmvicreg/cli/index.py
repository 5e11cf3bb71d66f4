"""``mmvicreg index build`` and ``mmvicreg search``: a FAISS search index of images and captions, and its queries.

    mmvicreg index build --model RUN/model --images FOLDER [--captions FILE.txt] --out INDEX [--index-kind hnsw]
    mmvicreg index build --embeddings EMB --out INDEX        (EMB: a folder written by mmvicreg embed)
    mmvicreg search --index INDEX --text "a dog on the grass" [-k 10] [--json OUT]
    mmvicreg search --index INDEX --image photo.jpg

``--index`` is always an index folder (the one ``index build --out`` wrote); the FAISS index kind is
``--index-kind``. ``--model`` is a folder written by ``save_pretrained`` (a run's ``model/``) or a Hub repo id.
A search loads the model recorded in the index's ``meta.json`` unless ``--model`` names another copy of it (same
fingerprint). The work is in :mod:`mmvicreg.evaluation.search_index`; errors are one line from the command line's
one handler (``mmvicreg.cli.main``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from mmvicreg.choices import EVAL_PRECISIONS, INDEX_KINDS
from mmvicreg.cli.common import HelpFormatter, add_retired_flag, key_values, load_model

ENCODE_FLAGS = ("precision", "workers")


# ------------------------------------------------------------------------------------------- helpers


def _encode_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--precision/--workers`` as :func:`mmvicreg.encode` keyword arguments, only those given (``--device`` places
    the model: :func:`mmvicreg.cli.common.load_model`)."""
    return {k: getattr(args, k) for k in ENCODE_FLAGS if getattr(args, k, None) is not None}


def resolve_model(name: str) -> tuple[Path, dict[str, str]]:
    """``(export folder, {"ref", "fingerprint"})`` of a model folder or Hub repo id."""
    from mmvicreg.evaluation.search_index import model_fingerprint
    from mmvicreg.model.hub import resolve_export

    folder = resolve_export(name)
    ref = str(Path(name).resolve()) if os.path.exists(name) else str(name)
    return folder, {"ref": ref, "fingerprint": model_fingerprint(folder)}


# ------------------------------------------------------------------------------------------- commands


def run_build(args: argparse.Namespace) -> int:
    """Embed ``--images`` / ``--captions`` with ``--model`` into a search index at ``--out``."""
    from mmvicreg.evaluation.search_index import build_search_index

    if args.embeddings is not None:
        return _build_from_embeddings(args)
    if args.model is None:
        raise ValueError("index build needs --model (with --images and/or --captions), or --embeddings EMB (a folder "
                         "written by mmvicreg embed)")
    if args.images is None and args.captions is None:
        raise ValueError("nothing to index: pass --images FOLDER and/or --captions FILE")
    folder, ref = resolve_model(args.model)
    extra = {"batch_size": args.batch_size} if args.batch_size is not None else {}
    index = build_search_index(
        load_model(folder, args.device), args.out, images=args.images, captions=args.captions,
        kind=args.index_kind, options=key_values(args.index_option, "--index-option", "nprobe=32"),
        image_branch=args.image_branch, text_branch=args.text_branch,
        model_ref=ref, chunk_size=args.chunk_size, progress=args.progress, **extra, **_encode_options(args),
    )
    _print_built(index.meta, args.out)
    return 0


def _build_from_embeddings(args: argparse.Namespace) -> int:
    """``index build --embeddings EMB``: the index of a folder mmvicreg embed wrote, its model from embed.json."""
    from mmvicreg.evaluation.embed_index import build_index_from_embeddings

    given = [flag for flag, value in (("--model", args.model), ("--images", args.images), ("--captions", args.captions),
                                      ("--image-branch", args.image_branch), ("--text-branch", args.text_branch))
             if value is not None]
    if given:
        raise ValueError(f"--embeddings takes the model, branches and items from its embed.json; drop "
                         f"{' and '.join(given)}")
    index = build_index_from_embeddings(
        args.embeddings, args.out, kind=args.index_kind,
        options=key_values(args.index_option, "--index-option", "nprobe=32"), progress=args.progress,
    )
    _print_built(index.meta, args.out)
    return 0


def _print_built(meta: dict[str, Any], out: str) -> None:
    from mmvicreg.evaluation.metrics.search import faiss_device

    counts = ", ".join(f"{n} {kind}s" for kind, n in meta["counts"].items())
    branches = ", ".join(f"{kind}s through {b!r}" for kind, b in meta["branches"].items())
    recall = meta["recall"]
    quality = "exact" if recall.get("exact") else f"recall@10 {recall['recall_at_10']:.3f} against exact on " \
                                                  f"{recall['sample']} sample queries"
    print(f"indexed {counts} ({branches}) into {out}: {meta['index']} index ({quality}), d={meta['dim']}; "
          f"searches run on the FAISS {faiss_device(meta['index']).upper()}")


def index_model(index: Any, model: str | None, device: str | None) -> Any:
    """The model that built ``index``: ``model`` (a moved copy, or a Hub id to fetch) or the one its meta.json
    records, which must be a local folder (an index never fetches a model by itself); its fingerprint is checked."""
    name = model or index.model_ref
    if name is None:
        raise ValueError(f"index {index.directory} does not record its model; pass --model (the model that built it)")
    if model is None and os.path.isabs(name) and not os.path.exists(name):
        raise FileNotFoundError(f"index {index.directory} was built with model {name}, which is no longer there; "
                                f"pass --model with that model's new location")
    if model is None and not os.path.isdir(name):  # an index someone shared must not make us download
        raise ValueError(f"index {index.directory} names the model {name!r}, which is not a local folder; an index "
                         f"never fetches a model by itself: pass --model {name} to download it from the Hub, or "
                         f"--model with a local copy")
    folder, ref = resolve_model(name)
    index.check_model(ref["ref"], ref["fingerprint"])
    return load_model(folder, device)


def run_search(args: argparse.Namespace) -> int:
    """Embed ``--text`` or ``--image``, print the top ``-k`` items of ``--index`` and write them to ``--json``."""
    from mmvicreg.evaluation.search_index import SearchIndex, read_query_image

    if (args.text is None) == (args.image is None):
        raise ValueError("a query is a text or an image: pass exactly one of --text TEXT / --image PATH")
    index = SearchIndex.load(args.index)
    image = read_query_image(args.image) if args.image is not None else None  # before the model: fail fast
    model = index_model(index, args.model, args.device)
    hits = index.query(model, text=args.text, image=image, k=args.k, **_encode_options(args))
    query = repr(args.text) if args.text is not None else args.image
    print(f"top {len(hits)} of {index.meta['count']} items for {query} "
          f"({index.meta['index']} index on the FAISS {index.device.upper()}):")
    print(format_hits(hits))
    if args.json:
        from mmvicreg.files import atomic_write_json

        atomic_write_json(args.json, hits)
    return 0


def format_hits(hits: list[dict[str, Any]]) -> str:
    """A table: rank, score, kind, and the image's path or the caption's line and text."""
    lines = [f"{'rank':>4}  {'score':>7}  {'kind':<7}  item"]
    for h in hits:
        item = f"{h['id']}: {h['text']}" if h["kind"] == "caption" else h["id"]
        lines.append(f"{h['rank']:>4}  {h['score']:7.4f}  {h['kind']:<7}  {item}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- parsers


def _add_encode_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="where the model runs: cpu, cuda, cuda:N (default: the model's choice)")
    p.add_argument("--precision", choices=EVAL_PRECISIONS,
                   help="autocast precision of the encoder (default: auto: bf16 on CUDA, fp32 on the CPU)")
    p.add_argument("--workers", type=int, help="DataLoader processes decoding images (default: 0, decoding in this "
                                               "process)")


def add_build_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``index build``: the model, what to index, the output folder, the FAISS index kind, branches."""
    p.add_argument("--model", help="folder written by save_pretrained (a run's model/) or Hub id (required unless "
                                   "--embeddings)")
    p.add_argument("--images", help="folder of images, searched recursively (jpg, jpeg, png, webp, bmp)")
    p.add_argument("--captions", help="text file, one caption per line")
    p.add_argument("--embeddings", help="index the embeddings of a folder written by mmvicreg embed (its model "
                                        "is recorded in its embed.json) instead of embedding --images/--captions")
    p.add_argument("--out", required=True, help="the index folder to write (replaced when it is an index)")
    p.add_argument("--index-kind", choices=("auto", *INDEX_KINDS), default="auto",
                   help="FAISS index kind: flat (exact), ivf, hnsw (approximate); auto: flat under 100,000 items, "
                        "else ivf, its recall@10 against exact measured and tuned to 0.95")
    p.add_argument("--index-option", action="append", default=[], metavar="KEY=VALUE",
                   help="FAISS option: hnsw m, ef_construction, ef_search; ivf nlist, nprobe (repeatable)")
    p.add_argument("--image-branch", help="branch embedding the images (default: the first image branch)")
    p.add_argument("--text-branch", help="branch embedding the captions (default: the first text branch)")
    p.add_argument("--batch-size", type=int, help="items per encoding batch (default 256)")
    p.add_argument("--chunk-size", type=int, default=4096, help="items embedded and added to the index at once")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="do not show progress bars")
    _add_encode_arguments(p)
    add_retired_flag(p, "--index", "--index is now --index-kind (the FAISS index kind: flat, ivf, hnsw); --index "
                                   "names an index folder, in mmvicreg search")


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``search``: the index folder, the query, how many results, the model, ``--json``."""
    p.add_argument("--index", required=True, help="the index folder (written by mmvicreg index build --out)")
    p.add_argument("--text", help="a text query (through the model's text branch)")
    p.add_argument("--image", help="an image file as the query (through the model's image branch)")
    p.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    p.add_argument("--model", help="the model that built the index, if moved (default: the one in meta.json)")
    p.add_argument("--json", help="write the results here: [{rank, score, id, kind, text?}]")
    _add_encode_arguments(p)


def add_index_commands(subparsers: Any) -> None:
    """Register ``index build`` and ``search`` on the top-level ``subparsers``; parsed args carry ``run``."""
    index = subparsers.add_parser("index", help="build a search index of images and captions",
                                  formatter_class=HelpFormatter)
    build = index.add_subparsers(dest="index_command", required=True, metavar="ACTION").add_parser(
        "build", help="embed a folder of images and/or a caption file into a FAISS index",
        description="Embed a folder of images and/or a caption file into a FAISS index folder (--out),\n"
                    "to query with mmvicreg search --index FOLDER.", formatter_class=HelpFormatter,
    )
    add_build_arguments(build)
    build.set_defaults(run=run_build)
    search = subparsers.add_parser("search", help="query a search index with a text or an image",
                                   description="Query an index folder (written by mmvicreg index build) with a text\n"
                                               "or an image.", formatter_class=HelpFormatter)
    add_search_arguments(search)
    search.set_defaults(run=run_search)

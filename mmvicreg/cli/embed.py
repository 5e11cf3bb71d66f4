"""``mmvicreg embed``: write a model's image and/or text embeddings of a data set into a folder, in clip-retrieval's
layout (:mod:`mmvicreg.evaluation.embed_folder`), for other tools or ``mmvicreg index build --embeddings``.

    mmvicreg embed --model RUN/model --format csv --captions captions.csv --images IMAGES --out EMB
    mmvicreg embed --model RUN/model --format webdataset --shards SHARDS --out EMB --shard-size 100000
    accelerate launch -m mmvicreg embed ...      (each process embeds its share of the shards)

The data flags are those of ``eval retrieval`` (``--format --images --captions --shards --split --option``; an
image-only format such as ``folder`` takes its folder as ``--images``), the encoding flags those of every eval
command. The work is in :func:`mmvicreg.evaluation.embed_source.embed_source`.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from mmvicreg.choices import EMBEDDING_LAYERS, EVAL_CAPTION_FORMATS, EVAL_IMAGE_FORMATS
from mmvicreg.cli.common import HelpFormatter, add_common_arguments, check_branch_flag, load_model, write_json
from mmvicreg.cli.evaluate import add_data_arguments, caption_section

FORMATS = tuple(dict.fromkeys((*EVAL_CAPTION_FORMATS, *EVAL_IMAGE_FORMATS)))


def _init_distributed(device: str | None) -> str | None:
    """Join the process group a launcher (``accelerate launch``, ``torchrun``) describes in the environment, and
    the device of this process (``cuda:LOCAL_RANK`` when on CUDA and ``--device`` is not given)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    import torch
    import torch.distributed as dist

    cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if cuda and device in (None, "cuda"):
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    if cuda:
        torch.cuda.set_device(torch.device(device))  # NCCL's barriers run on this process's GPU
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return device


def run_embed(args: argparse.Namespace) -> int:
    """Embed the data that the flags describe into ``--out``; print what was written (and ``--json`` it)."""
    from mmvicreg.cli.index import resolve_model
    from mmvicreg.data import build_source
    from mmvicreg.distributed import rank, world_size
    from mmvicreg.evaluation.embed_source import choose_branches, embed_source
    from mmvicreg.evaluation.model_level import is_captioned

    if args.shard_size < 1:
        raise ValueError(f"--shard-size must be a positive number of rows, got {args.shard_size}")
    if os.path.lexists(args.out) and not os.path.isdir(args.out):
        raise FileExistsError(f"--out {args.out} exists and is not a folder; pass --out a new or empty folder")
    section = caption_section(args)
    device = _init_distributed(args.device)
    folder, ref = resolve_model(args.model)
    model = load_model(folder, device)
    for flag, name, modality in (("--image-branch", args.image_branch, "image"),
                                 ("--text-branch", args.text_branch, "text")):
        if name is not None:
            check_branch_flag(model, flag, name, modality, f"the model's {modality} branches")
    source = build_source(section, args.split or ("test" if args.format == "shapes" else "train"))
    data = f"the shards {args.shards}" if args.format == "webdataset" else f"--format {args.format}"
    branches = choose_branches(model, is_captioned(source), args.modality, args.image_branch, args.text_branch,
                               data)
    meta = embed_source(
        model, source, args.out, branches=branches, layer=args.layer, dtype=args.dtype, shard_size=args.shard_size,
        captions_per_image=args.captions_per_image, model_ref=ref, data=_described(section), force=args.force,
        batch_size=args.batch_size, progress=args.progress, workers=args.workers, precision=args.precision,
        decode_on=args.decode_on,
    )
    if world_size() > 1:
        print(f"rank {rank()} of {world_size()}: wrote shards {meta['written_shards']}", flush=True)
    if rank() == 0:
        counts, kept = meta["counts"], meta["counts"]["shards"] - len(meta["written_shards"])
        what = ", ".join(f"{m} through {b!r} (d={meta['dims'][m]})" for m, b in meta["branches"].items())
        print(f"embedded {counts['rows']} rows into {args.out}: {what}, {meta['dtype']}, {counts['shards']} shards"
              + (f" ({kept} already there, kept)" if kept else ""))
        write_json(args.json, {k: v for k, v in meta.items() if k != "written_shards"})
    return 0


def _described(section: dict[str, Any]) -> dict[str, Any]:
    """The data section as recorded in embed.json: paths made absolute (a re-run from elsewhere resumes)."""
    return {k: os.path.abspath(v) if k in ("images", "captions", "shards") and os.path.exists(str(v)) else v
            for k, v in section.items()}


def add_embed_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``embed``: the eval commands' common and data flags, branches, layer, and the output."""
    add_common_arguments(p, FORMATS, "data format (webdataset: local shards written by mmvicreg shards, given with "
                                     "--shards; folder: class subfolders under --images)")
    add_data_arguments(p)
    p.add_argument("--out", required=True, help="the folder to write: img_emb/, text_emb/, metadata/, embed.json")
    p.add_argument("--modality", choices=("image", "text", "both"),
                   help="what to embed (default: each modality that both the data and the model have)")
    p.add_argument("--image-branch", help="branch embedding the images (default: the model's first image branch)")
    p.add_argument("--text-branch", help="branch embedding the captions (default: the model's first text branch)")
    p.add_argument("--layer", choices=EMBEDDING_LAYERS, default="embedding",
                   help="embedding: the expander's z (what retrieval compares); representation: the encoder's h")
    p.add_argument("--captions-per-image", type=int, default=1,
                   help="rows per image of captioned data: one per caption, the first ones (the image embedding "
                        "repeated)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="the embeddings' type on disk")
    p.add_argument("--shard-size", type=int, default=100_000, help="rows per shard (one shard is in memory at a time)")
    p.add_argument("--force", action="store_true",
                   help="replace embeddings of another model or settings in --out (default: refuse; a re-run with "
                        "the same ones resumes, keeping finished shards)")


def add_embed_command(subparsers: Any) -> None:
    """Register ``embed`` on the top-level ``subparsers``; parsed args carry ``run``."""
    p = subparsers.add_parser("embed", help="write image/text embeddings of a data set to a folder (clip-retrieval "
                                            "layout)", formatter_class=HelpFormatter,
                              description="Write a model's embeddings of a data set into --out: img_emb/img_emb_N.npy, "
                                          "text_emb/text_emb_N.npy,\nmetadata/metadata_N.parquet and embed.json. "
                                          "Resumable; under accelerate launch or torchrun each\nprocess embeds its "
                                          "share of the shards.")
    add_embed_arguments(p)
    p.set_defaults(run=run_embed)

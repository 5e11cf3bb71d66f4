"""``mmvicreg shards``: write a data source as webdataset shards, for streamed training (``format: webdataset``).

    mmvicreg shards --format csv --captions flickr8k/captions.csv --images flickr8k/images --out shards/flickr8k
    mmvicreg shards --format shapes --option num_images=20000 --option size=64 --out shards/shapes --per image

The source is built as a config's ``data.*`` section would build it (:func:`mmvicreg.data.build.build_source`:
``--format``, ``--images``, ``--captions``, ``--split`` and any ``--option KEY=VALUE``); the writing is
:func:`mmvicreg.data.sources.shard_writer.write_shards`. Errors (an unknown format, a missing file, an output
folder that already holds shards without ``--overwrite``) are one line from the command line's one handler
(``mmvicreg.cli.main``).
"""

from __future__ import annotations

import argparse
from typing import Any

from mmvicreg.choices import DATA_FORMATS
from mmvicreg.cli.common import HelpFormatter, key_values


def add_shards_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``shards``: the source (as a config's data section), the output folder and the layout."""
    p.add_argument("--format", required=True,
                   help=f"data format of the source ({', '.join(f for f in DATA_FORMATS if f != 'webdataset')})")
    p.add_argument("--images", default=None, help="image folder (the format's images=)")
    p.add_argument("--captions", default=None, help="caption file (the format's captions=)")
    p.add_argument("--split", default="train", help="split to write (default: train)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other option of the format, e.g. --option num_images=20000 (repeatable)")
    p.add_argument("--out", required=True, help="folder for 00000.tar, ..., sizes.json and shards.txt")
    p.add_argument("--samples-per-shard", type=int, default=1000, help="samples per shard (default: 1000)")
    p.add_argument("--per", default="pair", metavar="pair|image",
                   help="a sample per image–caption pair (default) or per image with all its captions; image-only "
                        "sources (folder, digits) write a sample per image with its label either way")
    p.add_argument("--overwrite", action="store_true", help="replace the shards already in --out")


def run_shards(args: argparse.Namespace) -> int:
    """Build the source, write its shards, print one summary line; 0 on success."""
    from mmvicreg.data.build import build_source
    from mmvicreg.data.sources.shard_writer import check_out_dir, write_shards

    section: dict[str, Any] = {"format": args.format}
    section.update({k: getattr(args, k) for k in ("images", "captions") if getattr(args, k) is not None})
    section.update(key_values(args.option, "--option", "num_images=20000"))
    if section["format"] == "webdataset":
        raise ValueError("--format webdataset is already shards; pass the format of the data to convert")
    check_out_dir(args.out, args.samples_per_shard, args.per, args.overwrite)  # before building a large source
    source = build_source(section, args.split)
    written = write_shards(source, args.out, args.samples_per_shard, args.per, overwrite=args.overwrite)
    skipped = f"; {written.skipped} unreadable images left out" if written.skipped else ""
    print(f"wrote {len(written)} shards, {written.samples} samples of {written.images} images ({source.name}) "
          f"to {args.out}; list: {args.out}/shards.txt{skipped}")
    return 0


def add_shards_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``shards`` on the top-level ``subparsers``; the parsed args carry ``run=run_shards``."""
    p = subparsers.add_parser("shards", help="write a data source as webdataset shards (for streamed training)",
                              description="Write a data source as webdataset shards: for streamed training\n"
                                          "(format: webdataset) and for mmvicreg eval --format webdataset.",
                              formatter_class=HelpFormatter)
    add_shards_arguments(p)
    p.set_defaults(run=run_shards)
    return p

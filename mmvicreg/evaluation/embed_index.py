"""A search index (:mod:`mmvicreg.evaluation.search_index`) built from a folder ``mmvicreg embed`` wrote, without
embedding anything again: ``mmvicreg index build --embeddings EMB --out INDEX``.

The index is the one :func:`~mmvicreg.evaluation.search_index.build_search_index` writes: images first (one item
per image: the rows of an image's further captions repeat its embedding and are added once), then captions, each
row L2-normalised; the model recorded is embed.json's, so ``mmvicreg search`` loads and checks it as for an index
built directly. The folder's embeddings are read one shard at a time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmvicreg.evaluation.embed_folder import iter_shards, read_complete
from mmvicreg.evaluation.index_folder import refusal, write_folder
from mmvicreg.evaluation.metrics.search import new_index
from mmvicreg.evaluation.search_index import FORMAT_VERSION, IndexFiller, SearchIndex, package_version, unit_rows

__all__ = ["build_index_from_embeddings"]

ITEM_KINDS = (("image", "image"), ("text", "caption"))  # embed's modality -> the index's item kind


def build_index_from_embeddings(
    embeddings: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    kind: str = "flat",
    options: Mapping[str, Any] | None = None,
    train_size: int = 50_000,
    progress: bool = False,
) -> SearchIndex:
    """Index the embeddings of the finished ``mmvicreg embed`` folder ``embeddings`` into ``out_dir``.

    Items: ``{"id", "kind": "image"}`` per image (``id``: the row's id, an image folder's relative path for an
    image folder or CSV), then ``{"id", "kind": "caption", "text"}`` per caption row. ``kind`` / ``options``:
    the FAISS index. One line when the folder is unfinished, holds the representation layer (a query is embedded
    as z) or image and text embeddings of different widths; ``out_dir`` is replaced only when it is an index.
    """
    src = Path(embeddings)
    meta_in = read_complete(src)
    if meta_in["layer"] != "embedding":
        raise ValueError(f"the embeddings at {src} are of the layer {meta_in['layer']!r}; a search embeds its query "
                         f"as 'embedding' (z): write them with mmvicreg embed --layer embedding")
    if len(set(meta_in["dims"].values())) > 1:
        raise ValueError(f"the embeddings at {src} have different widths per modality ({meta_in['dims']}); one index "
                         f"holds one width: write them with --modality image or --modality text")
    out = Path(out_dir)
    problem = refusal(out)
    if problem is not None:
        raise FileExistsError(problem)
    if train_size < 1:
        raise ValueError(f"train_size must be positive, got {train_size}")
    filler = IndexFiller(kind, options, min(meta_in["counts"]["rows"] * len(meta_in["dims"]), train_size))
    new_index(1, kind, options, filler.train_rows)  # a bad kind or option fails here, before any reading
    rows: list[dict[str, Any]] = []
    branches: dict[str, str] = {}
    from tqdm.auto import tqdm

    with tqdm(desc="index", unit="item", disable=not progress) as bar:
        for modality, item_kind in ITEM_KINDS:
            if modality not in meta_in["dims"]:
                continue
            branches[item_kind] = meta_in["branches"][modality]
            previous = None
            for z, metadata in iter_shards(src, modality):
                keep = list(range(len(metadata)))
                if modality == "image":  # an image's rows (one per caption) are consecutive: add it once
                    keep = [i for i, r in enumerate(metadata) if r["id"] != (metadata[i - 1]["id"] if i else previous)]
                    previous = metadata[-1]["id"] if metadata else previous
                if keep:
                    filler.add(unit_rows(z[keep]))
                rows += [_item(metadata[i], item_kind) for i in keep]
                bar.update(len(keep))
    index = filler.finish()
    meta = {
        "format_version": FORMAT_VERSION, "mmvicreg_version": package_version(), "model": dict(meta_in["model"]),
        "branches": branches, "dim": int(index.d), "index": kind, "index_options": dict(options or {}),
        "count": len(rows), "counts": {k: sum(r["kind"] == k for r in rows) for k in branches},
        "sources": {"embeddings": str(src.resolve())},
    }
    return SearchIndex(out, index, rows, write_folder(out, index, rows, meta), "cpu")


def _item(row: Mapping[str, Any], kind: str) -> dict[str, Any]:
    if kind == "image":
        return {"id": row["id"], "kind": "image"}
    return {"id": row["id"], "kind": "caption", "text": row["caption"]}

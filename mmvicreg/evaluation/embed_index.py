"""A search index (:mod:`mmvicreg.evaluation.search_index`) built from a folder ``mmvicreg embed`` wrote, without
embedding anything again: ``mmvicreg index build --embeddings EMB --out INDEX``.

The index is the one :func:`~mmvicreg.evaluation.search_index.build_search_index` writes: images first (one item
per image: the rows of an image's further captions repeat its embedding and are added once), then captions, each
row L2-normalised; the model recorded is embed.json's, so ``mmvicreg search`` loads and checks it as for an index
built directly. The folder's embeddings are read one shard at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mmvicreg.evaluation.embed_folder import iter_shards, read_complete
from mmvicreg.evaluation.search_index import SearchIndex, index_rows, unit_rows

__all__ = ["build_index_from_embeddings"]

ITEM_KINDS = (("image", "image"), ("text", "caption"))  # embed's modality -> the index's item kind


def build_index_from_embeddings(
    embeddings: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    kind: str = "auto",
    options: Mapping[str, Any] | None = None,
    train_size: int = 50_000,
    progress: bool = False,
) -> SearchIndex:
    """Index the embeddings of the finished ``mmvicreg embed`` folder ``embeddings`` into ``out_dir``.

    Items: ``{"id", "kind": "image"}`` per image (``id``: the row's id, an image folder's relative path for an
    image folder or CSV), then ``{"id", "kind": "caption", "text"}`` per caption row. ``kind`` / ``options``:
    the FAISS index (``"auto"``: chosen from the count, an approximate one's recall@10 measured: see
    :func:`~mmvicreg.evaluation.search_index.index_rows`). One line when the folder is unfinished, holds the representation layer (a query is embedded
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
    if train_size < 1:
        raise ValueError(f"train_size must be positive, got {train_size}")
    rows: list[dict[str, Any]] = []
    branches = {kind_: meta_in["branches"][m] for m, kind_ in ITEM_KINDS if m in meta_in["dims"]}
    count = sum(meta_in["counts"]["images" if m == "image" else "rows"] for m, _ in ITEM_KINDS if m in meta_in["dims"])
    described = {"model": dict(meta_in["model"]), "branches": branches,
                 "sources": {"embeddings": str(src.resolve())}}
    return index_rows(out_dir, _chunks(src, meta_in, rows), rows, described, kind=kind, options=options,
                      train_size=train_size, progress=progress, count=count)


def _chunks(src: Path, meta_in: Mapping[str, Any], rows: list[dict[str, Any]]) -> Iterator[np.ndarray]:
    """The folder's L2-normalised embeddings shard by shard, images (each once) then captions; ``rows`` gets each
    yielded row's item record as it goes."""
    for modality, item_kind in ITEM_KINDS:
        if modality not in meta_in["dims"]:
            continue
        previous = None
        for z, metadata in iter_shards(src, modality):
            keep = list(range(len(metadata)))
            if modality == "image":  # an image's rows (one per caption) are consecutive: add it once
                keep = [i for i, r in enumerate(metadata) if r["id"] != (metadata[i - 1]["id"] if i else previous)]
                previous = metadata[-1]["id"] if metadata else previous
            if keep:
                rows += [_item(metadata[i], item_kind) for i in keep]
                yield unit_rows(z[keep])


def _item(row: Mapping[str, Any], kind: str) -> dict[str, Any]:
    if kind == "image":
        return {"id": row["id"], "kind": "image"}
    return {"id": row["id"], "kind": "caption", "text": row["caption"]}

"""The folder of a search index on disk (:mod:`mmvicreg.evaluation.search_index`): its files, writing it whole,
reading its items back checked against it, and knowing by content whether a folder is one.

A search index is exactly ``index.faiss``, ``items.jsonl`` and ``meta.json``, the meta recording the builder's keys
(:data:`META_KEYS`) and the SHA-256 of ``items.jsonl`` (``items_sha256``), so that an edited or shuffled items file
(which would give every hit the wrong id) is refused on load. A new index is written into a private sibling folder
and swapped in by renames; an existing ``--out`` is replaced only when it holds nothing but an index's files, and is
re-checked at the swap, so that no other file is ever deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from mmvicreg.evaluation.metrics.search import write_index
from mmvicreg.files import apply_umask, fsync_dir, fsync_tree

INDEX_FILE, ITEMS_FILE, META_FILE = "index.faiss", "items.jsonl", "meta.json"
INDEX_FILES = (INDEX_FILE, ITEMS_FILE, META_FILE)
META_KEYS = ("format_version", "model", "branches", "dim", "index", "count")  # what every index's meta.json has
KEEP_HINT = "nothing was deleted; pass --out another folder, or remove only those entries"


def items_bytes(rows: list[dict[str, Any]]) -> bytes:
    """``items.jsonl``: one JSON object per row, in row order."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_items(directory: Path, meta: dict[str, Any], ntotal: int, rebuild: str) -> list[dict[str, Any]]:
    """The rows of ``directory/items.jsonl``, after checking they are the ones the index was built with: their
    SHA-256 is ``meta["items_sha256"]`` and there is one per vector (``ntotal``) and per ``meta["count"]``.
    ``ValueError`` (one line naming the file and ending with ``rebuild``) otherwise."""
    path = directory / ITEMS_FILE
    data = path.read_bytes()
    if digest(data) != meta.get("items_sha256"):
        raise ValueError(f"search index {directory}: {path} is not the items file the index was built with (its "
                         f"SHA-256 differs from the one in {META_FILE}: edited, reordered or replaced); {rebuild}")
    items = [json.loads(line) for line in data.decode().splitlines() if line]
    if not ntotal == len(items) == meta.get("count"):
        raise ValueError(f"search index {directory} is inconsistent ({ntotal} vectors, {len(items)} items, "
                         f"count {meta.get('count')}); {rebuild}")
    return items


def refusal(out: Path) -> str | None:
    """Why a new index may not replace ``out``; None when ``out`` is absent, an empty folder or a search index
    (regular files named as an index's only, and a ``meta.json`` with the keys every index's meta has)."""
    if not os.path.lexists(out):
        return None
    if out.is_symlink() or not out.is_dir():
        return f"{out} exists and is not a folder; pass --out a new or empty folder"
    entries = sorted(out.iterdir())
    foreign = [p.name + ("/" if p.is_dir() else "") for p in entries
               if p.name not in INDEX_FILES or p.is_symlink() or not p.is_file()]
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        return (f"{out} exists and is not a search index: it holds {shown}, which an index build never writes; "
                f"{KEEP_HINT}")
    if entries and (out / META_FILE) not in entries:
        return f"{out} exists and is not a search index: it has no {META_FILE}; {KEEP_HINT}"
    if entries and not _is_index_meta(out / META_FILE):
        return (f"{out} exists and is not a search index: its {META_FILE} is not a search index's (it needs the keys "
                f"{', '.join(META_KEYS)}); {KEEP_HINT}")
    return None


def _is_index_meta(path: Path) -> bool:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(meta, dict) and all(key in meta for key in META_KEYS)


def write_folder(out: Path, index: Any, rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Write the index, its items and ``meta`` (plus ``items_sha256``) into a private sibling of ``out``, then
    swap it in (:func:`publish`). Returns the meta written."""
    items = items_bytes(rows)
    meta = {**meta, "items_sha256": digest(items)}
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.staging-"))
    try:
        write_index(index, staging / INDEX_FILE)
        (staging / ITEMS_FILE).write_bytes(items)
        (staging / META_FILE).write_text(json.dumps(meta, indent=2))
        apply_umask(staging)  # mkdtemp's folder is private; the index is an ordinary output
        publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return meta


def publish(staging: Path, out: Path) -> None:
    """Put the complete folder ``staging`` at ``out`` by renames: an existing ``out`` is first renamed aside and
    checked again (:func:`refusal`: it must still be empty or an index, else it is renamed back and
    ``FileExistsError`` raised), then ``staging`` takes its name and the old index is removed."""
    fsync_tree(staging)
    if not os.path.lexists(out):
        os.replace(staging, out)  # fails, deleting nothing, if a non-empty folder appeared there meanwhile
        fsync_dir(out.parent)
        return
    aside = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
    os.replace(out, aside)
    problem = refusal(aside)
    if problem is not None:
        os.replace(aside, out)
        raise FileExistsError(problem.replace(str(aside), str(out)))
    try:
        os.replace(staging, out)
    except BaseException:
        os.replace(aside, out)
        raise
    fsync_dir(out.parent)
    shutil.rmtree(aside, ignore_errors=True)

"""The folder ``mmvicreg embed`` writes, in clip-retrieval's layout, and reading it back.

    DIR/img_emb/img_emb_0.npy     (rows, d) float32 or float16: the image embeddings of shard 0
    DIR/text_emb/text_emb_0.npy   (rows, d): the text embeddings of the same rows
    DIR/metadata/metadata_0.parquet  the rows of shard 0 in order: ``id``, ``image_path``, ``caption`` (and
                                  ``label`` for labelled images)
    DIR/embed.json                the plan (model, branches, layer, dtype, shard size, data, row count) and,
                                  once every shard is written, ``complete: true`` with the counts and dims

A shard's files are each written atomically (a temporary file beside it, then a rename), the metadata last, so
a shard is finished exactly when its metadata and every embedding file are there with its row count
(:func:`shard_finished`); a re-run with the same plan keeps finished shards and redoes the others. A folder that
holds anything an embed never writes, or another plan's embeddings, is refused (:func:`folder_refusal`):
nothing is deleted unless ``force`` and then only the files of this layout.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mmvicreg.files import atomic_write, atomic_write_json

META_FILE = "embed.json"
FORMAT_VERSION = 1
KINDS = {"image": ("img_emb", "img_emb"), "text": ("text_emb", "text_emb")}  # modality -> (folder, file stem)
METADATA = "metadata"
PLAN_KEYS = ("model", "branches", "layer", "dtype", "shard_size", "captions_per_image", "rows", "data")
_OURS = re.compile(r"^(img_emb_\d+\.npy|text_emb_\d+\.npy|metadata_\d+\.parquet|\..*\.tmp)$")
_HINT = "pass --out another folder, or --force to replace the embeddings there"


def emb_path(out: Path, modality: str, shard: int) -> Path:
    """``out/img_emb/img_emb_<shard>.npy`` (``modality`` image) or ``out/text_emb/text_emb_<shard>.npy`` (text)."""
    folder, stem = KINDS[modality]
    return out / folder / f"{stem}_{shard}.npy"


def metadata_path(out: Path, shard: int) -> Path:
    """``out/metadata/metadata_<shard>.parquet``."""
    return out / METADATA / f"metadata_{shard}.parquet"


def read_meta(out: str | os.PathLike) -> dict[str, Any] | None:
    """``out/embed.json`` as a dict, or None when there is none; one ValueError line when it is not readable."""
    path = Path(out) / META_FILE
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not the embed.json (format {FORMAT_VERSION}) of mmvicreg embed")
    return meta


def _foreign(out: Path) -> list[str]:
    """Entries of ``out`` that an embed never writes."""
    folders = {METADATA, *(folder for folder, _ in KINDS.values())}
    found = []
    for entry in sorted(out.iterdir()):
        name, plain = entry.name, not entry.is_symlink()
        if plain and entry.is_file() and (name == META_FILE or (name.startswith(f".{META_FILE}.") and
                                                               name.endswith(".tmp"))):
            continue
        if plain and entry.is_dir() and name in folders:
            found += [f"{name}/{p.name}" for p in sorted(entry.iterdir()) if not _OURS.match(p.name) or p.is_dir()]
            continue
        found.append(name + ("/" if entry.is_dir() else ""))
    return found


def plan_difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """How the plan recorded in ``old`` (an embed.json) differs from ``new``: None when it is the same."""
    if old.get("model", {}).get("fingerprint") != new["model"].get("fingerprint"):
        return (f"it holds the embeddings of another model ({old.get('model', {}).get('ref')}, fingerprint "
                f"{old.get('model', {}).get('fingerprint')})")
    changed = [k for k in PLAN_KEYS if k != "model" and old.get(k) != new.get(k)]
    if changed:
        shown = ", ".join(f"{k} {old.get(k)!r} (now {new.get(k)!r})" for k in changed[:3])
        return f"it was written with other settings: {shown}"
    return None


def folder_refusal(out: Path, plan: dict[str, Any], force: bool) -> str | None:
    """Why embeddings planned as ``plan`` may not be written into ``out``; None when ``out`` is absent, empty,
    or holds this plan's embeddings (a resume) or, with ``force``, another plan's (replaced)."""
    if not os.path.lexists(out):
        return None
    if out.is_symlink() or not out.is_dir():
        return f"--out {out} exists and is not a folder; pass --out a new or empty folder"
    foreign = _foreign(out)
    if foreign:
        shown = ", ".join(foreign[:6]) + (f" and {len(foreign) - 6} more" if len(foreign) > 6 else "")
        return (f"--out {out} holds {shown}, which mmvicreg embed never writes; nothing was deleted: pass --out a new "
                f"or empty folder")
    try:
        old = read_meta(out)
    except ValueError as e:
        return None if force else f"--out {out}: {e}; {_HINT}"
    if old is None:
        if any(p.is_file() for p in out.rglob("*")) and not force:
            return f"--out {out} holds embedding files without {META_FILE} (whose they are is unknown); {_HINT}"
        return None
    difference = plan_difference(old, plan)
    if difference is not None and not force:
        return f"--out {out}: {difference}; {_HINT}"
    return None


def clear_folder(out: Path) -> None:
    """Remove the files of this layout from ``out`` (only those: :func:`folder_refusal` checked there are no others)."""
    for folder in (METADATA, *(f for f, _ in KINDS.values())):
        for p in sorted((out / folder).glob("*")) if (out / folder).is_dir() else ():
            if _OURS.match(p.name) and p.is_file():
                p.unlink()
    (out / META_FILE).unlink(missing_ok=True)


def remove_leftovers(out: Path) -> None:
    """Remove the temporary files a killed run's atomic writes left in ``out``'s folders."""
    for folder in (METADATA, *(f for f, _ in KINDS.values())):
        for p in sorted((out / folder).glob(".*.tmp")) if (out / folder).is_dir() else ():
            p.unlink(missing_ok=True)


def write_meta(out: Path, meta: dict[str, Any]) -> None:
    """Write ``out/embed.json`` atomically."""
    atomic_write_json(out / META_FILE, meta)


def _rows_of(path: Path) -> int | None:
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path).num_rows
    except (OSError, ValueError):
        return None


def _npy_shape(path: Path) -> tuple[tuple[int, ...], str] | None:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return tuple(arr.shape), str(arr.dtype)


def shard_finished(out: Path, shard: int, rows: int, dims: dict[str, int], dtype: str) -> bool:
    """Whether shard ``shard`` is complete: its metadata holds ``rows`` rows and each modality of ``dims`` has an
    embedding file of shape (rows, d) and ``dtype`` (a truncated or short file is not)."""
    if not metadata_path(out, shard).is_file() or _rows_of(metadata_path(out, shard)) != rows:
        return False
    return all(_npy_shape(emb_path(out, m, shard)) == ((rows, d), dtype) for m, d in dims.items())


def write_shard(out: Path, shard: int, embeddings: dict[str, np.ndarray], metadata: dict[str, list[Any]]) -> None:
    """Write shard ``shard``: each modality's embeddings, then its metadata (the file that marks it finished),
    each atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for modality, arr in embeddings.items():
        atomic_write(emb_path(out, modality, shard), lambda tmp, a=arr: _save_npy(tmp, a))
    table = pa.table(metadata)
    atomic_write(metadata_path(out, shard), lambda tmp: pq.write_table(table, tmp))


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, arr)


def read_complete(out: str | os.PathLike) -> dict[str, Any]:
    """The embed.json of a finished ``mmvicreg embed`` folder; one line when there is none or it is unfinished."""
    out = Path(out)
    meta = read_meta(out) if out.is_dir() else None
    if meta is None:
        raise FileNotFoundError(f"no embeddings at {out} (no {META_FILE}): write them with mmvicreg embed --out {out}")
    if not meta.get("complete"):
        raise ValueError(f"the embeddings at {out} are unfinished; run the same mmvicreg embed command again to "
                         f"finish them (finished shards are kept)")
    return meta


def iter_shards(out: str | os.PathLike, modality: str) -> Iterator[tuple[np.ndarray, list[dict[str, Any]]]]:
    """``(embeddings (rows, d) float32, metadata rows)`` of each shard of a finished folder, in order: one shard
    in memory at a time."""
    import pyarrow.parquet as pq

    out = Path(out)
    meta = read_complete(out)
    if modality not in meta["dims"]:
        raise ValueError(f"the embeddings at {out} hold no {modality} embeddings (only {', '.join(meta['dims'])})")
    for shard in range(meta["counts"]["shards"]):
        rows = pq.read_table(metadata_path(out, shard)).to_pylist()
        yield np.load(emb_path(out, modality, shard), allow_pickle=False).astype(np.float32), rows

"""Embed a data source into a folder of embedding shards (:mod:`mmvicreg.evaluation.embed_folder`'s layout):
what ``mmvicreg embed`` runs.

The rows: a captioned source gives one row per (image, caption) pair, the first ``captions_per_image`` captions
of each image in order (1: one row per image, with its first caption); a labelled image source one row per
image. Rows are cut into shards of ``shard_size``; each shard is embedded through the one encode path
(:func:`mmvicreg.data.encoding.encode_batches`: its images decoded by the loader's workers batch by batch, each image
once however many of its captions the shard holds) and written before the next starts, so memory holds one
shard's embeddings, never the collection's. Under ``torch.distributed`` (``accelerate launch``, ``torchrun``)
process ``r`` of ``w`` embeds the shards ``i`` with ``i mod w == r``; the files are those one process writes.

The model is duck-typed as in :mod:`mmvicreg.evaluation.model_level`; ``model_ref`` (``{"ref", "fingerprint"}``)
identifies it in ``embed.json`` (default: a SHA-256 of its weights), so that a re-run resumes only the same
model's embeddings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmvicreg.choices import EMBEDDING_LAYERS, check_choice
from mmvicreg.data import LazyImages
from mmvicreg.data.encoding import encode_batches
from mmvicreg.data.sources.base import CaptionSource, ImageSource
from mmvicreg.distributed import is_distributed, rank, world_size
from mmvicreg.evaluation import embed_folder as folder
from mmvicreg.evaluation.model_level import is_captioned
from mmvicreg.evaluation.search_index import package_version, pick_branch

__all__ = ["EMBED_DTYPES", "EMBED_MODALITIES", "choose_branches", "embed_source"]

EMBED_DTYPES = ("float32", "float16")
EMBED_MODALITIES = ("image", "text", "both")


class ImageRows(Sequence):
    """The images ``indices`` of a source, decoded whole on access (picklable, for the loader's workers).

    Deliberately not ``ReadsEncoded``: an eval loader decodes a large JPEG reduced when it may (DCT scaling),
    which changes the pixels a little; embeddings written out equal :func:`mmvicreg.encode` of the decoded
    images, and a search index built from them equals one built from the files."""

    def __init__(self, images: LazyImages, indices: Sequence[int]) -> None:
        self.images, self.indices = images, [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k):  # type: ignore[override]
        return self.images[self.indices[k]]


def choose_branches(model: Any, captioned: bool, modality: str | None = None, image_branch: str | None = None,
                    text_branch: str | None = None, data: str = "the data") -> dict[str, str]:
    """``{modality: branch}`` to embed. ``modality`` None: each modality both the data (text only when
    ``captioned``) and the model have, plus any whose branch is named; ``"both"``: image and text. A branch
    left None is the model's first of its modality. One ValueError line for a wrong branch or text asked of
    image-only data (``data`` names it)."""
    if modality is not None:
        check_choice(modality, EMBED_MODALITIES, "modality")
    kinds = {"image": image_branch, "text": text_branch}
    if modality is None:
        has = {m for m in kinds if any(model.branch(n).modality == m for n in model.branch_names)}
        wanted = [m for m in kinds if kinds[m] is not None or (m in has and (m == "image" or captioned))]
    else:
        wanted = ["image", "text"] if modality == "both" else [modality]
    unused = [m for m in kinds if kinds[m] is not None and m not in wanted]
    if unused:
        raise ValueError(f"--{unused[0]}-branch {kinds[unused[0]]} names a branch that --modality {modality} does not "
                         f"embed")
    if "text" in wanted and not captioned:
        why = f"--text-branch {text_branch}" if text_branch else f"--modality {modality}"
        raise ValueError(f"{why} asks for text embeddings but {data} holds images without captions")
    if not wanted:
        raise ValueError(f"nothing to embed: the model has no branch for {data} ({list(model.branch_names)})")
    return {m: pick_branch(model, m, kinds[m], f"{m} embeddings") for m in wanted}


def _rows(source: Any, captions_per_image: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(image index, caption index) of every row; the caption index is None for image-only data."""
    if not is_captioned(source):
        return np.arange(source.num_images), None
    per = [min(captions_per_image, len(c)) for c in source.captions]
    images = np.repeat(np.arange(len(per)), per)
    starts = np.cumsum([0, *per[:-1]])
    return images, np.arange(len(images)) - np.repeat(starts, per)


def _metadata(source: Any, images: np.ndarray, captions: np.ndarray | None) -> dict[str, list[Any]]:
    """The metadata columns of some rows: ``id``, ``image_path``, ``caption`` (and ``label``)."""
    store = source.store if isinstance(source, (CaptionSource, ImageSource)) else None
    paths = [store.path(int(i)) if store is not None else None for i in images]
    if captions is not None:
        return {"id": [str(source.image_ids[i]) for i in images], "image_path": paths,
                "caption": [source.captions[i][j] for i, j in zip(images, captions)]}
    return {"id": [p if p is not None else str(int(i)) for p, i in zip(paths, images)], "image_path": paths,
            "caption": [None] * len(images), "label": [int(source.labels[i]) for i in images]}


def _dims(model: Any, branches: Mapping[str, str], layer: str) -> dict[str, int]:
    out = {}
    for modality, name in branches.items():
        b = model.branch(name)
        out[modality] = int(b.embedding_dim if layer == "embedding" else b.encoder.output_dim)
    return out


def weights_fingerprint(model: Any) -> str:
    """``"weights:sha256:<hex>"`` of a model's parameters and buffers (names, shapes, values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "weights:sha256:" + digest.hexdigest()


def _barrier() -> None:
    if is_distributed():
        import torch.distributed as dist

        dist.barrier()


def embed_source(
    model: Any,
    source: Any,
    out: str | Path,
    *,
    branches: Mapping[str, str] | None = None,
    layer: str = "embedding",
    dtype: str = "float32",
    shard_size: int = 100_000,
    captions_per_image: int = 1,
    model_ref: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    force: bool = False,
    batch_size: int = 256,
    progress: bool = False,
    **encode_options: Any,
) -> dict[str, Any]:
    """Embed every row of ``source`` into the folder ``out``; returns its finished ``embed.json``.

    ``branches``: ``{modality: branch}`` (default :func:`choose_branches`). ``layer``: ``"embedding"`` (z) or
    ``"representation"`` (h). ``dtype``: ``"float32"`` or ``"float16"`` on disk. ``data``: how the source was
    described (recorded, and compared on a resume). ``out`` absent or empty: written; holding this plan's
    embeddings: finished shards are kept (checked by content) and the others written; holding another plan's
    (model, branches, layer, dtype, shard size, captions per image, data, row count) or anything an embed never
    writes: ``FileExistsError``, nothing deleted, unless ``force`` (another plan's embeddings are then removed;
    foreign files are refused all the same). ``batch_size`` and ``encode_options`` (``workers``, ``precision``)
    go to :func:`mmvicreg.encode`.
    """
    check_choice(layer, EMBEDDING_LAYERS, "layer")
    check_choice(dtype, EMBED_DTYPES, "dtype")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive number of rows, got {shard_size!r}")
    if captions_per_image < 1:
        raise ValueError(f"captions_per_image must be >= 1, got {captions_per_image}")
    out = Path(out)
    branches = dict(branches or choose_branches(model, is_captioned(source)))
    images, captions = _rows(source, captions_per_image)
    if len(images) == 0:
        raise ValueError("the data holds no images: there is nothing to embed")
    shards = -(-len(images) // shard_size)
    plan = {
        "format_version": folder.FORMAT_VERSION, "mmvicreg_version": package_version(),
        "model": dict(model_ref or {"ref": None, "fingerprint": weights_fingerprint(model)}),
        "branches": branches, "layer": layer, "dtype": dtype, "shard_size": shard_size,
        "captions_per_image": captions_per_image if captions is not None else None, "rows": int(len(images)),
        "data": dict(data or {}), "dims": _dims(model, branches, layer),
        "counts": {"rows": int(len(images)), "shards": shards, "images": int(source.num_images)}, "complete": False,
    }
    problem = folder.folder_refusal(out, plan, force)
    if problem is not None:
        raise FileExistsError(problem)
    try:
        old = folder.read_meta(out) if out.is_dir() else None
    except ValueError:  # an unreadable embed.json that force lets us replace (folder_refusal refused it otherwise)
        old = None
    _barrier()  # every process has looked at the folder before the first one changes it
    if rank() == 0:
        if out.is_dir() and (old is None or folder.plan_difference(old, plan) is not None):
            folder.clear_folder(out)  # force (folder_refusal let it through): another plan's files, ours only
        folder.remove_leftovers(out)
        out.mkdir(parents=True, exist_ok=True)
        folder.write_meta(out, plan)  # complete: false until every shard is checked or written
    _barrier()
    mine = [k for k in range(shards) if k % world_size() == rank()]
    written = _embed_shards(model, source, out, plan, mine, images, captions, batch_size, progress, encode_options)
    _barrier()
    meta = {**plan, "complete": True}
    if rank() == 0:
        folder.write_meta(out, meta)
    _barrier()
    return {**meta, "written_shards": written}


def _encoded(model: Any, plan: dict[str, Any], modality: str, items: Sequence[Any],
             options: Mapping[str, Any]) -> np.ndarray:
    """``items`` through ``modality``'s branch (the one encode path, batch by batch) into one (n, d) array of the
    plan's dtype, filled in place: the shard's embeddings are in memory once."""
    out = np.empty((len(items), plan["dims"][modality]), dtype=plan["dtype"])
    done = 0
    for z in encode_batches(model, plan["branches"][modality], items, **options):
        out[done : done + len(z)] = z.numpy()
        done += len(z)
    return out


def _embed_shards(model: Any, source: Any, out: Path, plan: dict[str, Any], mine: list[int], images: np.ndarray,
                  captions: np.ndarray | None, batch_size: int, progress: bool,
                  encode_options: Mapping[str, Any]) -> list[int]:
    """Embed and write the shards ``mine`` that are not finished; returns those written."""
    from tqdm.auto import tqdm

    size, dims, written = plan["shard_size"], plan["dims"], []
    options = {"batch_size": batch_size, "layer": plan["layer"], "progress": False, **encode_options}
    lazy = LazyImages(source) if "image" in dims else None
    total = sum(min(size, len(images) - k * size) for k in mine)
    with tqdm(total=total, desc="embed", unit="row", disable=not progress) as bar:
        for k in mine:
            rows = slice(k * size, min((k + 1) * size, len(images)))
            n = rows.stop - rows.start
            if folder.shard_finished(out, k, n, dims, plan["dtype"]):
                bar.update(n)
                continue
            shard_images = images[rows]
            shard_captions = captions[rows] if captions is not None else None
            embeddings = {}
            if lazy is not None:
                unique, inverse = np.unique(shard_images, return_inverse=True)
                z = _encoded(model, plan, "image", ImageRows(lazy, unique), options)
                embeddings["image"] = z if len(unique) == n else z[inverse]  # an image per row: no copy
            if "text" in dims and shard_captions is not None:
                texts = [source.captions[i][j] for i, j in zip(shard_images, shard_captions)]
                embeddings["text"] = _encoded(model, plan, "text", texts, options)
            folder.write_shard(out, k, embeddings, _metadata(source, shard_images, shard_captions))
            written.append(k)
            bar.update(n)
    return written

"""A search index: a folder of images and/or a file of captions embedded by a model, searched by text or image.

``build_search_index(model, out, images=FOLDER, captions=FILE)`` writes the folder ``out``:

* ``index.faiss``: a FAISS inner-product index (:mod:`mmvicreg.evaluation.metrics.search`) of L2-normalised
  embeddings, so scores are cosine similarities; row i is item i;
* ``items.jsonl``: one ``{"id", "kind", "text"?}`` per row: images (``kind`` ``"image"``, ``id`` the path
  relative to the image folder, sorted) then captions (``"caption"``, ``id`` ``"line N"``, ``text``);
* ``meta.json``: the model (``ref``: its folder's absolute path or Hub id; ``fingerprint``:
  :func:`model_fingerprint`), the branch per kind, the embedding ``dim``, the index kind and options, ``count``,
  the sources, the mmvicreg version and ``items_sha256`` (checked on load: an edited items file is refused).

Images go through the model's image branch, captions through its text branch (the first of each modality unless
named). Memory is bounded: items are embedded ``chunk_size`` at a time and added chunk by chunk; an IVF index is
trained on its first ``min(n, train_size)`` rows (the images come first) before the rest is added. The folder
is staged beside ``out`` and renamed into place whole; an existing ``out`` is replaced only when it is a search
index (:mod:`mmvicreg.evaluation.index_folder`). :meth:`SearchIndex.load` reads it back, on the GPU when
FAISS can (:func:`~mmvicreg.evaluation.metrics.search.on_faiss_device`); :meth:`SearchIndex.query` embeds a text
or an image with the same model and returns the top k.

The model is duck-typed as in :mod:`mmvicreg.evaluation.model_level` (``branch_names``, ``branch(name).modality``,
and what the one encode path, :func:`mmvicreg.data.encoding.encode`, asks of it); ``encode_options`` are that
function's (``layer``, ``workers``, ``precision``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mmvicreg.data.encoding import encode
from mmvicreg.evaluation.search_inputs import (  # noqa: F401 - QUERY_SHORT_SIDE: part of this module's interface
    IMAGE_SUFFIXES,
    QUERY_SHORT_SIDE,
    ImageFiles,
    list_images,
    read_captions,
    read_query_image,
)
from mmvicreg.evaluation.index_folder import INDEX_FILE, META_FILE, read_items, refusal, write_folder
from mmvicreg.evaluation.metrics.ann_recall import ExactNeighbours, choose_kind, tune_recall
from mmvicreg.evaluation.metrics.search import new_index, on_faiss_device, read_index, search

__all__ = ["IMAGE_SUFFIXES", "SearchIndex", "build_search_index", "index_rows", "list_images", "model_fingerprint",
           "read_captions", "read_query_image"]

FORMAT_VERSION = 2  # 2: meta.json records items_sha256
EXPORT_FILES = ("config.json", "model.safetensors")  # an export's architecture and weights (mmvicreg.model.io)
GPU_MAX_K = 2048  # FAISS's GPU indexes return at most this many neighbours per query
BUILD_HINT = "mmvicreg index build --model MODEL --images FOLDER --out {out}"


def model_fingerprint(folder: str | os.PathLike) -> str:
    """``"sha256:<hex>"`` of an export's ``config.json``, ``model.safetensors`` and ``tokenizers/`` files."""
    folder = Path(folder)
    files = [folder / name for name in EXPORT_FILES]
    files += sorted(p for p in (folder / "tokenizers").rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: {folder} is not a complete mmvicreg export")
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def pick_branch(model: Any, modality: str, name: str | None = None, why: str = "") -> str:
    """``name`` checked to be a ``modality`` branch of ``model``, or its first ``modality`` branch."""
    names = list(model.branch_names)
    if name is not None:
        if name not in names or model.branch(name).modality != modality:
            raise ValueError(f"branch {name!r} is not one of the model's {modality} branches: {_describe(model)}")
        return name
    for n in names:
        if model.branch(n).modality == modality:
            return n
    raise ValueError(f"{why or modality + ' items'} need a {modality} branch; the model has {_describe(model)}")


def _describe(model: Any) -> str:
    return ", ".join(f"{n} ({model.branch(n).modality})" for n in model.branch_names)


def unit_rows(z: Any) -> np.ndarray:
    """``z`` (a tensor or array, (n, d)) as contiguous float32 rows of unit L2 norm (what an index holds)."""
    z = np.ascontiguousarray(z.detach().cpu().numpy() if hasattr(z, "detach") else z, dtype=np.float32)
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


# ------------------------------------------------------------------------------------------- building


class IndexFiller:
    """Adds chunks of rows to an index made on the first chunk; an untrained (IVF) index buffers its first
    ``train_rows`` rows, trains on them, then adds them: memory is one chunk, or the training sample."""

    def __init__(self, kind: str, options: Mapping[str, Any] | None, train_rows: int) -> None:
        self.kind, self.options, self.train_rows = kind, dict(options or {}), train_rows
        self.index: Any = None
        self.pending: list[np.ndarray] = []
        self.adds = 0

    def add(self, rows: np.ndarray) -> None:
        """Add (or, before an IVF index is trained, buffer) the L2-normalised float32 ``rows``."""
        if self.index is None:
            self.index = new_index(rows.shape[1], self.kind, self.options, self.train_rows)
        if self.index.is_trained:
            self.index.add(rows)
            self.adds += 1
            return
        self.pending.append(rows)
        if sum(len(p) for p in self.pending) >= self.train_rows:
            self._train()

    def _train(self) -> None:
        sample = np.concatenate(self.pending)
        self.pending = []
        self.index.train(sample)
        self.index.add(sample)
        self.adds += 1

    def finish(self) -> Any:
        """The index with every row added (an IVF index trained on the rows buffered so far)."""
        if self.pending:
            self._train()
        return self.index


def _chunks(model: Any, branch: str, items: Sequence[Any], chunk_size: int, batch_size: int,
            encode_options: Mapping[str, Any]) -> Iterator[np.ndarray]:
    for lo in range(0, len(items), chunk_size):
        z = encode(model, branch, items[lo : lo + chunk_size], batch_size=batch_size, progress=False,
                   **encode_options)
        yield unit_rows(z)


def build_search_index(
    model: Any,
    out_dir: str | os.PathLike,
    *,
    images: str | os.PathLike | None = None,
    captions: str | os.PathLike | None = None,
    kind: str = "auto",
    options: Mapping[str, Any] | None = None,
    image_branch: str | None = None,
    text_branch: str | None = None,
    model_ref: Mapping[str, str] | None = None,
    batch_size: int = 256,
    chunk_size: int = 4096,
    train_size: int = 50_000,
    progress: bool = False,
    **encode_options: Any,
) -> SearchIndex:
    """Embed the images under ``images`` and/or the lines of ``captions`` and save a search index in ``out_dir``.

    ``kind`` / ``options``: the FAISS index (``"flat"``, ``"hnsw"``, ``"ivf"``; see
    :func:`~mmvicreg.evaluation.metrics.search.new_index`), or ``"auto"``: chosen from the number of items
    (:func:`~mmvicreg.evaluation.metrics.ann_recall.choose_kind`). An approximate index's recall@10 against exact
    search is measured on a sample as it is built, its breadth raised to reach 0.95
    (:func:`~mmvicreg.evaluation.metrics.ann_recall.tune_recall`), and recorded in ``meta["recall"]``.
    ``model_ref`` (``{"ref", "fingerprint"}``) is what :meth:`SearchIndex.load` callers check a query model against. ``batch_size`` and ``encode_options``
    (``device``, ``precision``, ``workers``) go to :func:`mmvicreg.encode`, called once per ``chunk_size`` items.
    ``out_dir`` is replaced whole when it is a search index (by content: an index's files only); any other
    non-empty folder is refused (``FileExistsError`` naming what else it holds) and nothing in it is deleted.
    """
    if images is None and captions is None:
        raise ValueError("nothing to index: pass --images FOLDER and/or --captions FILE")
    if chunk_size < 1 or train_size < 1:
        raise ValueError(f"chunk_size and train_size must be positive, got {chunk_size} and {train_size}")
    out = Path(out_dir)
    problem = refusal(out)
    if problem is not None:  # before any encoding
        raise FileExistsError(problem)
    parts, rows = [], []  # (kind, branch, items to encode), item records
    if images is not None:
        branch = pick_branch(model, "image", image_branch, "--images")
        paths = list_images(images)
        parts.append(("image", branch, ImageFiles([str(Path(images) / p) for p in paths])))
        rows += [{"id": p, "kind": "image"} for p in paths]
    if captions is not None:
        branch = pick_branch(model, "text", text_branch, "--captions")
        lines = read_captions(captions)
        parts.append(("caption", branch, [text for _, text in lines]))
        rows += [{"id": i, "kind": "caption", "text": text} for i, text in lines]
    chunks = (z for _, branch, items in parts
              for z in _chunks(model, branch, items, chunk_size, batch_size, encode_options))
    described = {"model": dict(model_ref or {"ref": None, "fingerprint": None}),
                 "branches": {k: b for k, b, _ in parts},
                 "sources": {"images": _absolute(images), "captions": _absolute(captions)}}
    return index_rows(out, chunks, rows, described, kind=kind, options=options, train_size=train_size,
                      progress=progress)


def index_rows(
    out_dir: str | os.PathLike, chunks: Iterable[np.ndarray], rows: list[dict[str, Any]], described: dict[str, Any],
    *, kind: str = "auto", options: Mapping[str, Any] | None = None, train_size: int = 50_000,
    progress: bool = False, count: int | None = None,
) -> SearchIndex:
    """Write the index folder of ``chunks`` (L2-normalised (m, d) float32 rows, in the order of ``rows``, the item
    records): what :func:`build_search_index` does after encoding, for embeddings made elsewhere (``rows`` may be
    filled while ``chunks`` is consumed; ``count`` then says how many there will be). ``described`` gives
    meta.json's ``model``, ``branches`` and ``sources``. ``kind`` ``"auto"`` is chosen from the count; an
    approximate index's recall@10 is measured and tuned while the rows stream past (one chunk in memory)."""
    out = Path(out_dir)
    problem = refusal(out)
    if problem is not None:
        raise FileExistsError(problem)
    n = len(rows) if count is None else count
    kind = choose_kind(n) if kind == "auto" else kind
    filler = IndexFiller(kind, options, max(1, min(n, train_size)))
    neighbours = ExactNeighbours() if kind != "flat" else None
    new_index(1, kind, options, filler.train_rows)  # a bad kind or option fails here, before any encoding
    bar = _progress(n, progress)
    for z in chunks:
        filler.add(z)
        if neighbours is not None:
            neighbours.update(z)
        bar.update(len(z))
    bar.close()
    index = filler.finish()
    if index is None or index.ntotal != len(rows):
        raise ValueError(f"{0 if index is None else index.ntotal} vectors for {len(rows)} items: one row per item")
    recall = tune_recall(index, kind, neighbours) if neighbours is not None else {"recall_at_10": 1.0, "exact": True}
    options = {**dict(options or {}), **{k: v for k, v in recall.items() if k in ("nprobe", "ef_search")}}
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    meta = {
        "format_version": FORMAT_VERSION,
        "mmvicreg_version": package_version(),
        "model": described["model"],
        "branches": described["branches"],
        "dim": int(index.d),
        "index": kind,
        "index_options": options,
        "recall": recall,
        "count": len(rows),
        "counts": {k: sum(r["kind"] == k for r in rows) for k in kinds},
        "sources": described["sources"],
    }
    return SearchIndex(out, index, rows, write_folder(out, index, rows, meta), "cpu")


def _absolute(path: str | os.PathLike | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def package_version() -> str:
    """The installed mmvicreg's version, or ``"unknown"``."""
    try:
        return metadata.version("mmvicreg")
    except metadata.PackageNotFoundError:
        return "unknown"


def _progress(total: int, show: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="index", unit="item", disable=not show)


# ------------------------------------------------------------------------------------------- querying


@dataclass
class SearchIndex:
    """A loaded search index: the FAISS ``index`` (on ``device``), its ``items`` in row order and ``meta``."""

    directory: Path
    index: Any
    items: list[dict[str, Any]]
    meta: dict[str, Any]
    device: str

    @classmethod
    def load(cls, directory: str | os.PathLike, gpu: bool = True) -> SearchIndex:
        """Read the folder written by :func:`build_search_index`; search on the GPU when FAISS can and ``gpu``."""
        directory = Path(directory)
        if not (directory / META_FILE).is_file():
            raise FileNotFoundError(f"no search index at {directory}: build one with {BUILD_HINT.format(out=directory)}")
        rebuild = f"rebuild it with {BUILD_HINT.format(out=directory)}"
        try:
            meta = json.loads((directory / META_FILE).read_text())
            if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"search index {directory} has format "
                                 f"{meta.get('format_version') if isinstance(meta, dict) else None!r}, not "
                                 f"{FORMAT_VERSION}; {rebuild}")
            index = read_index(directory / INDEX_FILE)
            items = read_items(directory, meta, index.ntotal, rebuild)
        except (OSError, RuntimeError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"search index {directory} cannot be read ({type(e).__name__}: {e}); {rebuild}") from None
        index, device = on_faiss_device(index, meta["index"]) if gpu else (index, "cpu")
        return cls(directory, index, items, meta, device)

    @property
    def model_ref(self) -> str | None:
        """The model the index was built with: a folder's absolute path or a Hub id."""
        return self.meta["model"].get("ref")

    def check_model(self, ref: str, fingerprint: str) -> None:
        """A one-line ``ValueError`` unless ``fingerprint`` is the one of the model that built the index."""
        built = self.meta["model"]
        if built.get("fingerprint") == fingerprint:
            return
        sources = self.meta.get("sources", {})
        data = " ".join(f"--{k} {v}" for k, v in sources.items() if v) or "--images FOLDER"
        command = f"mmvicreg index build --model {ref} {data}"
        if sources.get("embeddings"):  # built from mmvicreg embed's folder: the embeddings are redone first
            command = (f"mmvicreg embed --model {ref} --force --out {sources['embeddings']} (with its data flags), "
                       f"then mmvicreg index build --embeddings {sources['embeddings']}")
        raise ValueError(
            f"index {self.directory} was built with model {built.get('ref')} (fingerprint {built.get('fingerprint')}), "
            f"not {ref} (fingerprint {fingerprint}); rebuild it with {command} --out {self.directory}"
        )

    def query(self, model: Any, *, text: str | None = None, image: Any = None, k: int = 10,
              branch: str | None = None, **encode_options: Any) -> list[dict[str, Any]]:
        """The ``k`` items most similar to ``text`` or ``image`` (a PIL image or a path): ``[{rank, score, id,
        kind, text?}]``, best first. The query goes through ``branch``, by default the branch that embedded the
        index's captions (text) or images (image), else the model's first branch of that modality."""
        if (text is None) == (image is None):
            raise ValueError("a query is a text or an image: pass exactly one of --text TEXT / --image PATH")
        if k < 1:
            raise ValueError(f"k must be a positive number of results, got {k}")
        kind, modality = ("caption", "text") if text is not None else ("image", "image")
        if branch is None and self.meta["branches"].get(kind) in model.branch_names:
            branch = self.meta["branches"][kind]
        flag = "--text" if text is not None else "--image"
        branch = pick_branch(model, modality, branch, f"{flag} queries")
        if isinstance(image, (str, os.PathLike)):
            image = read_query_image(image)
        z = unit_rows(encode(model, branch, [text if text is not None else image], batch_size=1, progress=False,
                              **encode_options))
        if z.shape[1] != self.meta["dim"]:
            raise ValueError(f"branch {branch!r} embeds into {z.shape[1]} dimensions but index {self.directory} "
                             f"holds {self.meta['dim']}; query with the model that built it")
        return self.search_vector(z[0], k)

    def search_vector(self, z: np.ndarray, k: int = 10) -> list[dict[str, Any]]:
        """The ``k`` items nearest the L2-normalised vector ``z`` (d,), best first (approximate indexes may give
        fewer): ``[{rank, score, row (the item's row in the index), id, kind, text?}]``."""
        if self.device == "gpu" and k > GPU_MAX_K:
            raise ValueError(f"k = {k} is over FAISS's limit of {GPU_MAX_K} results on a GPU; ask for fewer")
        scores, ids = search(self.index, np.ascontiguousarray(z[None], dtype=np.float32), k)
        hits = [(float(s), int(i)) for s, i in zip(scores[0], ids[0]) if i >= 0]
        return [{"rank": r, "score": s, "row": i, **self.items[i]} for r, (s, i) in enumerate(hits, 1)]

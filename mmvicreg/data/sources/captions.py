"""Image–caption sources read from files: COCO captions JSON, Karpathy split JSON, CSV/TSV.

Each function takes the caption file as ``captions`` and the image folder as ``images`` (the names of a config's
``data.*`` keys) and returns a ``FileCaptionSource`` (a ``CaptionSource`` over a ``FileStore``): samples
``{"image": RGB PIL, "caption": str, "image_id": ...}`` and ``eval_set()`` for retrieval. Images whose file
is missing raise (or are skipped under ``on_bad_image="skip"``) when the source is built; captions are grouped
per image in file order.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

from mmvicreg.choices import KARPATHY_SPLITS, did_you_mean
from mmvicreg.data.sources.base import CaptionSource
from mmvicreg.data.sources.io import PathLike, caption_text, read_text, require_file
from mmvicreg.data.sources.policy import BadDataPolicy
from mmvicreg.data.sources.stores import FileStore


class FileCaptionSource(CaptionSource):
    """Captioned images stored as files: ``paths[i]`` is described by ``captions[i]``.

    ``options`` are ``CaptionSource``'s: ``pairs``, ``policy``, ``name``, ``fix``.
    """

    def __init__(self, paths: Sequence[PathLike], image_ids: Sequence[Any], captions: Sequence[Sequence[str]],
                 **options: Any) -> None:
        super().__init__(image_ids, captions, FileStore(paths), **options)

    @property
    def paths(self) -> list[str]:
        """``paths[i]`` is the file of image i."""
        return self.store.paths  # type: ignore[attr-defined]


def _read_json(path: PathLike, what: str, fix: str) -> Any:
    path = require_file(path, what, fix)
    try:
        return json.loads(read_text(path))  # bytes that are not UTF-8 surface per caption (on_bad_caption)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {path} is not valid JSON ({exc.msg} at line {exc.lineno}); {fix}") from None


def coco_captions(
    captions: PathLike,
    images: PathLike,
    *,
    pairs: str = "one",
    on_bad_image: str = "error",
    on_bad_caption: str = "error",
    verify: bool = False,
) -> FileCaptionSource:
    """The official COCO captions JSON (``captions_{train,val}{2014,2017}.json``) with its image folder.

    Images come from the JSON's ``images`` list (in that order), never from the folder listing, so JPEGs without
    captions are not counted; images listed without any caption are left out. ``image_id`` is COCO's id.
    """
    fix = "pass captions= the path of captions_<split><year>.json from the COCO annotations archive"
    data = _read_json(captions, "COCO captions file", fix)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) \
            or not isinstance(data.get("images"), list):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{captions} is not a COCO captions file: it needs 'images' and 'annotations' lists, found {keys}; "
            f"{fix} (instances_*.json and Karpathy's dataset_coco.json are other formats: use format 'karpathy' "
            f"for the latter)"
        )
    by_image: dict[Any, list[str]] = {}
    for k, ann in enumerate(data["annotations"]):
        try:
            by_image.setdefault(ann["image_id"], []).append(caption_text(ann["caption"]))
        except (KeyError, TypeError):
            raise ValueError(f"{captions}: annotation #{k} lacks 'image_id' or 'caption': {ann!r}") from None
    root = Path(images)
    paths, ids, caps = [], [], []
    for k, img in enumerate(data["images"]):
        try:
            image_id, file_name = img["id"], img["file_name"]
        except (KeyError, TypeError):
            raise ValueError(f"{captions}: images[{k}] lacks 'id' or 'file_name': {img!r}") from None
        if image_id in by_image:
            paths.append(root / file_name)
            ids.append(image_id)
            caps.append(by_image[image_id])
    return FileCaptionSource(
        paths, ids, caps, pairs=pairs, policy=BadDataPolicy(on_bad_image, on_bad_caption, verify),
        name=f"coco {Path(captions).name}", fix=f"check images={os.fspath(images)!r}",
    )


def karpathy_captions(
    captions: PathLike,
    images: PathLike,
    split: str,
    *,
    include_restval: bool = True,
    pairs: str = "one",
    on_bad_image: str = "error",
    on_bad_caption: str = "error",
    verify: bool = False,
) -> FileCaptionSource:
    """Karpathy's split files (``dataset_coco.json``, ``dataset_flickr8k.json``, ``dataset_flickr30k.json``).

    ``split`` is ``train``, ``val``, ``test`` or ``restval``; ``train`` also takes ``restval`` images (the usual
    113k-image COCO training set) unless ``include_restval=False``. The image path is
    ``images/filepath/filename`` (COCO entries carry ``filepath``, e.g. ``val2014``; Flickr ones do not).
    Captions are each sentence's ``raw`` text; ``image_id`` is ``cocoid``, else ``imgid``, else the file name.
    """
    fix = "pass captions= the path of dataset_coco.json / dataset_flickr8k.json / dataset_flickr30k.json"
    if split not in KARPATHY_SPLITS:
        raise ValueError(f"unknown Karpathy split {split!r}{did_you_mean(split, KARPATHY_SPLITS)}; "
                         f"known: {', '.join(KARPATHY_SPLITS)}")
    data = _read_json(captions, "Karpathy split file", fix)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{captions} is not a Karpathy split file: it needs an 'images' list, found {keys}; {fix}")
    wanted = {split, "restval"} if split == "train" and include_restval else {split}
    root = Path(images)
    paths, ids, caps = [], [], []
    for k, img in enumerate(data["images"]):
        try:
            if img["split"] not in wanted:
                continue
            sentences = [caption_text(s["raw"]) for s in img["sentences"]]
            path = root / img.get("filepath", "") / img["filename"]
        except (KeyError, TypeError):
            raise ValueError(
                f"{captions}: images[{k}] lacks 'split', 'filename' or 'sentences[].raw': {str(img)[:200]}"
            ) from None
        if sentences:
            paths.append(path)
            ids.append(img.get("cocoid", img.get("imgid", img["filename"])))
            caps.append(sentences)
    if not paths:
        present = sorted({str(img.get("split")) for img in data["images"] if isinstance(img, dict)})
        raise ValueError(f"{captions} has no image in split {split!r}; splits present: {', '.join(present)}")
    return FileCaptionSource(
        paths, ids, caps, pairs=pairs, policy=BadDataPolicy(on_bad_image, on_bad_caption, verify),
        name=f"karpathy {Path(captions).name}:{split}", fix=f"check images={os.fspath(images)!r}",
    )


def csv_captions(
    captions: PathLike,
    images: PathLike | None = None,
    *,
    image_column: str = "image",
    caption_column: str = "caption",
    sep: str | None = None,
    pairs: str = "one",
    on_bad_image: str = "error",
    on_bad_caption: str = "error",
    verify: bool = False,
) -> FileCaptionSource:
    """A CSV/TSV file with one (image, caption) pair per row and a folder of images.

    Defaults read the Flickr8k CSV layout (``image,caption``). open_clip's layout is
    ``image_column="filepath", caption_column="title", sep="\\t"``. ``sep`` defaults to a tab for ``.tsv`` files
    and a comma otherwise; quoting follows the CSV standard. Image paths are relative to ``images``
    (default: the CSV's folder; absolute paths are used as they are). Rows of the same image are grouped in
    order of first appearance; ``image_id`` is the image column's value.
    """
    path = require_file(captions, "caption file", "pass the path of the CSV/TSV with image and caption columns")
    if sep is None:
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
    columns, rows = read_table(path, sep)
    for role, column in (("image", image_column), ("caption", caption_column)):
        if column not in columns:
            raise ValueError(
                f"{path} has no {role} column {column!r}; its columns are {columns} (separator {sep!r}); "
                f"pass {role}_column=... or sep=..."
            )
    image_at, caption_at = columns.index(image_column), columns.index(caption_column)
    root = Path(images) if images is not None else path.parent
    by_image: dict[str, list[str]] = {}
    for row in rows:
        by_image.setdefault(row[image_at], []).append(caption_text(row[caption_at]))
    ids = list(by_image)
    return FileCaptionSource(
        [root / i for i in ids], ids, [by_image[i] for i in ids], pairs=pairs,
        policy=BadDataPolicy(on_bad_image, on_bad_caption, verify), name=f"csv {path.name}",
        fix=f"check images={os.fspath(root)!r}",
    )


_END = "\ue000mmvicreg:end-of-file\ue000"  # read_table's sentinel row (a private-use character round it)


def read_table(path: Path, sep: str) -> tuple[list[str], list[list[str]]]:
    """The column names and rows of a delimited text file (standard CSV quoting, ``sep`` between cells).

    Read as ``pandas.read_csv(dtype=str, keep_default_na=False)`` read it before: UTF-8 with a BOM dropped and
    undecodable bytes kept as lone surrogates (``read_text``), blank lines skipped, every cell a string, a row
    shorter than the header padded with empty cells, a repeated column name numbered (``caption.1``), an unnamed
    one called ``Unnamed: <position>``. A row longer than the header, an unterminated quote or an empty file is a
    ValueError that names the line and suggests ``sep=...``.
    """
    if not isinstance(sep, str) or len(sep) != 1:
        raise ValueError(f"sep must be one character, got {sep!r}; pass sep=',' or sep='\\t'")
    unparsable = f"cannot parse {path} as a table with separator {sep!r}"
    # A sentinel last row: a quote never closed swallows it into a cell (csv itself reads on to the end silently).
    reader = csv.reader(io.StringIO(read_text(path) + "\n" + _END + "\n", newline=""), delimiter=sep)
    rows: list[list[str]] = []
    start = 1  # the line the next row starts on
    try:
        for row in reader:
            if row == [_END]:
                break
            if any(_END in cell for cell in row):
                raise ValueError(f"{unparsable} (a quote in the row on line {start} is never closed); fix the quoting "
                                 "or pass sep=...")
            if len(row) > 1 or (row and row[0].strip()):  # a blank line, or one of only spaces, holds no row
                rows.append(row)
            if len(rows) > 1 and len(rows[-1]) > len(rows[0]):
                raise ValueError(f"{unparsable} (line {start} has {len(rows[-1])} fields, the header "
                                 f"{len(rows[0])}); pass sep=... or quote the cells that hold {sep!r}")
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ValueError(f"{unparsable} (line {start}: {exc}); pass sep=... or fix the quoting") from None
    if not rows:
        raise ValueError(f"{unparsable} (the file holds no header row); pass the CSV/TSV with image and caption "
                         "columns")
    columns: list[str] = []
    for position, name in enumerate(rows[0]):
        name = name or f"Unnamed: {position}"
        base, n = name, 0
        while name in columns:
            n += 1
            name = f"{base}.{n}"
        columns.append(name)
    width = len(columns)
    return columns, [row + [""] * (width - len(row)) for row in rows[1:]]

"""Sources over Hugging Face ``datasets``: a dataset saved with ``save_to_disk``, parquet files, a folder that
``datasets`` can read (an ``imagefolder`` with ``metadata.jsonl``/``.csv``, a folder of parquet files), or a
Hub dataset name (which needs network unless it is in the local cache).

The image column may be a ``datasets.Image`` feature (bytes or paths) or a string path relative to the folder
``images``; images are decoded here (not by ``datasets``) so that a corrupt one gets the same clear error and
``on_bad_image`` policy as the file sources.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from mmvicreg.data.sources.base import CaptionSource, ImageSource
from mmvicreg.data.sources.io import PathLike, caption_text
from mmvicreg.data.sources.policy import BadDataPolicy
from mmvicreg.data.sources.stores import HFColumnStore

_SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def load_hf_dataset(
    path: PathLike,
    split: str = "train",
    *,
    data_files: Any = None,
    cache_dir: PathLike | None = None,
):
    """One split of a Hugging Face dataset, as a ``datasets.Dataset``.

    ``path`` is, in the order tried: a ``save_to_disk`` directory (``split`` picks from a DatasetDict);
    a ``.parquet`` file or glob (taken as the split); a directory ``datasets`` can infer (imagefolder with
    metadata, parquet shards); otherwise a builder (``"parquet"``, ``"imagefolder"`` ... with ``data_files``) or a
    Hub name. ``cache_dir`` is where ``datasets`` writes its Arrow cache for the last three.
    """
    import datasets

    text = os.fspath(path)
    local = Path(text)
    if local.is_dir() and any((local / m).is_file() for m in _SAVED_MARKERS):
        loaded = datasets.load_from_disk(text)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"{text} has no split {split!r}; its splits are {sorted(loaded)}; pass another split")
            return loaded[split]
        return loaded
    kwargs: dict[str, Any] = {"cache_dir": os.fspath(cache_dir) if cache_dir is not None else None}
    if data_files is None and text.endswith(".parquet"):
        if not any(c in text for c in "*?[") and not local.is_file():
            raise FileNotFoundError(f"parquet file {text} does not exist; pass path= an existing file or a glob")
        builder, kwargs["data_files"] = "parquet", {split: text}
    else:
        builder = text
        if data_files is not None:
            kwargs["data_files"] = data_files
    is_local = local.exists() or data_files is not None or builder == "parquet"
    try:
        return datasets.load_dataset(builder, split=split, **kwargs)
    except ValueError as exc:
        if "split" in str(exc).lower():
            raise ValueError(f"{text}: {exc}; pass another split") from None
        raise ValueError(f"cannot load the dataset at {text}: {exc}") from None
    except FileNotFoundError as exc:
        if is_local:
            raise FileNotFoundError(f"cannot load the dataset at {text}: {exc}") from None
        raise FileNotFoundError(_not_found(text, exc)) from None
    except Exception as exc:  # the Hub client raises many types (offline, not found, gated)
        if is_local:
            raise
        raise ValueError(_not_found(text, exc)) from None


def _not_found(name: str, exc: Exception) -> str:
    return (f"cannot load Hugging Face dataset {name!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            f"it is not a local directory or file, so it was looked up on the Hub, which needs network and is not "
            f"available offline unless cached; pass path= a save_to_disk directory, parquet files or an imagefolder")


def _column(ds, name: str, role: str, option: str) -> list[Any]:
    if name not in ds.column_names:
        raise ValueError(f"the dataset has no {role} column {name!r}; its columns are {ds.column_names}; "
                         f"pass {option}=...")
    return list(ds.select_columns([name])[name])


def _prepare_image_column(ds, image_column: str):
    """``(the image column alone and undecoded, whether it holds path strings)``."""
    import datasets

    if image_column not in ds.column_names:
        raise ValueError(f"the dataset has no image column {image_column!r}; its columns are {ds.column_names}; "
                         f"pass image_column=...")
    images = ds.select_columns([image_column])
    feature = images.features[image_column]
    if isinstance(feature, datasets.Image):
        return images.cast_column(image_column, datasets.Image(decode=False)), False
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return images, True
    raise ValueError(f"image column {image_column!r} holds {feature}, neither images nor path strings")


def _caption_cells(cell: Any) -> list[str]:
    """Every caption of a cell, empty ones included: ``on_bad_caption`` decides about those."""
    if cell is None or isinstance(cell, str):
        return [caption_text(cell)]
    if isinstance(cell, (list, tuple)):
        return [caption_text(c) for c in cell]
    raise ValueError(f"a caption cell must be a string or a list of strings; got {type(cell).__name__}: {cell!r}")


class HFCaptionSource(CaptionSource):
    """Captioned images from a ``datasets.Dataset`` (its store is an ``HFColumnStore``); see ``hf_captions``."""


def hf_captions(
    path: PathLike,
    split: str = "train",
    *,
    image_column: str = "image",
    caption_column: str | Sequence[str] = "caption",
    images: PathLike | None = None,
    group_by: str | None = "auto",
    data_files: Any = None,
    cache_dir: PathLike | None = None,
    pairs: str = "one",
    on_bad_image: str = "error",
    on_bad_caption: str = "error",
    verify: bool = False,
) -> HFCaptionSource:
    """An image–caption source over a Hugging Face dataset (see ``load_hf_dataset`` for ``path``).

    A caption cell may be one string or a list of strings; ``caption_column`` may also name several columns
    (e.g. ``["caption_0", ..., "caption_4"]``), whose cells are concatenated per row. Rows are grouped into
    images by the column ``group_by``; ``"auto"`` groups by the image column when it holds path strings
    (one row per pair, as in Flickr8k CSVs) and otherwise treats each row as one image. ``image_id`` is the
    group value, or the row number. Path strings in the image column are relative to the folder ``images``.
    """
    ds = load_hf_dataset(path, split, data_files=data_files, cache_dir=cache_dir)
    column, path_strings = _prepare_image_column(ds, image_column)
    columns = [caption_column] if isinstance(caption_column, str) else list(caption_column)
    cells = [_column(ds, c, "caption", "caption_column") for c in columns]
    per_row = [[c for col in row for c in _caption_cells(col)] for row in zip(*cells)]
    if group_by == "auto":
        group_by = image_column if path_strings else None
    keys = _column(ds, group_by, "group", "group_by") if group_by else list(range(len(per_row)))
    first_row: dict[Any, int] = {}
    grouped: dict[Any, list[str]] = {}
    for row, (key, caps) in enumerate(zip(keys, per_row)):
        first_row.setdefault(key, row)
        grouped.setdefault(key, []).extend(caps)
    ids = [k for k in first_row if grouped[k]]  # rows without any caption cannot make a pair
    name = f"hf {os.fspath(path)}:{split}"
    store = HFColumnStore(column, image_column, [first_row[k] for k in ids], images=images,
                          path_strings=path_strings, name=name)
    return HFCaptionSource(
        ids, [grouped[k] for k in ids], store, pairs=pairs, policy=BadDataPolicy(on_bad_image, on_bad_caption, verify),
        name=name, fix="check images= and the image column",
    )


class HFImageSource(ImageSource):
    """Images with optional labels from a ``datasets.Dataset`` (an ``HFColumnStore``); see ``hf_images``."""


def hf_images(
    path: PathLike,
    split: str = "train",
    *,
    image_column: str = "image",
    label_column: str | None = None,
    images: PathLike | None = None,
    data_files: Any = None,
    cache_dir: PathLike | None = None,
    on_bad_image: str = "error",
    verify: bool = False,
) -> HFImageSource:
    """An image-only source over a Hugging Face dataset: samples ``{"image", "label"}``.

    Labels: a ``ClassLabel`` column keeps its ids and names; other values are numbered in sorted order;
    without ``label_column`` every label is ``-1``.
    """
    import datasets

    ds = load_hf_dataset(path, split, data_files=data_files, cache_dir=cache_dir)
    column, path_strings = _prepare_image_column(ds, image_column)
    if label_column is None:
        labels, classes = [-1] * len(ds), []
    else:
        values = _column(ds, label_column, "label", "label_column")
        feature = ds.features[label_column]
        if isinstance(feature, datasets.ClassLabel):
            labels, classes = [int(v) for v in values], list(feature.names)
        else:
            names = sorted(set(values))
            index = {v: k for k, v in enumerate(names)}
            labels, classes = [index[v] for v in values], [str(v) for v in names]
    name = f"hf {os.fspath(path)}:{split}"
    store = HFColumnStore(column, image_column, range(len(labels)), images=images, path_strings=path_strings,
                          name=name)
    return HFImageSource(labels, classes, store, policy=BadDataPolicy(on_bad_image, verify=verify), name=name,
                         fix="check images= and the image column")

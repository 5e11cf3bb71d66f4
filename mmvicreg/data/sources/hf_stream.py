"""``format: hf`` with ``streaming: true``: parquet files of a Hugging Face dataset, streamed (never indexed).

``HFStreamSource`` is a streamed source as :class:`~mmvicreg.data.streaming.StreamDataset` wants one (see
:mod:`.stream`); its options mean what they mean for the map-style ``hf`` format (:mod:`.hf`).

Data files, in the order tried: ``data_files`` (a file, a glob, a list of them, or ``{split: files}``; relative
ones from the folder ``path`` when it is one, else from the working directory); a folder ``path`` (its
``*.parquet`` files, searched recursively; when file or folder names carry split names, as the Hub's
``data/train-00000-of-00004.parquet`` do, those of ``hf_split or split``); a ``.parquet`` file or glob ``path``;
else ``path`` is a Hub dataset id, whose parquet files are listed and read over the network (an offline run,
``HF_HUB_OFFLINE=1``, refuses it in one line: streamed files must then be local).

Each file is one shard of the epoch plan, of as many samples as its parquet footer counts rows (only parquet
carries that count: other inputs raise one line saying so). Rows are read by ``datasets.load_dataset("parquet",
data_files=[file], split="train", streaming=True, columns=...)``, the image column cast to
``datasets.Image(decode=False)``, ``.skip(first).take(end - first)``; images are decoded in ``decode``, so
skipped rows never are, and bad rows follow ``on_bad_image`` / ``on_bad_caption`` with the reasons of webdataset
shards (``"no image"``, ``"corrupt image"``, ``"bad label"``, ``"no caption"``, ``"empty caption"``,
``"truncated shard"``, ``"unreadable shard"``). A sample's key is ``"<file index>:<row>"``.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from typing import Any, Iterator, Mapping, Sequence

from mmvicreg.data.sources.io import BadImageError, ImageTooLargeError, PathLike, caption_problem, caption_text, to_rgb
from mmvicreg.data.sources.policy import BadDataPolicy
from mmvicreg.data.sources.shards import BadDataCounts
from mmvicreg.data.sources.stream import MISSING, missing_sample, reject_missing

logger = logging.getLogger("mmvicreg.data")

_SPLIT_WORDS = ({"train", "training"}, {"validation", "valid", "val", "dev"}, {"test", "testing", "eval", "evaluation"})
_CAPTION_PROBLEM = {"empty": "empty caption", "not UTF-8": "caption not UTF-8"}
_TRUE = ("1", "on", "yes", "true")
_READ_BATCH = 64  # rows a read hands on at a time (a batch of the datasets stream, split into rows here)
_WARNED: set[str] = set()  # reasons this process has logged once (later ones are only counted)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def _offline() -> bool:
    """Whether the Hugging Face Hub is switched off (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``)."""
    if any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _words(relative: str) -> set[str]:
    return set(re.split(r"[^a-z0-9]+", relative.lower()))


def pick_split(relative: Sequence[str], split: str, where: str) -> list[int]:
    """The indices of the files (paths relative to the dataset's root) of ``split``: those whose names carry
    the split (or its synonyms: val/valid/dev, testing/eval, training); every file when none carries any."""
    wanted = next((group for group in _SPLIT_WORDS if split.lower() in group), {split.lower()})
    known = set().union(*_SPLIT_WORDS) | wanted
    tagged = [_words(r) & known for r in relative]
    if not any(tagged):
        return list(range(len(relative)))
    chosen = [i for i, tags in enumerate(tagged) if tags & wanted]
    if not chosen:
        found = sorted({t for tags in tagged for t in tags})
        raise ValueError(f"{where} has no parquet files of split {split!r} (its file names carry {found}); "
                         f"pass hf_split= one of those, or data_files=")
    return chosen


def _not_parquet(where: str, others: Sequence[str]) -> ValueError:
    kinds = sorted({os.path.splitext(o)[1] or os.path.basename(o) for o in others})[:5]
    found = f" (it holds {', '.join(kinds)})" if kinds else ""
    return ValueError(f"{where} holds no parquet files{found}; streaming: true reads parquet files, whose row counts "
                      f"give the epoch plan: write them with Dataset.to_parquet(...), or set streaming: false")


def _folder_files(root: str, split: str) -> list[str]:
    """The parquet files under the folder ``root`` (hidden and ``_``-prefixed entries left out) of ``split``."""
    found, others = [], []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for name in sorted(files):
            if not name.startswith((".", "_")):
                (found if name.endswith(".parquet") else others).append(os.path.join(folder, name))
    if not found:
        raise _not_parquet(f"folder {root}", others)
    return [found[i] for i in pick_split([os.path.relpath(f, root) for f in found], split, f"folder {root}")]


def _expand(patterns: Any, root: str | None, what: str) -> list[str]:
    items = [patterns] if isinstance(patterns, (str, os.PathLike)) else list(patterns)
    files: list[str] = []
    for item in items:
        text = os.path.expanduser(os.fspath(item))
        full = text if root is None or os.path.isabs(text) else os.path.join(root, text)
        matched = sorted(glob.glob(full, recursive=True)) if glob.has_magic(full) else [full]
        matched = [m for m in matched if os.path.isfile(m)]
        if not matched:
            raise ValueError(f"{what} {text!r} matches no file{f' under {root}' if root else ''}; "
                             f"pass existing parquet files or globs")
        files += matched
    return files


def local_files(path: PathLike | None, data_files: Any, split: str) -> list[str] | None:
    """The local data files ``path`` / ``data_files`` name (module docstring), or None when ``path`` looks
    like a Hub dataset id. Raises one ``ValueError`` line for a missing path or a non-parquet input."""
    text = os.path.expanduser(os.fspath(path)) if path is not None else ""
    if not text and data_files is None:
        raise ValueError("format 'hf' with streaming: true needs path= (a folder of parquet files, a .parquet file "
                         "or glob, a Hub dataset id) or data_files=")
    root = text if text and os.path.isdir(text) else None
    if data_files is not None:
        chosen = data_files
        if isinstance(data_files, Mapping):
            if split not in data_files:
                raise ValueError(f"data_files has no split {split!r}; its splits are {sorted(data_files)}; "
                                 f"pass hf_split= one of them")
            chosen = data_files[split]
        files = _expand(chosen, root, "data_files entry")
    elif root is not None:
        files = _folder_files(root, split)
    elif glob.has_magic(text) or os.path.isfile(text) or text.endswith(".parquet"):
        files = _expand(text, None, "path")
    elif text.startswith(("/", ".", "~")) or text.count("/") > 1 or os.sep in text.replace("/", ""):
        raise ValueError(f"path {text!r} does not exist; pass a folder of parquet files, a .parquet file or glob, "
                         f"or a Hub dataset id")
    else:
        return None
    others = [f for f in files if not f.endswith(".parquet")]
    if others:
        raise ValueError(f"{others[0]} is not a parquet file ({len(others)} of {len(files)} data files are not); "
                         f"streaming: true reads parquet files, whose row counts give the epoch plan: write them "
                         f"with Dataset.to_parquet(...), or set streaming: false")
    return [os.path.abspath(f) for f in files]


def hub_files(name: str, split: str) -> list[str]:
    """``hf://`` URLs of the parquet files of ``split`` of the Hub dataset ``name`` (network)."""
    fix = (f"streamed files must be local: pass path= a folder of parquet files (e.g. a snapshot_download of "
           f"{name!r}) or data_files=")
    if _offline():
        raise ValueError(f"Hugging Face dataset {name!r} is not a local folder or file, and the Hub is off "
                         f"(HF_HUB_OFFLINE); {fix}")
    try:
        from huggingface_hub import HfFileSystem

        found = sorted(HfFileSystem().glob(f"datasets/{name}/**/*.parquet"))
    except Exception as exc:  # the Hub client raises many types (offline, not found, gated)
        raise ValueError(f"cannot list Hugging Face dataset {name!r} on the Hub ({_one_line(exc)}); {fix}") from None
    if not found:
        raise _not_parquet(f"Hub dataset {name!r}", [])
    prefix = f"datasets/{name}/"
    chosen = pick_split([f[len(prefix):] for f in found], split, f"Hub dataset {name!r}")
    return [f"hf://{found[i]}" for i in chosen]


def _footer(file: str) -> Any:
    """The ``pyarrow.parquet.FileMetaData`` of ``file`` (local or ``hf://``): only its footer is read."""
    import pyarrow.parquet as pq

    try:
        if file.startswith("hf://"):
            import fsspec

            with fsspec.open(file, "rb") as f:
                return pq.ParquetFile(f).metadata
        return pq.ParquetFile(file).metadata
    except Exception as exc:  # pyarrow.ArrowInvalid, OSError
        raise ValueError(f"{file} is not a readable parquet file ({_one_line(exc)}); streaming: true reads "
                         f"parquet files") from None


def _reject(kind: str, reason: str, detail: str, where: str, policy: BadDataPolicy, counts: BadDataCounts) -> None:
    """Raise one line under an ``error`` policy, else count the bad sample (logging the first of each reason)."""
    option = "on_bad_image" if kind == "image" else "on_bad_caption"
    if (policy.on_bad_image if kind == "image" else policy.on_bad_caption) == "error":
        raise (BadImageError if kind == "image" else ValueError)(
            f"{where}: {reason} ({detail}); fix the data file or set {option}: skip to leave such rows out")
    counts.add(reason)
    if reason not in _WARNED:
        _WARNED.add(reason)
        logger.warning("skipped %s: %s (%s); later ones are counted, not logged", where, reason, detail)


class HFStreamSource:
    """Parquet files of a Hugging Face dataset as a streamed training source (module docstring).

    A :class:`~mmvicreg.data.protocols.StreamedSource`. Attributes: ``files`` (one per shard), ``sizes`` (rows per
    file), ``shuffle_buffer``, ``policy``, ``counts`` (bad samples the training loader met), ``classes`` (image-only
    with ``label_column``), ``name``.
    """

    resample = False  # each file once per epoch, in the epoch plan's order
    unsized = ""  # parquet footers always give the row counts

    def __init__(self, split: str, path: PathLike | None, *, image_column: str = "image",
                 caption_column: str | Sequence[str] | None = "caption", label_column: str | None = None,
                 images: PathLike | None = None, data_files: Any = None, hf_split: str | None = None,
                 shuffle_buffer: int = 1000, on_bad_image: str = "error", on_bad_caption: str = "error") -> None:
        if not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be a number of samples >= 0, got {shuffle_buffer!r}")
        if caption_column is not None and label_column is not None:
            raise ValueError("format 'hf': label_column is for image-only sources; set caption_column=None to use it")
        self.split, self.shuffle_buffer = split, shuffle_buffer
        self.image_column, self.label_column = image_column, label_column
        self.caption_columns = None if caption_column is None else \
            [caption_column] if isinstance(caption_column, str) else list(caption_column)
        self.columns = [image_column, *(self.caption_columns or []), *([label_column] if label_column else [])]
        self.images = os.fspath(images) if images is not None else None
        self.policy = BadDataPolicy(on_bad_image, on_bad_caption)
        target = hf_split or split
        files = local_files(path, data_files, target)
        self.files = files if files is not None else hub_files(os.fspath(path or ""), target)
        footers = [_footer(f) for f in self.files]
        self.sizes = [int(m.num_rows) for m in footers]
        self.image_feature = False  # set by _check_columns, before it reads a label column
        schemas = [m.schema.to_arrow_schema() for m in footers]
        self.image_feature, self.classes, self._label_ids = self._check_columns(schemas)
        self.counts = BadDataCounts()
        self.name = f"hf-stream:{os.fspath(path) if path is not None else 'data_files'} ({len(self.files)} files)"

    @property
    def num_shards(self) -> int:
        return len(self.files)

    def _check_columns(self, schemas: Sequence[Any]) -> tuple[bool, list[str], dict[Any, int] | None]:
        """Every file has the columns; ``(whether the image column is a datasets Image, class names, label
        value -> id or None)`` from the first file's schema."""
        import datasets

        wanted = [(self.image_column, "image", "image_column")]
        wanted += [(c, "caption", "caption_column") for c in self.caption_columns or []]
        wanted += [(self.label_column, "label", "label_column")] if self.label_column else []
        for file, schema in zip(self.files, schemas):
            for column, role, option in wanted:
                if column not in schema.names:
                    raise ValueError(f"{file} has no {role} column {column!r}; its columns are {schema.names}; "
                                     f"pass {option}=...")
        features = datasets.Features.from_arrow_schema(schemas[0])
        image = features[self.image_column]
        is_image = isinstance(image, datasets.Image)
        plain = isinstance(image, datasets.Value) and image.dtype in ("string", "large_string", "binary",
                                                                        "large_binary")
        if not (is_image or plain or isinstance(image, dict) and "bytes" in image):
            raise ValueError(f"image column {self.image_column!r} holds {image}, neither images, bytes nor paths")
        if self.label_column is None:
            return is_image, [], None
        label = features[self.label_column]
        if isinstance(label, datasets.ClassLabel):
            return is_image, list(label.names), None
        values = sorted({v for v in (r[self.label_column] for r in self.rows(self.files, [self.label_column])) if v is not None})
        return is_image, [str(v) for v in values], {v: k for k, v in enumerate(values)}

    def __len__(self) -> int:
        return sum(self.sizes)

    def new_counts(self) -> BadDataCounts:
        return BadDataCounts()

    def stream(self, files: Sequence[str], columns: Sequence[str]) -> Any:
        """A streamed ``datasets.IterableDataset`` of ``columns`` of ``files`` (in order), images undecoded."""
        import datasets

        ds = datasets.load_dataset("parquet", data_files=list(files), split="train", streaming=True,
                                   columns=list(columns))
        if self.image_feature and self.image_column in columns:
            ds = ds.cast_column(self.image_column, datasets.Image(decode=False))
        return ds

    def rows(self, files: Sequence[str], columns: Sequence[str], first: int = 0,
             count: int | None = None) -> Iterator[dict[str, Any]]:
        """Rows ``first..first+count-1`` of the stream of ``files`` as ``{column: cell}`` dicts.

        Read through ``IterableDataset.iter(batch_size)``, not ``iter(ds)``: inside a DataLoader worker the
        latter hands each worker only some of the files, while the epoch plan has already chosen what it reads.
        """
        ds = self.stream(files, columns).skip(first) if first else self.stream(files, columns)
        if count is not None:
            ds = ds.take(count)
        for batch in ds.iter(batch_size=_READ_BATCH):
            names = list(batch)
            for values in zip(*(batch[n] for n in names)):
                yield dict(zip(names, values))

    def raw_samples(self, shard: int, first: int, end: int) -> Iterator[dict[str, Any]]:
        """Rows ``first..end-1`` of file ``shard``, undecoded (``{column: cell, "__key__", "__url__",
        "__row__"}``); a file that ends early or fails to read pads with ``MISSING`` samples."""
        file, got, problem = self.files[shard], 0, "truncated shard"
        detail = f"{file} holds fewer rows than its parquet metadata says ({self.sizes[shard]})"
        if end > first:
            try:
                for row in self.rows([file], self.columns, first, end - first):
                    row.update({"__key__": f"{shard}:{first + got}", "__url__": file, "__row__": first + got})
                    got += 1
                    yield row
            except Exception as exc:  # a file deleted or damaged since the plan was made
                problem, detail = "unreadable shard", f"cannot read {file} ({_one_line(exc)})"
                logger.warning("%s: %s", problem, detail)
        for _ in range(end - first - got):
            yield missing_sample(file, problem, detail)

    def decode(self, raw: dict[str, Any], counts: BadDataCounts) -> dict[str, Any] | None:
        """``{"image": RGB PIL, "caption": str, "captions": [str], "key"}`` or ``{"image", "label": int, "key"}``;
        None for a bad row (counted in ``counts``) under a skip policy; one-line error under ``error``."""
        if MISSING in raw:
            reject_missing(raw, self.policy, counts)
            return None
        key = raw["__key__"]
        where = f"row {raw['__row__']} of {raw['__url__']}"
        out: dict[str, Any] = {"key": key}
        if self.caption_columns is not None:
            captions = self._captions(raw, where, counts)
            if captions is None:
                return None
            out["caption"], out["captions"] = captions[0], captions
        else:
            label = self._label(raw, where, counts)
            if label is None:
                return None
            out["label"] = label
        cell = raw.get(self.image_column)
        if cell is None or isinstance(cell, dict) and cell.get("bytes") is None and not cell.get("path"):
            return _reject("image", "no image", f"column {self.image_column!r} is empty", where, self.policy, counts)
        try:
            out["image"] = to_rgb(cell, self.images, what=f"its {self.image_column} image")
        except FileNotFoundError as exc:
            return _reject("image", "no image", str(exc).split(";")[0], where, self.policy, counts)
        except Exception as exc:  # BadImageError (ImageTooLargeError: over PIL.Image.MAX_IMAGE_PIXELS) and the like
            detail = str(exc).split(";")[0] if isinstance(exc, BadImageError) else _one_line(exc)
            reason = ImageTooLargeError.reason if isinstance(exc, ImageTooLargeError) else "corrupt image"
            return _reject("image", reason, detail, where, self.policy, counts)
        return out

    def _cells(self, raw: Mapping[str, Any]) -> list[Any]:
        cells: list[Any] = []
        for column in self.caption_columns or []:
            cell = raw.get(column)
            cells += list(cell) if isinstance(cell, (list, tuple)) else [cell]
        return cells

    def _captions(self, raw: Mapping[str, Any], where: str, counts: BadDataCounts) -> list[str] | None:
        """The usable captions of a row, in order (the first is the training caption), or None (rejected)."""
        cells = [c for c in self._cells(raw) if c is not None]
        if not cells:
            return _reject("caption", "no caption", f"column {'/'.join(self.caption_columns or [])} is empty",
                           where, self.policy, counts)
        texts = [caption_text(c) for c in cells]
        usable = [t for t in texts if caption_problem(t) is None]
        if not usable:
            problem = caption_problem(next((t for t in texts if t), ""))
            return _reject("caption", _CAPTION_PROBLEM[problem or "empty"], ascii(texts[0][:40]), where, self.policy,
                           counts)
        return usable

    def _label(self, raw: Mapping[str, Any], where: str, counts: BadDataCounts) -> int | None:
        if self.label_column is None:
            return -1
        value = raw.get(self.label_column)
        if value is None:
            return -1
        if self._label_ids is not None:
            if value in self._label_ids:
                return self._label_ids[value]
        elif isinstance(value, int) and not isinstance(value, bool):
            return int(value)
        return _reject("image", "bad label", f"label {value!r} is not one of the dataset's classes", where,
                       self.policy, counts)

    def iter_captions(self) -> Iterator[str]:
        """Every usable caption of the files, in file order (only the caption columns are read)."""
        if self.caption_columns is None:
            return
        for row in self.rows(self.files, self.caption_columns):
            for cell in self._cells(row):
                text = caption_text(cell)
                if caption_problem(text) is None:
                    yield text

    def data_report(self) -> dict[str, Any]:
        return self.counts.report(self.name, len(self))

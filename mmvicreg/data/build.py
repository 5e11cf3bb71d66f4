"""``build_source(section)``: a source from a config's ``data.*`` section, handed over whole.

A section names its ``format``, optionally its ``split`` (which wins over the ``split`` argument) and the
format's options. Any string option may contain ``{split}``, filled with the split, so one section serves every
split: ``build_source({"format": "coco", "captions": "coco/annotations/captions_{split}2017.json",
"images": "coco/{split}2017"}, "val")``.

Every caption source names its caption file ``captions`` and its image folder ``images``. Formats and their
options (the functions they call document each option):

=========  ===========================================================================================
coco       ``captions``, ``images`` (or ``root`` + ``year``: ``root/annotations/captions_<split><year>.json``
           and ``root/<split><year>``), ``pairs``, ``on_bad_image``, ``on_bad_caption``, ``verify``
karpathy   ``captions``, ``images``, ``include_restval``, ``pairs``, ``on_bad_image``, ``on_bad_caption``,
           ``verify``                                              (splits: train, restval, val, test)
csv        ``captions``, ``images`` (default: the file's folder), ``image_column``, ``caption_column``, ``sep``,
           ``pairs``, ``on_bad_image``, ``on_bad_caption``, ``verify``
hf         ``path``, ``images`` (folder of relative image paths), ``image_column``, ``caption_column``,
           ``group_by``, ``data_files``, ``cache_dir``, ``hf_split`` (default: the split), ...;
           ``caption_column=None`` makes it image-only with ``label_column``; ``streaming: true`` streams
           parquet files (``shuffle_buffer``; :mod:`.sources.hf_stream`)
folder     ``images`` (class subfolders), ``on_bad_image``, ``verify``
digits     ``size``, ``test_fraction``, ``seed``, ``labels`` (false: withheld)   (splits: train, test)
(image)    ``classes`` (folder, digits, image-only hf): keep those classes only, relabelled 0..k-1 in that order
shapes     ``num_images``, ``size``, ``seed``, ``pairs``, ``cache_dir``  (splits: train, val, test)
scenes     the same options as shapes; harder scenes (:mod:`.sources.scenes`)  (splits: train, val, test)
shape_objects ``num_images``, ``size``, ``seed``: shapes' 48 objects as labelled images, named for zero-shot
           (:mod:`.sources.shape_objects`)  (splits: train, val, test)
webdataset ``shards`` (brace pattern, list, .txt file or folder; local files or URLs), ``shuffle_buffer``,
           ``on_bad_image``, ``on_bad_caption``, ``resample``, ``streaming`` (default: the train split streams,
           :mod:`mmvicreg.data.streaming`; other splits are indexed for evaluation, :mod:`.shard_index`),
           ``allow_pipe`` (default false: a ``pipe:`` shard runs a shell command, so it is read only when
           written in ``shards`` itself with ``allow_pipe: true``; never from a .txt list or a folder)
=========  ===========================================================================================
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from mmvicreg.choices import DATA_FORMATS, did_you_mean
from mmvicreg.data.sources import (
    CaptionSource,
    DigitsSource,
    FolderImages,
    ImageSource,
    ScenesSource,
    ShapeObjectsSource,
    ShapesSource,
    coco_captions,
    csv_captions,
    hf_captions,
    hf_images,
    karpathy_captions,
)


def _coco(split: str, root: str | None = None, year: int = 2017, captions: str | None = None,
          images: str | None = None, **options: Any) -> CaptionSource:
    if root is not None:
        captions = captions or str(Path(root) / "annotations" / f"captions_{split}{year}.json")
        images = images or str(Path(root) / f"{split}{year}")
    if captions is None or images is None:
        raise ValueError("format 'coco' needs captions= and images=, or root= (the COCO folder) and year=")
    return coco_captions(captions, images, **options)


def _karpathy(split: str, captions: str, images: str, **options: Any) -> CaptionSource:
    return karpathy_captions(captions, images, split, **options)


def _csv(split: str, captions: str, **options: Any) -> CaptionSource:
    return csv_captions(captions, **options)


def _with_classes(source: ImageSource, classes: Sequence[str] | None) -> ImageSource:
    """``source`` restricted to ``classes`` (names, relabelled 0..k-1 in that order), or as it is for None."""
    if classes is not None:
        source.keep_classes([str(c) for c in classes])
    return source


def _hf(split: str, path: str, hf_split: str | None = None, caption_column: Any = "caption",
        label_column: str | None = None, group_by: str | None = "auto", pairs: str = "one",
        streaming: bool = False, shuffle_buffer: int | None = None, classes: Sequence[str] | None = None,
        **options: Any) -> Any:
    if classes is not None and (streaming or caption_column is not None):
        raise ValueError("format 'hf': classes selects classes of a map-style image-only source; set "
                         "caption_column=None and label_column, without streaming")
    if streaming:
        if group_by != "auto" or pairs != "one":
            raise ValueError("format 'hf' with streaming: true reads one sample per row: drop group_by and pairs")
        return _hf_stream(split, path, hf_split, caption_column, label_column, shuffle_buffer, options)
    if shuffle_buffer is not None:
        raise ValueError("format 'hf': shuffle_buffer applies to streamed data only; set streaming: true or drop it")
    if caption_column is None:
        options.pop("on_bad_caption", None)  # an image-only source has no captions to judge
        return _with_classes(hf_images(path, hf_split or split, label_column=label_column, **options), classes)
    if label_column is not None:
        raise ValueError("format 'hf': label_column is for image-only sources; set caption_column=None to use it")
    return hf_captions(path, hf_split or split, caption_column=caption_column, group_by=group_by, pairs=pairs,
                       **options)


def _hf_stream(split: str, path: str, hf_split: str | None, caption_column: Any, label_column: str | None,
               shuffle_buffer: int | None, options: dict[str, Any]) -> Any:
    from mmvicreg.data.sources.hf_stream import HFStreamSource

    taken = ("image_column", "images", "data_files", "on_bad_image", "on_bad_caption")
    other = sorted(set(options) - set(taken))
    if other:
        raise ValueError(f"format 'hf' with streaming: true does not take {other} (a streamed dataset is read "
                         f"in file order through the epoch plan); it takes {sorted(taken)} and shuffle_buffer")
    return HFStreamSource(split, path, caption_column=caption_column, label_column=label_column, hf_split=hf_split,
                          shuffle_buffer=1000 if shuffle_buffer is None else shuffle_buffer, **options)


def _folder(split: str, images: str, classes: Sequence[str] | None = None, **options: Any) -> ImageSource:
    return _with_classes(FolderImages(images, **options), classes)


def _digits(split: str, classes: Sequence[str] | None = None, **options: Any) -> ImageSource:
    return _with_classes(DigitsSource(split, **options), classes)


def _shapes(split: str, **options: Any) -> CaptionSource:
    return ShapesSource(split, **options)


def _scenes(split: str, **options: Any) -> CaptionSource:
    return ScenesSource(split, **options)


def _shape_objects(split: str, **options: Any) -> ImageSource:
    return ShapeObjectsSource(split, **options)


def _webdataset(split: str, shards: Any, shuffle_buffer: int = 1000, on_bad_image: str = "error",
                on_bad_caption: str = "error", streaming: bool | None = None, resample: bool = False,
                allow_pipe: bool = False) -> Any:
    # webdataset is imported only by runs that read shards
    from mmvicreg.data.sources.shard_index import indexed_shards
    from mmvicreg.data.sources.shard_list import expand_shards
    from mmvicreg.data.sources.stream import ShardSource

    section = "train" if split == "train" else "eval"
    if not isinstance(allow_pipe, bool):
        raise ValueError(f"data.{section}.allow_pipe must be true or false, got {allow_pipe!r}")
    switch = f"data.{section}.allow_pipe: true in the config itself"
    if streaming if streaming is not None else split == "train":
        return ShardSource(split, shards, shuffle_buffer, on_bad_image, on_bad_caption, resample, allow_pipe, switch)
    urls = expand_shards(shards, allow_pipe, switch)
    return indexed_shards(urls, f"webdataset:{split} ({len(urls)} shards)", on_bad_image, on_bad_caption)


_BUILDERS: dict[str, tuple[Callable[..., Any], tuple[Callable[..., Any], ...]]] = {
    # format: (builder, the functions whose keyword options it also accepts)
    "coco": (_coco, (coco_captions,)),
    "karpathy": (_karpathy, (karpathy_captions,)),
    "csv": (_csv, (csv_captions,)),
    "hf": (_hf, (hf_captions, hf_images)),
    "folder": (_folder, (FolderImages,)),
    "digits": (_digits, (DigitsSource,)),
    "shapes": (_shapes, (ShapesSource,)),
    "scenes": (_scenes, (ScenesSource,)),
    "shape_objects": (_shape_objects, (ShapeObjectsSource,)),
    "webdataset": (_webdataset, ()),
}
FORMATS = DATA_FORMATS
if tuple(_BUILDERS) != DATA_FORMATS:  # the registry and the allowed-value list are one list
    raise RuntimeError(f"data builders {tuple(_BUILDERS)} do not match mmvicreg.choices.DATA_FORMATS {DATA_FORMATS}")


def _accepted(fns: tuple[Callable[..., Any], ...]) -> set[str]:
    names: set[str] = set()
    for fn in fns:
        for p in inspect.signature(fn).parameters.values():
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in ("self", "split"):
                names.add(p.name)
    return names


def format_signature(format: str) -> dict[str, Any]:
    """``{option: default}`` of ``format`` (``...`` for a required option): the builder's own defaults first, then
    those of the functions it hands its options to (``docs/CONFIG.md`` shows them)."""
    builder, targets = _BUILDERS[format]
    out: dict[str, Any] = {}
    for fn in (builder, *targets):
        for p in inspect.signature(fn).parameters.values():
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in ("self", "split"):
                out.setdefault(p.name, ... if p.default is p.empty else p.default)
    return out


def format_options(format: str) -> set[str] | None:
    """The option names ``format`` accepts (``split`` included), or None for an unknown format."""
    if format not in _BUILDERS:
        return None
    builder, targets = _BUILDERS[format]
    return _accepted((builder, *targets)) | {"split"}


def build_source(section: Mapping[str, Any], split: str = "train") -> CaptionSource | ImageSource:
    """The source a ``data.*`` section describes: ``{"format": ..., "split"?: ..., **options}``.

    The section's own ``split`` wins over ``split``; see the module docstring for each format's options.
    Raises ValueError for an unknown format, an option the format does not take, or a missing required one.
    """
    options = dict(section)
    format = options.pop("format", None)
    split = options.pop("split", None) or split
    if format not in _BUILDERS:
        hint = did_you_mean(format, DATA_FORMATS) if isinstance(format, str) else ""
        what = "a data section needs a format" if format is None else f"unknown data format {format!r}{hint}"
        raise ValueError(f"{what}; known formats: {', '.join(DATA_FORMATS)}")
    accepted = format_options(format) - {"split"}  # type: ignore[operator]
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"format {format!r} does not take option(s) {unknown}; it takes {sorted(accepted)}")
    builder = _BUILDERS[format][0]
    needed = [p.name for p in list(inspect.signature(builder).parameters.values())[1:]
              if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in options]
    if needed:
        raise ValueError(
            f"format {format!r} needs the option(s) {', '.join(needed)} (in a config: data.train.{needed[0]})"
        )
    filled = {k: v.format(split=split) if isinstance(v, str) and "{split}" in v else v for k, v in options.items()}
    return builder(split, **filled)

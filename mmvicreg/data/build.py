"""``build_source(format, split, **options)``: a source from a config entry.

Any string option may contain ``{split}``, filled with the split, so one config serves every split:
``build_source("coco", "val", annotations="coco/annotations/captions_{split}2017.json",
image_root="coco/{split}2017")``.

Formats and their options (the functions they call document each option):

=========  ===========================================================================================
coco       ``annotations``, ``image_root`` (or ``root`` + ``year``: ``root/annotations/captions_<split><year>.json``
           and ``root/<split><year>``), ``pairs``, ``on_bad_image``, ``on_bad_caption``, ``verify``
karpathy   ``annotations``, ``image_root``, ``include_restval``, ``pairs``, ``on_bad_image``, ``on_bad_caption``,
           ``verify``
csv        ``path``, ``image_root``, ``image_column``, ``caption_column``, ``sep``, ``pairs``, ...
hf         ``path``, ``image_column``, ``caption_column``, ``image_root``, ``group_by``, ``data_files``,
           ``cache_dir``, ``hf_split`` (default: the split), ...; ``caption_column=None`` makes it image-only
           with ``label_column``
folder     ``root`` (class subfolders), ``on_bad_image``, ``verify``
digits     ``size``, ``test_fraction``, ``seed``                      (splits: train, test)
shapes     ``num_images``, ``size``, ``seed``, ``pairs``, ``cache_dir``  (splits: train, val, test)
=========  ===========================================================================================
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from mmvicreg.data.base import CaptionSource, ImageSource
from mmvicreg.data.captions import coco_captions, csv_captions, karpathy_captions
from mmvicreg.data.digits import DigitsSource
from mmvicreg.data.hf import hf_captions, hf_images
from mmvicreg.data.images import FolderImages
from mmvicreg.data.shapes import ShapesSource


def _coco(split: str, root: str | None = None, year: int = 2017, annotations: str | None = None,
          image_root: str | None = None, **options: Any) -> CaptionSource:
    if root is not None:
        annotations = annotations or str(Path(root) / "annotations" / f"captions_{split}{year}.json")
        image_root = image_root or str(Path(root) / f"{split}{year}")
    if annotations is None or image_root is None:
        raise ValueError("format 'coco' needs annotations= and image_root=, or root= (the COCO folder) and year=")
    return coco_captions(annotations, image_root, **options)


def _karpathy(split: str, annotations: str, image_root: str, **options: Any) -> CaptionSource:
    return karpathy_captions(annotations, image_root, split, **options)


def _csv(split: str, path: str, **options: Any) -> CaptionSource:
    return csv_captions(path, **options)


def _hf(split: str, path: str, hf_split: str | None = None, caption_column: Any = "caption",
        label_column: str | None = None, group_by: str | None = "auto", pairs: str = "one",
        **options: Any) -> CaptionSource | ImageSource:
    if caption_column is None:
        options.pop("on_bad_caption", None)  # an image-only source has no captions to judge
        return hf_images(path, hf_split or split, label_column=label_column, **options)
    if label_column is not None:
        raise ValueError("format 'hf': label_column is for image-only sources; set caption_column=None to use it")
    return hf_captions(path, hf_split or split, caption_column=caption_column, group_by=group_by, pairs=pairs,
                       **options)


def _folder(split: str, root: str, **options: Any) -> ImageSource:
    return FolderImages(root, **options)


def _digits(split: str, **options: Any) -> ImageSource:
    return DigitsSource(split, **options)


def _shapes(split: str, **options: Any) -> CaptionSource:
    return ShapesSource(split, **options)


_BUILDERS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    # format: (builder, the function whose keyword options it also accepts)
    "coco": (_coco, coco_captions),
    "karpathy": (_karpathy, karpathy_captions),
    "csv": (_csv, csv_captions),
    "hf": (_hf, hf_captions),
    "folder": (_folder, FolderImages),
    "digits": (_digits, DigitsSource),
    "shapes": (_shapes, ShapesSource),
}
FORMATS = tuple(_BUILDERS)


def _accepted(fns: tuple[Callable[..., Any], ...]) -> set[str]:
    names: set[str] = set()
    for fn in fns:
        for p in inspect.signature(fn).parameters.values():
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in ("self", "split"):
                names.add(p.name)
    return names


def format_options(format: str) -> set[str] | None:
    """The option names ``format`` accepts (``split`` included), or None for an unknown format."""
    if format not in _BUILDERS:
        return None
    builder, target = _BUILDERS[format]
    return _accepted((builder, target) if format != "hf" else (builder, hf_captions, hf_images)) | {"split"}


def build_source(format: str, split: str, **options: Any) -> CaptionSource | ImageSource:
    """The source ``format`` for ``split``; see the module docstring for each format's options."""
    accepted = format_options(format)
    if accepted is None:
        raise ValueError(f"unknown data format {format!r}; known formats: {', '.join(FORMATS)}")
    accepted.discard("split")
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

"""Writing any source of this library as webdataset shards (the reading side is :mod:`.shards`).

``write_shards(source, out_dir, samples_per_shard, per)`` writes ``out_dir/00000.tar, 00001.tar, ...``, then
``sizes.json`` (``{"00000.tar": samples}``, open_clip's convention) and, last, ``shards.txt`` (one shard name a
line, so it only ever lists a complete set). Each shard is written under a temporary name and renamed when
complete: a crash never leaves a half-written shard under a shard's name. ``mmvicreg shards`` is its command.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

from PIL import Image
from webdataset import TarWriter

from mmvicreg.choices import SHARD_LAYOUTS, check_choice
from mmvicreg.data.sources.base import CaptionSource, ImageSource
from mmvicreg.data.sources.io import BadImageError
from mmvicreg.data.sources.shards import LIST_FILE, SIZES_FILE
from mmvicreg.data.sources.stores import HFColumnStore, ImageStore
from mmvicreg.files import atomic_write, atomic_write_json, atomic_write_text

logger = logging.getLogger("mmvicreg.data")

PNG_MAX_PIXELS = 256 * 256  # images without a file: lossless PNG up to this size (synthetic data), JPEG 95 above
_FILE_MEMBER = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}
_PIL_MEMBER = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
_OURS = re.compile(r"^\d{5,}\.tar$")  # the shard names write_shards gives


class WrittenShards(list):
    """The shard files written (a ``list[Path]``), with the ``samples``, ``images`` and ``skipped`` images."""

    def __init__(self, paths: Sequence[Path] = (), samples: int = 0, images: int = 0, skipped: int = 0) -> None:
        super().__init__(paths)
        self.samples, self.images, self.skipped = samples, images, skipped


def check_out_dir(out_dir: str | os.PathLike, samples_per_shard: int = 1000, per: str = "pair",
                  overwrite: bool = False) -> Path:
    """``out_dir`` as a Path once ``write_shards``' arguments are valid, else one ValueError/FileExistsError
    line (a folder that already holds ``.tar`` files, a ``sizes.json`` or a ``shards.txt`` needs ``overwrite``).
    """
    if isinstance(samples_per_shard, bool) or not isinstance(samples_per_shard, int) or samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be a number >= 1, got {samples_per_shard!r}")
    check_choice(per, SHARD_LAYOUTS, "per")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {out} is a file; pass a folder for the shards")
    held = sorted(p.name for p in out.iterdir() if p.name in (SIZES_FILE, LIST_FILE) or p.name.endswith(".tar")) \
        if out.is_dir() else []
    if held and not overwrite:
        raise FileExistsError(f"{out} already holds shards ({', '.join(held[:3])}{', ...' if len(held) > 3 else ''}); "
                              f"pass --overwrite (overwrite=True) to replace them, or choose another folder")
    return out


def _image_member(store: ImageStore, i: int) -> tuple[str, bytes]:
    """``(member extension, bytes)`` of image ``i``: its file's bytes, its dataset's bytes, else encoded."""
    path, data = store.path(i), None
    if path is not None and Path(path).suffix.lower() in _FILE_MEMBER:
        return _FILE_MEMBER[Path(path).suffix.lower()], Path(path).read_bytes()
    if isinstance(store, HFColumnStore) and path is None:
        cell = store.dataset[store.rows[i]][store.column]
        data = cell.get("bytes") if isinstance(cell, dict) else None
    if data:
        try:
            with Image.open(io.BytesIO(data)) as img:
                if img.format in _PIL_MEMBER:
                    return _PIL_MEMBER[img.format], bytes(data)
        except Exception:
            pass  # not decodable here: store.load below raises the clear error
    image, buf = store.load(i), io.BytesIO()
    small = image.width * image.height <= PNG_MAX_PIXELS
    image.save(buf, "PNG") if small else image.save(buf, "JPEG", quality=95)
    return ("png" if small else "jpg"), buf.getvalue()


def _samples(source: CaptionSource | ImageSource, per: str, written: WrittenShards) -> Iterator[dict[str, Any]]:
    """The samples of ``source`` in order, each image read once; keys: the pair or image index, 9 digits."""
    pair = 0
    for i in range(source.num_images):
        caps = source.captions[i] if isinstance(source, CaptionSource) else []
        try:
            ext, data = _image_member(source.store, i)
        except (OSError, BadImageError) as exc:
            if source.on_bad_image == "error":
                raise BadImageError(f"cannot read image {source.store.describe(i)} of {source.name} ({exc}); fix it "
                                    f"or build the source with on_bad_image=skip") from None
            logger.warning("%s: skipped image %s (%s)", source.name, source.store.describe(i), exc)
            written.skipped, pair = written.skipped + 1, pair + len(caps)
            continue
        written.images += 1
        if isinstance(source, ImageSource):
            yield {"__key__": f"{i:09d}", ext: data, "cls": str(source.labels[i]).encode()}
            continue
        image_id = source.image_ids[i]
        meta = {"image_id": image_id.item() if hasattr(image_id, "item") else image_id, "captions": caps}
        for j in range(1 if per == "image" else len(caps)):
            yield {"__key__": f"{(i if per == 'image' else pair + j):09d}", ext: data,
                   "txt": caps[j].encode("utf-8", errors="surrogateescape"),
                   "json": json.dumps(meta if per == "image" else {**meta, "caption_index": j}, default=str).encode()}
        pair += len(caps)


class _ShardFill:
    """``atomic_write``'s callback: ``first``, then more of ``samples`` up to ``limit``, into one tar."""

    def __init__(self, first: dict[str, Any], samples: Iterator[dict[str, Any]], limit: int) -> None:
        self.first, self.samples, self.limit, self.count = first, samples, limit, 0

    def __call__(self, tmp: Path) -> None:
        with open(tmp, "wb") as f, TarWriter(f, encoder=False) as tar:
            sample: dict[str, Any] | None = self.first
            while sample is not None:
                tar.write(sample)
                self.count += 1
                sample = next(self.samples, None) if self.count < self.limit else None


def write_shards(source: CaptionSource | ImageSource, out_dir: str | os.PathLike, samples_per_shard: int = 1000,
                 per: str = "pair", *, overwrite: bool = False) -> WrittenShards:
    """Write ``source`` as shards ``out_dir/00000.tar, ...`` + ``sizes.json`` + ``shards.txt``; their paths.

    ``per="pair"``: a sample per image–caption pair (key: the pair's index, as ``source[k]`` with
    ``pairs="all"``; an image's pairs are adjacent, so read them through a shuffle buffer); ``per="image"``: a
    sample per image (key: its index) with every caption in its json and the first as ``txt``. Image-only
    sources write the image and ``cls``. Image bytes are the file's own for JPEG/PNG/WebP files (and such bytes
    in a dataset; images are not decoded: build the source with ``verify`` to leave corrupt ones out), else the
    image encoded as PNG up to 256×256 pixels (lossless: synthetic data round-trips exactly) or JPEG quality 95.
    Each shard is written under a temporary name and renamed when complete; ``shards.txt`` is written last.
    """
    out = check_out_dir(out_dir, samples_per_shard, per, overwrite)
    if not isinstance(source, (CaptionSource, ImageSource)):
        raise TypeError(f"write_shards takes a caption or image source of this library (see build_source), "
                        f"not a {type(source).__name__}")
    out.mkdir(parents=True, exist_ok=True)
    (out / LIST_FILE).unlink(missing_ok=True)  # the list names complete sets only: none until this one is
    written, sizes = WrittenShards(), {}
    samples = _samples(source, per, written)
    first = next(samples, None)
    while first is not None:
        fill = _ShardFill(first, samples, samples_per_shard)
        path = atomic_write(out / f"{len(written):05d}.tar", fill)
        sizes[path.name] = fill.count
        written.append(path)
        written.samples += fill.count
        first = next(samples, None)
    if not written:
        raise ValueError(f"{source.name} has no sample to write")
    for stale in out.iterdir():  # shards of an earlier set that this one does not replace
        if _OURS.match(stale.name) and stale.name not in sizes:
            stale.unlink()
    atomic_write_json(out / SIZES_FILE, sizes)
    atomic_write_text(out / LIST_FILE, "".join(f"{name}\n" for name in sizes))
    return written

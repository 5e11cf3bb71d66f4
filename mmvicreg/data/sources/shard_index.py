"""Shards for evaluation: a header index over local tar shards, so an eval set reads images one at a time.

Retrieval needs every caption of every image and random access to the images (the encoder's loader takes them
by index, in workers); k-NN needs the labels. :func:`indexed_shards` scans each local shard once: the small
members (``txt``, ``json``, ``cls``) are read, the image members are only located (their offset and size in the
tar), and the result is a map-style :class:`CaptionSource` or :class:`ImageSource` whose :class:`TarMemberStore`
reads one image's bytes when asked. Memory is a few numbers per image plus the captions, like any map-style
source; the images are never all decoded or held.

Images are grouped by the json's ``image_id`` when the shards give one (``mmvicreg shards --per pair`` writes
one sample per pair, each with the image's whole caption list), else each sample is an image; its captions are
the json's ``captions`` list, else its ``txt``. ``pipe:`` shards cannot be indexed (no random access): evaluate
on local copies.
"""

from __future__ import annotations

import json
import tarfile
from typing import Any, Sequence

from PIL import Image
from webdataset.tariterators import base_plus_ext

from mmvicreg.data.sources.base import CaptionSource, ImageSource
from mmvicreg.data.sources.encoded import EncodedImage
from mmvicreg.data.sources.io import to_rgb
from mmvicreg.data.sources.policy import BadDataPolicy
from mmvicreg.data.sources.shards import IMAGE_EXTENSIONS
from mmvicreg.data.sources.stores import ImageStore

SMALL_MEMBERS = ("txt", "json", "cls")


class TarMemberStore(ImageStore):
    """Image ``i`` is ``size`` bytes at ``offset`` in the tar ``path`` (picklable: three numbers per image)."""

    def __init__(self, entries: Sequence[tuple[str, int, int]]) -> None:
        self.entries = list(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def _read(self, i: int) -> bytes:
        path, offset, size = self.entries[i]
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)

    def load(self, i: int) -> Image.Image:
        return to_rgb(self._read(i), what=self.describe(i))

    def load_encoded(self, i: int) -> EncodedImage:
        return EncodedImage(self._read(i), self.describe(i))

    def subset(self, indices: Sequence[int]) -> TarMemberStore:
        return TarMemberStore([self.entries[i] for i in indices])

    def describe(self, i: int) -> str:
        return f"image {i} of shard {self.entries[i][0]}"


def _scan(path: str) -> list[dict[str, Any]]:
    """One shard's samples in order: ``{"key", "image": (path, offset, size), "txt", "json", "cls"}``."""
    samples: list[dict[str, Any]] = []
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, ext = base_plus_ext(member.name)
            if key is None:
                continue
            if not samples or samples[-1]["key"] != key:
                samples.append({"key": key})
            ext = ext.lower()
            if ext in IMAGE_EXTENSIONS and "image" not in samples[-1]:
                samples[-1]["image"] = (path, member.offset_data, member.size)
            elif ext in SMALL_MEMBERS:
                samples[-1][ext] = tar.extractfile(member).read()  # type: ignore[union-attr]
    return samples


def _captions(sample: dict[str, Any]) -> tuple[Any, list[str]]:
    """``(image id or None, captions)`` of one indexed sample."""
    meta: Any = {}
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except ValueError:
            meta = {}
    listed = meta.get("captions") if isinstance(meta, dict) else None
    image_id = meta.get("image_id") if isinstance(meta, dict) else None
    if isinstance(listed, list) and listed:
        return image_id, [str(c) for c in listed]
    text = sample.get("txt")
    return image_id, [text.decode("utf-8", errors="replace").strip()] if text is not None else []


def indexed_shards(urls: Sequence[str], name: str, on_bad_image: str = "error",
                   on_bad_caption: str = "error") -> CaptionSource | ImageSource:
    """A map-style source over local shards (module docstring): captioned when any sample has a caption."""
    remote = [u for u in urls if u.startswith(("pipe:", "http:", "https:", "gs:", "s3:"))]
    if remote:
        raise ValueError(f"evaluation reads shards by index and needs local files; {remote[0]} is not one: copy "
                         f"the eval shards to a local folder")
    samples = [s for url in urls for s in _scan(url.removeprefix("file:"))]
    samples = [s for s in samples if "image" in s]
    policy = BadDataPolicy(on_bad_image, on_bad_caption)
    if any("txt" in s or "json" in s for s in samples):
        ids, captions, entries, seen = [], [], [], {}
        for s in samples:
            image_id, caps = _captions(s)
            group = image_id if image_id is not None else s["key"]
            if group in seen:
                continue
            seen[group] = len(ids)
            ids.append(group)
            captions.append(caps)
            entries.append(s["image"])
        return CaptionSource(ids, captions, TarMemberStore(entries), policy=policy, name=name,
                             fix="rewrite the shard (mmvicreg shards)")
    labels = [int(s["cls"].decode().strip()) if "cls" in s else -1 for s in samples]
    classes = [str(c) for c in range(max(labels, default=-1) + 1)]
    return ImageSource(labels, classes, TarMemberStore([s["image"] for s in samples]), policy=policy, name=name,
                       fix="rewrite the shard (mmvicreg shards)")

"""Webdataset shards: list them, count their samples, read them raw and decode them (writing: ``shard_writer``).

A shard is a tar whose members ``<key>.<ext>`` form samples by key (webdataset's grouping: the name up to the
first dot of its base name; a sample's members are adjacent). Captioned samples hold the image
(``jpg|jpeg|png|webp``), ``txt`` (the caption, UTF-8) and ``json`` (``{"image_id", "captions": [...],
"caption_index"}``); image-only samples hold the image and ``cls`` (the integer label, ``-1``: none). A folder
of shards holds ``sizes.json`` (open_clip's ``{"00000.tar": samples}``) and ``shards.txt`` (one name a line).
Shards are local paths, ``file:`` URLs or ``pipe:`` commands, opened by ``webdataset.gopen`` as webdataset and
open_clip do. A ``pipe:`` shard runs a shell command, so :func:`expand_shards` takes one only when the caller
wrote it itself (the spec, not a ``.txt`` list or a folder's ``shards.txt``) and switched it on (``allow_pipe``;
in a config ``data.<section>.allow_pipe: true``). Writing shards is :mod:`.shard_writer`'s job.

Bad data follows a :class:`BadDataPolicy`: under ``"error"`` the first bad sample raises one line naming its key
and shard; under ``"skip"`` it is left out and counted per reason in a :class:`BadDataCounts` (picklable and
mergeable: DataLoader workers count, the main process sums). Reasons: ``"no image"``, ``"corrupt image"``,
``"over the pixel limit"`` (``PIL.Image.MAX_IMAGE_PIXELS``), ``"bad label"`` (on_bad_image); ``"no caption"``,
``"empty caption"``, ``"caption not UTF-8"`` (on_bad_caption);
``read_shard`` reports ``"truncated shard"``, ``"unreadable shard"`` and ``"bad shard"`` to its caller.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tarfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import urlparse

from webdataset.gopen import gopen
from webdataset.tariterators import base_plus_ext, group_by_keys, tar_file_iterator

from mmvicreg.data.sources.io import BadImageError, ImageTooLargeError, caption_problem, to_rgb
from mmvicreg.data.sources.policy import BadDataPolicy
from mmvicreg.data.sources.shard_list import LIST_FILE, expand_shards, is_remote, local_path  # noqa: F401 (re-exported)

logger = logging.getLogger("mmvicreg.data")

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")  # the image members decode_sample reads, first found wins
SIZES_FILE = "sizes.json"
_CAPTION_PROBLEM = {"empty": "empty caption", "not UTF-8": "caption not UTF-8"}
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's skip_meta: members that never join a sample
_WARNED: set[str] = set()  # reasons this process has logged once (later ones are only counted)

OnError = Callable[[str, str, str], Any]  # (url, reason, detail)


class _KeyCounter:
    """Counts samples the way webdataset groups members: a new sample each time the key changes."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.count = 0

    def see(self, name: str) -> str | None:
        """The key of member ``name`` (None: it joins no sample), counting a new sample when the key changes."""
        key = None if _META.match(name) else base_plus_ext(name)[0]
        if key is not None and key != self.key:
            self.key, self.count = key, self.count + 1
        return key


def count_samples(path: str | os.PathLike) -> int:
    """The number of samples in the local tar ``path``, from its headers (no member data is read).

    A truncated tar counts the samples whose members are all there (as ``read_shard`` yields them; for a
    compressed tar, those whose headers read); an unreadable one counts what was read, with a warning.
    """
    path = os.fspath(path)
    counter, limit = _KeyCounter(), os.path.getsize(path)
    try:
        try:
            tar = tarfile.open(path, "r:")  # uncompressed: offsets are file offsets, so a cut shows
        except tarfile.ReadError:
            tar, limit = tarfile.open(path, "r:*"), None
        with tar:
            for member in tar:  # reads each header and seeks over the data
                if limit is not None and member.offset_data + member.size > limit:
                    if not _META.match(member.name) and base_plus_ext(member.name)[0] == counter.key:
                        counter.count -= 1  # the sample being counted lacks this member: read_shard drops it
                    break
                if member.isreg():
                    counter.see(member.name)
    except Exception as exc:  # a damaged shard is counted as far as it reads, never a crash
        logger.warning("shard %s is unreadable after %d samples (%s: %s)", path, counter.count,
                       type(exc).__name__, " ".join(str(exc).split()))
    return counter.count


def _shard_name(url: str) -> str:
    """The name sizes.json knows a shard by: its base name (for ``pipe:``, of the last word naming a tar)."""
    if url.startswith("pipe:"):
        url = ([w for w in url[5:].split() if ".tar" in w] or [url])[-1]
    return os.path.basename(urlparse(url).path if is_remote(url) else local_path(url))


def _sizes_table(path: str, cache: dict[str, dict[str, int] | None]) -> dict[str, int] | None:
    if path not in cache:
        cache[path] = None
        if os.path.isfile(path):
            try:
                cache[path] = {str(k): int(v) for k, v in json.loads(Path(path).read_text("utf-8")).items()}
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path} is not a sizes file ({exc}); it must map shard names to sample counts, "
                                 f'e.g. {{"00000.tar": 1000}}; fix or delete it') from None
    return cache[path]


def shard_sizes(shards: Sequence[str], sizes_file: str | os.PathLike | None = None) -> list[int]:
    """The number of samples of each shard: from ``sizes_file`` or the ``sizes.json`` beside a local shard
    (``{"<shard base name>": count}``, open_clip's convention), else from a local shard's tar headers.

    A remote shard (``pipe:``, URL) that no sizes file lists raises one ``ValueError`` line.
    """
    if sizes_file is not None and not os.path.isfile(sizes_file):
        raise ValueError(f"sizes file {os.fspath(sizes_file)} does not exist")
    cache: dict[str, dict[str, int] | None] = {}
    sizes = []
    for url in shards:
        name, remote = _shard_name(url), is_remote(url)
        where = os.fspath(sizes_file) if sizes_file is not None else \
            None if remote else os.path.join(os.path.dirname(local_path(url)), SIZES_FILE)
        table = _sizes_table(where, cache) if where is not None else None
        if table is not None and name in table:
            sizes.append(table[name])
        elif not remote:
            sizes.append(count_samples(local_path(url)))
        else:
            raise ValueError(f"cannot count the samples of shard {url}: it is not a local file and no sizes.json "
                             f'lists {name!r}; write a sizes.json ({{"{name}": samples, ...}}) and pass it, or set '
                             f"train.samples_per_epoch")
    return sizes


class _Incomplete(Exception):
    """Stops ``group_by_keys`` without handing on the sample it was assembling (its members are not all there)."""


class _Reading:
    """What ``read_shard`` follows while webdataset reads: the key of the member being read, the skip, the problem."""

    def __init__(self, skip: int) -> None:
        self.skip, self.counter, self.key = skip, _KeyCounter(), None
        self.problem: tuple[str, str] | None = None

    def select(self, name: str) -> bool:  # tar_file_iterator asks before reading a member's data
        self.key = self.counter.see(name)
        return self.key is not None and self.counter.count > self.skip


def _members(url: str, stream: Any, state: _Reading) -> Iterator[dict[str, Any]]:
    """tar_file_iterator's members, ending where the shard breaks off without handing on a partial sample."""
    done = None  # the key of the last member handed on
    try:
        for member in tar_file_iterator(stream, select_files=state.select):
            member["__url__"] = url
            done = state.key
            yield member
    except Exception as exc:
        message = str(exc.args[0]) if exc.args else type(exc).__name__
        state.problem = ("truncated shard" if state.counter.count else "unreadable shard", f"{url}: {message}")
        if state.key != done:
            yield {}  # the broken member begins a sample: the one before is complete (webdataset's end marker)
            return
        raise _Incomplete from None


def read_shard(url: str, skip: int = 0, on_error: OnError | None = None,
               expected: int | None = None) -> Iterator[dict[str, Any]]:
    """The raw samples of shard ``url`` in file order: ``{"__key__", "__url__", "<ext>": bytes, ...}``.

    The first ``skip`` samples are passed over without reading their data. A broken shard never raises out of
    the iterator: the complete samples before the break are yielded, then ``on_error(url, reason, detail)`` is
    called once (default: a logged warning) with reason ``"truncated shard"``, ``"unreadable shard"`` (cannot be
    opened, or its ``pipe:`` command failed) or ``"bad shard"`` (e.g. a member twice in one sample). Given
    ``expected`` (its size), a shard that ends early is reported as ``"truncated shard"`` too.
    """
    if not isinstance(skip, int) or skip < 0:
        raise ValueError(f"skip must be a number of samples >= 0, got {skip!r}")
    report = on_error or (lambda _url, reason, detail: logger.warning("%s: %s", reason, detail))
    state = _Reading(skip)
    try:
        stream = gopen(url, "rb")
    except Exception as exc:
        report(url, "unreadable shard", f"cannot open {url} ({type(exc).__name__}: {exc})")
        return
    try:
        yield from group_by_keys(_members(url, stream, state))
    except _Incomplete:
        pass
    except Exception as exc:  # webdataset's grouping refuses a malformed shard
        state.problem = state.problem or ("bad shard", f"{url}: {exc.args[0] if exc.args else exc}")
    finally:
        try:
            stream.close()  # a pipe: command's exit status is checked here
        except Exception as exc:
            state.problem = state.problem or ("unreadable shard", f"{url}: {exc}")
    if state.problem is not None:
        report(url, *state.problem)
    elif expected is not None and state.counter.count < expected:
        report(url, "truncated shard", f"{url} ended after {state.counter.count} of its {expected} samples")


class BadDataCounts:
    """Bad samples per reason (picklable): ``add`` in DataLoader workers, ``merge`` in the main process."""

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        self.counts: dict[str, int] = dict(counts or {})

    def add(self, reason: str, n: int = 1) -> int:
        """Count ``n`` more of ``reason``; returns that reason's new count."""
        self.counts[reason] = self.counts.get(reason, 0) + n
        return self.counts[reason]

    def merge(self, other: BadDataCounts | Mapping[str, int]) -> BadDataCounts:
        """Add ``other`` (counts, or a ``{reason: count}`` dict) into this one; returns self."""
        for reason, n in (other.counts if isinstance(other, BadDataCounts) else other).items():
            self.add(reason, n)
        return self

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        """``{reason: count}`` sorted by reason, as ``data_report.json`` holds it."""
        return dict(sorted(self.counts.items()))

    def report(self, source: str, samples: int) -> dict[str, Any]:
        """A streamed source's ``data_report.json`` entry: skipped images and captions, each per reason."""
        reasons = self.as_dict()
        captions = {k: v for k, v in reasons.items() if "caption" in k}
        images = {k: v for k, v in reasons.items() if k not in captions}
        return {"source": source, "samples": samples, "skipped_images": sum(images.values()),
                "skipped_image_reasons": images, "skipped_captions": sum(captions.values()),
                "skipped_caption_reasons": captions}

    def __repr__(self) -> str:
        return f"BadDataCounts({self.as_dict()})"


def _reject(kind: str, reason: str, detail: str, where: str, policy: BadDataPolicy,
            counts: BadDataCounts | None) -> None:
    """Raise under an ``error`` policy, else count the bad sample (logging the first of each reason)."""
    option = "on_bad_image" if kind == "image" else "on_bad_caption"
    if (policy.on_bad_image if kind == "image" else policy.on_bad_caption) == "error":
        raise (BadImageError if kind == "image" else ValueError)(
            f"{where}: {reason} ({detail}); rewrite the shard or set {option}: skip to leave such samples out")
    if counts is not None:
        counts.add(reason)
    else:
        (policy.skipped if kind == "image" else policy.skipped_captions).append((where, reason))
    if reason not in _WARNED:
        _WARNED.add(reason)
        logger.warning("skipped %s: %s (%s); later ones are counted, not logged", where, reason, detail)


def decode_sample(raw: Mapping[str, Any], policy: BadDataPolicy, counts: BadDataCounts | None = None, *,
                  captions: str | None = "txt") -> dict[str, Any] | None:
    """A raw sample of ``read_shard`` decoded: ``{"image": RGB PIL, "caption": str, "key": str}`` (plus
    ``"captions"``, every caption, when its ``json`` lists them), or ``{"image", "label": int, "key"}``.

    The caption is the member ``captions`` (``txt``), else the first of the json's ``captions``. A sample with
    neither but a ``cls`` member is image-only (with ``captions=None`` every sample is; no ``cls``: label -1).
    The image is the first of the jpg, jpeg, png, webp members. Under an ``error`` policy a bad sample raises
    one line naming its key and shard (``BadImageError`` for images, ``ValueError`` for captions); under
    ``skip`` it gives None and its reason is counted in ``counts`` (without: ``policy.skipped[_captions]``).
    """
    key = str(raw.get("__key__", "?"))
    where = f"sample {key} of shard {raw.get('__url__', '?')}"
    ext = next((e for e in IMAGE_EXTENSIONS if e in raw), None)
    if ext is None:
        members = sorted(k for k in raw if not k.startswith("__"))
        return _reject("image", "no image", f"no {'/'.join(IMAGE_EXTENSIONS)} member, only {members}", where,
                       policy, counts)
    try:
        meta = json.loads(raw["json"]) if "json" in raw else {}
    except (ValueError, TypeError):
        meta = {}  # json is metadata: a broken one costs only what it would have given
    listed = meta.get("captions") if isinstance(meta, dict) and isinstance(meta.get("captions"), list) else None
    listed = None if listed is None else [c.strip() for c in listed if isinstance(c, str)]
    out: dict[str, Any] = {"key": key}
    if captions is not None and (captions in raw or listed is not None or "cls" not in raw):
        text = raw.get(captions)
        caption = bytes(text).decode("utf-8", errors="surrogateescape").strip() if text is not None else \
            listed[0] if listed else None
        problem = "no caption" if caption is None else _CAPTION_PROBLEM.get(caption_problem(caption) or "")
        if problem is not None:
            return _reject("caption", problem, f"no {captions} member and no json captions" if caption is None
                           else ascii(caption[:40]), where, policy, counts)
        out["caption"] = caption
        if listed is not None:
            out["captions"] = listed
    else:
        try:
            out["label"] = int(bytes(raw["cls"]).decode("ascii").strip()) if "cls" in raw else -1
        except (ValueError, UnicodeDecodeError):
            return _reject("image", "bad label", f"cls is {bytes(raw['cls'])[:20]!r}, not an integer", where,
                           policy, counts)
    try:
        out["image"] = to_rgb(bytes(raw[ext]), what=f"its {ext} image")
    except BadImageError as exc:
        reason = ImageTooLargeError.reason if isinstance(exc, ImageTooLargeError) else "corrupt image"
        return _reject("image", reason, str(exc).split(";")[0], where, policy, counts)
    return out

"""Listing shards: brace patterns, ``.txt`` lists, folders, URLs and ``pipe:`` commands, and the ``pipe:`` rule.

A ``pipe:`` shard is a shell command that ``webdataset.gopen`` runs (``shell=True``). :func:`expand_shards` takes
one only when the caller wrote it in the spec itself (never from a ``.txt`` list or a folder's ``shards.txt``:
data files do not get to run commands) and switched it on with ``allow_pipe`` (in a config:
``data.<section>.allow_pipe: true``). Every refusal is one ``ValueError`` line naming the shard and the switch,
raised before anything is opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse
from urllib.request import url2pathname

from webdataset.shardlists import expand_urls

LIST_FILE = "shards.txt"


def is_pipe(url: str) -> bool:
    """Whether ``webdataset.gopen`` would take ``url`` for a ``pipe:`` command (its scheme, in any case)."""
    return urlparse(url).scheme == "pipe"


def is_remote(url: str) -> bool:
    """``pipe:`` commands and URLs with a scheme (``http://``, ``s3://``...) other than ``file:``: not checked."""
    scheme = urlparse(url).scheme
    return is_pipe(url) or (len(scheme) > 1 and scheme != "file")


def local_path(url: str) -> str:
    return url2pathname(urlparse(url).path) if url.startswith("file:") else url


def _braces(text: str) -> list[str]:
    try:
        return list(expand_urls(text))  # braceexpand (and webdataset's $WDS_ variables)
    except ValueError as exc:  # braceexpand's UnbalancedBracesError
        raise ValueError(f"shard pattern {text!r} is not a brace pattern ({exc}); write e.g. "
                         f"/data/cc3m/{{00000..00331}}.tar") from None


def _read_list(path: str) -> list[str]:
    """The shards a ``.txt`` file lists, one (or one brace pattern) a line; relative ones from its folder."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ValueError(f"cannot read the shard list {path} ({why}); "
                         f"pass an existing .txt file with one shard per line") from None
    urls = [url for line in lines if line.strip() and not line.strip().startswith("#") for url in _braces(line.strip())]
    return [u if is_remote(u) or os.path.isabs(local_path(u)) else os.path.join(os.path.dirname(path), u) for u in urls]


def _expand_one(text: str) -> list[tuple[str, str | None]]:
    """``(url, the list file or folder that named it, None: the spec itself)`` for each shard ``text`` names."""
    out: list[tuple[str, str | None]] = []
    for part in (p.strip() for p in text.split("::") if p.strip()):  # open_clip joins sources with "::"
        if not is_remote(part) and part.endswith(".txt"):
            out += [(url, part) for url in _read_list(part)]
        elif not is_remote(part) and os.path.isdir(part):
            listed = os.path.join(part, LIST_FILE)
            if os.path.isfile(listed):
                out += [(url, listed) for url in _read_list(listed)]
                continue
            tars = sorted(e.path for e in os.scandir(part) if e.name.endswith((".tar", ".tar.gz", ".tgz")))
            if not tars:
                raise ValueError(f"shard folder {part} holds no {LIST_FILE} and no .tar files")
            out += [(url, part) for url in tars]
        else:
            out += [(url, None) for url in _braces(part)]
    return out


def check_pipes(named: Sequence[tuple[str, str | None]], allow_pipe: bool, switch: str) -> None:
    """Refuse, in one line, a ``pipe:`` shard that a list file or folder named (always) or that the spec named
    without ``allow_pipe``; ``switch`` is how the caller turns ``allow_pipe`` on (e.g. a config key)."""
    for url, origin in named:
        if not is_pipe(url):
            continue
        if origin is not None:
            raise ValueError(f"shard {url!r} (listed in {origin}) would run a shell command; pipe: shards are never "
                             f"read from a shard list or folder: list local files, or write the command in the "
                             f"shards value itself and set {switch}")
        if not allow_pipe:
            raise ValueError(f"shard {url!r} would run a shell command; if you mean it, set {switch}")


def _unreadable(path: str) -> str | None:
    if not os.path.exists(path):
        return "does not exist"
    if os.path.isdir(path):
        return "is a folder, not a tar file"
    return None if os.access(path, os.R_OK) else "is not readable (permissions)"


def expand_shards(spec: str | os.PathLike | Sequence[str | os.PathLike], allow_pipe: bool = False,
                  switch: str = "allow_pipe=True") -> list[str]:
    """Every shard ``spec`` names, in order: a brace pattern (``/data/cc3m/{00000..00331}.tar``), a ``.txt``
    file listing shards (lines relative to its folder), a folder (its ``shards.txt``, else its ``.tar`` files),
    URLs, ``pipe:`` commands, a list of any of these, or several joined by ``::``.

    A ``pipe:`` shard runs a shell command: it is taken only when ``spec`` itself names it and ``allow_pipe`` is
    true; one named by a list file or folder is refused whatever ``allow_pipe`` says (one ``ValueError`` line
    naming the shard and ``switch``, nothing run). Every local shard must exist and be readable, else ONE
    ``ValueError`` line names the first bad one and how many of how many are missing; an empty expansion is an
    error too. Remote shards are not checked.
    """
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    wrong = [i for i in items if not isinstance(i, (str, os.PathLike))]
    if wrong:
        raise ValueError(f"shards must be a path, a pattern or a list of them; got {wrong[0]!r}")
    named = [pair for item in items for pair in _expand_one(os.fspath(item))]
    check_pipes(named, allow_pipe, switch)
    urls = [url for url, _ in named]
    if not urls:
        raise ValueError(f"no shards: {spec!r} expands to nothing; pass a brace pattern such as "
                         f"/data/{{00000..00099}}.tar, a list, or a .txt file listing the shards")
    bad = [(url, why) for url in urls if not is_remote(url) and (why := _unreadable(local_path(url)))]
    if bad:
        raise ValueError(f"shard {bad[0][0]} {bad[0][1]} ({len(bad)} of {len(urls)} shards missing or unreadable); "
                         f"check the shard pattern or list")
    return urls

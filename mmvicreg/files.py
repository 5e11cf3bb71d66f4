"""Writing files so that a crash, a full disk or a kill never leaves a half-written one in place.

Every write of the library that replaces a file (configs, metrics, reports, caches, exports, checkpoints) goes
through here: the bytes go to a temporary name in the same folder, are flushed to disk, and only then renamed
over the target (``os.replace`` is atomic on POSIX and Windows). A reader sees the old file or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

PathLike = str | os.PathLike


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file; mkstemp's own files are private (0600)


def atomic_write(path: PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, flush it, then rename it to ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: PathLike, payload: Any) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=2))


@contextlib.contextmanager
def staged_files(directory: PathLike, last: Sequence[str] = ()) -> Iterator[Path]:
    """Write several files into a staging folder, then move them all into ``directory``.

    ``with staged_files(out, last=["config.json"]) as staging: ...`` — files written under ``staging`` are
    flushed and renamed into ``directory`` (keeping their relative paths) only when the block succeeds, the
    names in ``last`` after every other file. A failure inside the block leaves ``directory`` untouched.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=".staging-"))
    try:
        yield staging
        fsync_tree(staging)
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        files.sort(key=lambda p: p.relative_to(staging).as_posix() in last)
        for src in files:
            dst = directory / src.relative_to(staging)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        fsync_dir(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_dir(tmp: PathLike, final: PathLike) -> Path:
    """Replace the folder ``final`` by the complete folder ``tmp`` (flushed first), e.g. a checkpoint."""
    tmp, final = Path(tmp), Path(final)
    fsync_tree(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    return final


def fsync_file(path: PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: PathLike) -> None:
    """Flush every file under ``directory`` and the folder itself to disk (so that a rename after it is durable)."""
    directory = Path(directory)
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            fsync_file(path)
    fsync_dir(directory)


def fsync_dir(directory: PathLike) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not support fsync on folders
        pass
    finally:
        os.close(fd)

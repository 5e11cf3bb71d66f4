"""Writing files so that a crash, a full disk or a kill never leaves a half-written one in place.

Every write of the library that replaces a file (configs, metrics, reports, caches, exports, checkpoints) goes
through here: the bytes go to a temporary name in the same folder, are flushed to disk, and only then renamed
over the target (``os.replace`` is atomic on POSIX and Windows). A reader sees the old file or the new one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

PathLike = str | os.PathLike
FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """A write that failed for want of space: the message names the file, the free space and what was needed."""


def is_disk_full(error: BaseException) -> bool:
    """An OSError with ENOSPC/EDQUOT, or a library's own error wrapping one (safetensors reports "os error 28")."""
    if isinstance(error, DiskFullError) or (isinstance(error, OSError) and error.errno in FULL_DISK_ERRNOS):
        return True
    text = str(error)
    return any(f"os error {n}" in text or os.strerror(n) in text for n in FULL_DISK_ERRNOS)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def folder_bytes(path: PathLike | None) -> int:
    """The size of the files under ``path`` (0 when it does not exist)."""
    if path is None or not Path(path).exists():
        return 0
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def space_note(where: PathLike, needed: int | None) -> str:
    """``"1.2 MB free on /runs/x, about 45.0 MB needed"`` (the nearest existing folder's file system)."""
    place = Path(where)
    while not place.exists() and place != place.parent:
        place = place.parent
    try:
        free = human_bytes(shutil.disk_usage(place).free)
    except OSError:
        free = "unknown space"
    need = f", about {human_bytes(needed)} needed" if needed else ""
    return f"{free} free on {place}{need}"


@contextlib.contextmanager
def reporting_full_disk(target: PathLike, needed: int | None = None, then: str = "") -> Iterator[None]:
    """Turn a full-disk failure inside the block into one :class:`DiskFullError` line naming ``target``, the free
    space and ``needed`` bytes, followed by ``then`` (what is intact, how to go on); other errors pass through.
    Nested blocks: the innermost report stands, unless an outer block gives ``needed``."""
    try:
        yield
    except BaseException as e:
        if not is_disk_full(e) or (isinstance(e, DiskFullError) and needed is None):
            raise  # an inner block's report stands unless this one knows what the write needs
        raise DiskFullError(
            f"could not write {target}: the disk is full ({space_note(target, needed)}){'; ' + then if then else ''}"
        ) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file; mkstemp's own files are private (0600)
DIR_MODE = 0o777 & ~_umask()  # what mkdir would give; mkdtemp's folders are private (0700)


def apply_umask(directory: PathLike) -> None:
    """Give ``directory`` and everything under it the modes the user's umask gives new files and folders.

    Libraries that write through private temporary files (safetensors' ``save_file``, ``tempfile``) leave them
    0600/0700, so that teammates on shared storage could not read an export or a checkpoint.
    """
    directory = Path(directory)
    os.chmod(directory, DIR_MODE)
    for path in directory.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, DIR_MODE if path.is_dir() else FILE_MODE)


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
        with reporting_full_disk(path, then=f"{path} was left as it was"):
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
        with reporting_full_disk(directory, then=f"the files already in {directory} were left as they were"):
            yield staging
        apply_umask(staging)
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
    """Replace the folder ``final`` by the complete folder ``tmp`` (flushed first), e.g. a checkpoint.

    By renames: an existing ``final`` is renamed aside, ``tmp`` takes its name (the old one is renamed back if
    that fails), and only then is the old one removed, so ``final`` is never missing or half deleted.
    """
    tmp, final = Path(tmp), Path(final)
    apply_umask(tmp)
    fsync_tree(tmp)
    if not os.path.lexists(final):
        os.replace(tmp, final)
    else:
        aside = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:12]}"
        os.replace(final, aside)
        try:
            os.replace(tmp, final)
        except BaseException:
            os.replace(aside, final)
            raise
        shutil.rmtree(aside, ignore_errors=True)
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

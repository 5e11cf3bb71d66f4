"""Who may write a run folder: one run at a time (a lock), and never over an earlier run unless asked.

* **The lock.** The main process holds ``output_dir/.mmvicreg.lock`` (``fcntl.lockf``, exclusive, non-blocking)
  for the whole run; the file records the holder's host, pid and start time. A second run on the same folder stops
  at once naming the first. The operating system drops the lock when its process dies, so a run killed with
  ``kill -9`` leaves nothing to clean up and ``resume=true`` takes the folder again. A POSIX record lock rather
  than ``flock``: it belongs to the process, so DataLoader workers forked from it (which outlive a killed parent
  for a moment) do not keep holding it. (Where ``fcntl`` does not exist, on Windows, there is no lock.) Advisory
  locks on network file systems are as reliable as the mount; NFS supports POSIX locks.
* **An earlier run.** A folder that holds a run's files (``config.yaml``, ``metrics.jsonl``, ``model/``,
  ``eval.json``, checkpoints) is refused unless ``resume=true`` (continue from its last checkpoint) or
  ``overwrite=true`` (remove exactly those files, nothing else in the folder, then start afresh). A finished run
  whose checkpoints are gone cannot be resumed, and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import IO

from mmvicreg.config import ConfigError, RunConfig
from mmvicreg.train.checkpoint import CHECKPOINTS, latest_checkpoint

LOCK_FILE = ".mmvicreg.lock"
# Everything a run writes in its folder (rundir.py, checkpoint.py, step.py): what overwrite=true removes.
RUN_FILES = ("config.yaml", "metrics.jsonl", "data_report.json", "eval.json", "plots", "model", CHECKPOINTS)
FINISHED = ("model", "eval.json")

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]


class RunFolderLock:
    """An exclusive lock on a run folder, held by the main process from setup to the end of ``train``."""

    def __init__(self, output_dir: Path) -> None:
        self.path = Path(output_dir) / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`ConfigError` naming the run that holds it."""
        if fcntl is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(
                f"{self.path.parent} is in use by another run ({holder}); wait for it to end, or choose another "
                f"output_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.lockf(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def run_files(output_dir: Path) -> list[str]:
    """The names of :data:`RUN_FILES` present in ``output_dir`` (an empty checkpoints folder does not count)."""
    found = []
    for name in RUN_FILES:
        path = output_dir / name
        if name == CHECKPOINTS:
            if latest_checkpoint(output_dir) is not None:
                found.append(name + "/")
        elif path.exists():
            found.append(name + "/" if path.is_dir() else name)
    return found


def claim_run_folder(config: RunConfig, output_dir: Path) -> Path | None:
    """Check what ``output_dir`` holds against ``resume`` / ``overwrite``; the checkpoint to resume from, or None.

    Call with the lock held. ``overwrite=true`` removes the earlier run's files (:data:`RUN_FILES`) here. With
    ``train.sync_to`` the remote copy is claimed by the same rules, and a newer checkpoint there is brought back
    (:func:`mmvicreg.train.remote.claim_remote`).
    """
    from mmvicreg.train.remote import claim_remote

    return claim_remote(config, output_dir, claim_local_folder(config, output_dir))


def claim_local_folder(config: RunConfig, output_dir: Path) -> Path | None:
    """:func:`claim_run_folder` for the local folder alone."""
    found = run_files(output_dir)
    latest = latest_checkpoint(output_dir)
    if config.overwrite:
        for name in RUN_FILES:
            path = output_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        return None
    if not config.resume:
        if found:
            raise ConfigError(
                f"{output_dir} already holds an earlier run ({', '.join(found)}); set resume=true to continue it, "
                f"overwrite=true to replace it, or choose another output_dir"
            )
        return None
    if latest is None and any(name.rstrip("/") in FINISHED for name in found):
        raise ConfigError(
            f"{output_dir} holds a finished run ({', '.join(found)}) but no checkpoint to resume from; set "
            f"overwrite=true to train it again from the start, or choose another output_dir"
        )
    return latest


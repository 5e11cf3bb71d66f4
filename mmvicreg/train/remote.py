"""A run mirrored to remote storage (``train.sync_to``: an fsspec URL such as ``s3://bucket/runs/x``, ``gs://...``
or ``file:///mnt/shared/x``): checkpoints, the export and the run's records are copied there; a resumed run reads
the newest checkpoint back from there when the local ``output_dir`` has none as new (a job restarted on another
node, a wiped scratch disk).

``output_dir`` stays a local folder (on several nodes: a shared one, as for any multi-node run): it is where
Accelerate writes, where the lock lives and what the mirror is copied from. Only the main process talks to the
remote, through fsspec (the library of the URL's protocol: ``s3fs``, ``gcsfs``, ...; none for ``file://``).

**What a reader sees.** Object stores have no atomic folder rename, so a copy is *published by a marker*: the
files of ``checkpoints/step_<N>/`` (or ``model/``) are uploaded first and ``.complete`` (JSON: the step and each
file's size) last. A checkpoint or export without its marker, or whose files do not have the sizes it lists, is
incomplete and never read; a new export first removes the old marker, so ``model/`` is trusted only once the
marker is back. Old checkpoints are pruned there as here (``train.keep_checkpoints``), newest complete ones kept,
and incomplete ones (uploads cut short) removed.

**What is the run's own.** The mirror writes and removes only the names a run writes (``config.yaml``,
``metrics.jsonl``, ``eval.json``, ``model/``, ``checkpoints/step_<N>/``) and its own marker ``.mmvicreg-run.json``,
and it removes anything only under a root that holds that marker. Like a local folder, a remote that holds an
earlier run is refused unless ``resume=true`` or ``overwrite=true`` (which removes those names only).
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from typing import Any, Callable

from mmvicreg.config import ConfigError, RunConfig

MARKER, RUN_MARKER = ".complete", ".mmvicreg-run.json"
STEP_NAME = re.compile(r"^step_(\d{8})$")
RECORDS = ("config.yaml", "metrics.jsonl", "eval.json")


class RemoteError(RuntimeError):
    """The remote refused a write or a read (one line: the URL, the cause, what is intact)."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {(text.splitlines()[0] if text else '')[:200]}"


class RemoteMirror:
    """The remote copy of one run at ``url`` (``train.sync_to``). Call its methods from the main process only."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/")

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _guard(self, what: str, call: Callable[[], Any], then: str) -> Any:
        try:
            return call()
        except Exception as e:  # each fsspec backend raises its own types (PermissionError, ClientError, ...)
            raise RemoteError(f"train.sync_to {self.url}: could not {what} ({_first_line(e)}); {then}") from None

    # ------------------------------------------------------------------------------------------ reading
    def run_files(self) -> list[str]:
        """The run's names present at the remote (a checkpoint counts when complete)."""
        found = [n for n in (*RECORDS, "model") if self.fs.exists(self._path(n))]
        return found + (["checkpoints/"] if self.complete_steps() else [])

    def _manifest(self, folder: str) -> dict[str, Any] | None:
        """The marker of ``folder`` when it and every file it lists (at its size) are there; else None."""
        try:
            manifest = json.loads(self.fs.cat_file(self._path(folder, MARKER)))
            for name, size in manifest["files"].items():
                if self.fs.size(self._path(folder, name)) != size:
                    return None
            return manifest
        except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def _step_folders(self) -> dict[int, str]:
        try:
            entries = self.fs.ls(self._path("checkpoints"), detail=False)
        except FileNotFoundError:
            return {}
        steps = {}
        for entry in entries:
            found = STEP_NAME.match(entry.rstrip("/").rsplit("/", 1)[-1])
            if found:
                steps[int(found.group(1))] = f"checkpoints/step_{found.group(1)}"
        return steps

    def complete_steps(self) -> list[int]:
        """The steps of the complete checkpoints at the remote, in order."""
        return sorted(s for s, folder in self._step_folders().items() if self._manifest(folder) is not None)

    def download_checkpoint(self, step: int, local: Path) -> None:
        """Copy the complete checkpoint of ``step`` into the local folder ``local`` (which must not exist)."""
        folder = f"checkpoints/step_{step:08d}"
        manifest = self._manifest(folder)
        if manifest is None:
            raise RemoteError(f"train.sync_to {self.url}: {folder} is incomplete; it cannot be resumed from")
        for name, size in manifest["files"].items():
            target = local / name
            target.parent.mkdir(parents=True, exist_ok=True)
            self._guard(f"read {folder}/{name}", lambda: self.fs.get_file(self._path(folder, name), str(target)),
                        "the remote copy was left as it was")
            if target.stat().st_size != size:
                raise RemoteError(f"train.sync_to {self.url}: {folder}/{name} changed while it was read")

    def download_record(self, name: str, local: Path) -> bool:
        """Copy one of :data:`RECORDS` to ``local`` when the remote has it."""
        if not self.fs.exists(self._path(name)):
            return False
        self._guard(f"read {name}", lambda: self.fs.get_file(self._path(name), str(local)), "nothing was changed")
        return True

    # ------------------------------------------------------------------------------------------ writing
    def claim(self, config: RunConfig) -> None:
        """At the start of a run: refuse an earlier run there (as a local folder is), remove it under
        ``overwrite``, then write the run's marker (a remote that refuses writes is one line, before training)."""
        then = "check the URL and your permissions there, or leave train.sync_to out"
        if self._guard("read it", lambda: self.fs.exists(self.root) and not self.fs.isdir(self.root), then):
            raise RemoteError(f"train.sync_to {self.url} is a file, not a folder; choose another URL")
        found = self._guard("read it", self.run_files, then)
        if found and not config.resume and not config.overwrite:
            raise ConfigError(
                f"train.sync_to {self.url} already holds a run ({', '.join(found)}); set resume=true to continue "
                f"it, overwrite=true to replace it, or choose another URL"
            )
        if config.overwrite and found:
            self._require_marker("remove the earlier run")
            for name in (*RECORDS, "model", *self._step_folders().values()):
                if self.fs.exists(self._path(name)):
                    self._guard(f"remove {name}", lambda: self.fs.rm(self._path(name), recursive=True),
                                "remove it by hand, or choose another URL")
        mark = json.dumps({"host": socket.gethostname(), "claimed": time.strftime("%Y-%m-%d %H:%M:%S")})
        self._guard("write to it", lambda: self._write(RUN_MARKER, mark.encode()), then)

    def _require_marker(self, what: str) -> None:
        if not self.fs.exists(self._path(RUN_MARKER)):
            raise RemoteError(f"train.sync_to {self.url} has no {RUN_MARKER}, so it was not written by mmvicreg; "
                              f"refused to {what} there")

    def _write(self, name: str, data: bytes) -> None:
        path = self._path(name)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(path, data)

    def _upload_folder(self, local: Path, folder: str, step: int | None) -> None:
        """Every file of ``local`` to ``folder``, then the marker that publishes them."""
        files = sorted(p for p in local.rglob("*") if p.is_file())
        for path in files:
            target = self._path(folder, path.relative_to(local).as_posix())
            self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(str(path), target)
        manifest = {"step": step, "files": {p.relative_to(local).as_posix(): p.stat().st_size for p in files}}
        self._write(f"{folder}/{MARKER}", json.dumps(manifest, indent=1).encode())

    def upload_checkpoint(self, local: Path, step: int, keep: int) -> None:
        """Publish the local checkpoint ``local`` as ``checkpoints/step_<N>``, then prune to ``keep``."""
        folder = f"checkpoints/{local.name}"
        then = (f"the local checkpoint {local} is complete and the remote's last complete checkpoint is intact: "
                f"fix the remote and rerun with resume=true")
        self._guard(f"write {folder}", lambda: self._upload_folder(local, folder, step), then)
        self._guard("remove old checkpoints", lambda: self.prune(keep), then)

    def prune(self, keep: int) -> None:
        """Keep the newest ``keep`` complete checkpoints; remove every other ``step_<N>`` folder, incomplete ones
        (uploads cut short) included. Called right after an upload completes, under the run folder's lock, so no
        other upload is in progress."""
        self._require_marker("remove checkpoints")
        kept = set(self.complete_steps()[-keep:])
        for step, folder in self._step_folders().items():
            if kept and step not in kept:
                self.fs.rm(self._path(folder), recursive=True)

    def upload_run(self, output_dir: Path, with_export: bool) -> None:
        """The records (:data:`RECORDS`) and, ``with_export``, the exported ``model/`` (marker removed first)."""
        def upload() -> None:
            for name in RECORDS:
                if (output_dir / name).is_file():
                    self.fs.put_file(str(output_dir / name), self._path(name))
            if with_export:
                if self.fs.exists(self._path("model", MARKER)):
                    self.fs.rm(self._path("model", MARKER))
                self._upload_folder(output_dir / "model", "model", None)

        self._guard("write the export and records", upload,
                    f"they are complete in {output_dir}: copy them by hand, or rerun with resume=true")


def mirror_of(config: RunConfig) -> RemoteMirror | None:
    """The run's mirror when ``train.sync_to`` is set."""
    return RemoteMirror(config.train.sync_to) if config.train.sync_to else None


def claim_remote(config: RunConfig, output_dir: Path, latest: Path | None) -> Path | None:
    """Claim the mirror (:meth:`RemoteMirror.claim`) and, under ``resume``, bring back its newest complete
    checkpoint when the local ``latest`` is older or absent (with ``metrics.jsonl`` when the folder lacks it).
    Returns the checkpoint to resume from. Main process, with the run folder's lock held."""
    from mmvicreg.files import publish_dir
    from mmvicreg.train.checkpoint import CHECKPOINTS, checkpoint_step

    mirror = mirror_of(config)
    if mirror is None:
        return latest
    try:
        mirror.claim(config)
        steps = mirror.complete_steps() if config.resume else []
        if not steps or (latest is not None and steps[-1] <= checkpoint_step(latest)):
            return latest
        name = f"step_{steps[-1]:08d}"
        tmp, final = output_dir / CHECKPOINTS / f".tmp_{name}", output_dir / CHECKPOINTS / name
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        mirror.download_checkpoint(steps[-1], tmp)
        publish_dir(tmp, final)
        if not (output_dir / "metrics.jsonl").exists():
            mirror.download_record("metrics.jsonl", output_dir / "metrics.jsonl")
        return final
    except RemoteError as e:  # a refusal every process reports (setup.claim_folder broadcasts ConfigErrors)
        raise ConfigError(str(e)) from None

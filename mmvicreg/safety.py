"""Reading checkpoints without running their code, and writing them so that a crash never loses the last one.

A checkpoint folder (Accelerate's ``save_state``) holds ``model.safetensors`` and pickles written by
``torch.save``: ``optimizer.bin``, ``random_states_<rank>.pkl`` and ``custom_checkpoint_<i>.pkl`` (the LR
scheduler and the loop's position). A pickle can name any Python callable and have it called on load, so a
checkpoint from a stranger can run code. Accelerate reads the custom states with ``weights_only=False`` and
silently carries on when the RNG file cannot be read; so before ``accelerator.load_state`` the trainer calls
:func:`verify_checkpoint`, which opens every pickle with ``torch.load(weights_only=True)`` (tensors, numbers,
strings, containers and NumPy arrays only) and refuses the folder, naming the file, at the first one that asks
for anything else. A file that passes cannot call anything outside that list when loaded again.
"""

from __future__ import annotations

import codecs
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch

PICKLE_SUFFIXES = (".bin", ".pkl", ".pt", ".pth")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written, or cannot be trusted or read back."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle in a checkpoint asks to import or call something that weights-only loading does not allow."""


def _numpy_globals() -> list[Any]:
    """What ``np.random.get_state()`` (in Accelerate's RNG file) needs to be rebuilt: arrays and dtypes only."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    allowed: list[Any] = [core.multiarray._reconstruct, np.ndarray, np.dtype, codecs.encode]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None and hasattr(dtypes, "UInt32DType"):
        allowed.append(dtypes.UInt32DType)
    return allowed


def _refusal(path: Path, error: Exception) -> UnsafeCheckpointError:
    found = re.search(r"GLOBAL ([\w.]+)", str(error)) or re.search(r"Unsupported global: ([\w.]+)", str(error))
    what = f"the callable {found.group(1)}" if found else "objects other than tensors, numbers and containers"
    return UnsafeCheckpointError(
        f"refused to load {path}: its pickle asks for {what}, which loading would import and may call, so the "
        f"file could run code; mmvicreg reads checkpoint pickles with torch.load(weights_only=True) only. Use "
        f"checkpoints written by mmvicreg, or remove this checkpoint folder"
    )


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` that also rebuilds NumPy arrays, with clear errors.

    Raises :class:`UnsafeCheckpointError` when the pickle needs any other global (it would run code if loaded
    fully), :class:`CheckpointError` when the file is truncated or not a torch file at all.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about plain (non-zip) pickles before refusing them
            warnings.simplefilter("ignore", UserWarning)
            if hasattr(torch.serialization, "safe_globals"):
                with torch.serialization.safe_globals(_numpy_globals()):
                    return torch.load(path, map_location=map_location, weights_only=True)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only" in str(e) or "global" in str(e).lower():
            raise _refusal(path, e) from None
        raise CheckpointError(f"{path} is damaged and cannot be read ({first_line(e)})") from None
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (EOFError, RuntimeError, ValueError, OSError, AttributeError, TypeError, IndexError, KeyError) as e:
        raise CheckpointError(
            f"{path} is damaged and cannot be read ({type(e).__name__}: {first_line(e)}); it was probably cut "
            f"short by a crash or a full disk"
        ) from None


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


RNG_KEYS = ("random_state", "numpy_random_seed", "torch_manual_seed")


def verify_checkpoint(directory: str | os.PathLike, required: Iterable[str] = ()) -> None:
    """Check that every file of a checkpoint folder can be read without running code, and that it is complete.

    Pickles (``.bin .pkl .pt .pth``) must load with ``weights_only=True``; ``.safetensors`` files must have a
    whole header and data; every name in ``required`` must be present; RNG files must hold the RNG states.
    Raises :class:`UnsafeCheckpointError` or :class:`CheckpointError` naming the file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint {directory} is not a directory")
    missing = [name for name in required if not (directory / name).is_file()]
    if missing:
        raise CheckpointError(
            f"checkpoint {directory} is incomplete: {', '.join(missing)} missing; remove this folder to resume "
            f"from the checkpoint before it"
        )
    for path in sorted(directory.iterdir()):
        if not path.is_file():
            continue
        if path.suffix in PICKLE_SUFFIXES:
            value = safe_torch_load(path)
            if path.name.startswith("random_states_") and not (
                isinstance(value, dict) and all(k in value for k in RNG_KEYS)
            ):
                raise CheckpointError(
                    f"{path} does not hold the random-number states ({', '.join(RNG_KEYS)}); a run resumed from it "
                    f"would not repeat the uninterrupted run"
                )
        elif path.suffix == ".safetensors":
            check_safetensors(path)


def check_safetensors(path: Path) -> None:
    """Read the header and every tensor of a safetensors file (catches truncated files and foreign formats)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                f.get_slice(key)
    except Exception as e:  # safetensors raises its own types for truncated or foreign files
        raise CheckpointError(f"{path} is not a readable safetensors file ({first_line(e)})") from None


def fsync_tree(directory: str | os.PathLike) -> None:
    """Flush every file under ``directory`` and the folder itself to disk (so that a rename after it is durable)."""
    directory = Path(directory)
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(directory)


def fsync_dir(directory: str | os.PathLike) -> None:
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

"""Checkpoints: where the run is, writing them so that a crash never loses the last one, and reading them back
without running their code.

A checkpoint folder ``checkpoints/step_<N>`` is Accelerate's ``save_state``: ``model.safetensors`` and pickles
written by ``torch.save`` — ``optimizer.bin``, ``random_states_<rank>.pkl`` (every RNG of every process) and
``custom_checkpoint_<i>.pkl``, one per object in the run's own list of checkpointed objects, in registration
order: the LR scheduler, the :class:`TrainState` (step, epoch, batches of the epoch consumed, skipped batches)
and the objective when it has parameters. Together with the epoch sampler's order, which depends only on
(seed, epoch), this is what makes a resumed run end with the same weights as an uninterrupted one.

A checkpoint is written to ``.tmp_step_<N>`` and renamed when complete. A pickle can name any Python callable
and have it called on load, so a checkpoint from a stranger can run code; Accelerate reads the custom states
with ``weights_only=False`` and silently carries on when the RNG file cannot be read. So before
``accelerator.load_state`` the trainer calls :func:`verify_checkpoint`, which opens every pickle with
``torch.load(weights_only=True)`` (tensors, numbers, strings, containers and NumPy arrays only) and refuses the
folder, naming the file, at the first one that asks for anything else.
"""

from __future__ import annotations

import codecs
import os
import pickle
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import yaml

from mmvicreg.files import folder_bytes, publish_dir, space_note

CHECKPOINTS = "checkpoints"
PICKLE_SUFFIXES = (".bin", ".pkl", ".pt", ".pth")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written, or cannot be trusted or read back."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle in a checkpoint asks to import or call something that weights-only loading does not allow."""


def _numpy_globals() -> list[Any]:
    """What ``np.random.get_state()`` (in Accelerate's RNG file) needs to be rebuilt: arrays and dtypes only."""
    import numpy as np

    # The callable NumPy's own pickling names for an array, asked through the public pickle protocol
    # (``__reduce__``) rather than read from NumPy's private modules.
    reconstruct = np.zeros(0).__reduce__()[0]
    allowed: list[Any] = [reconstruct, np.ndarray, np.dtype, codecs.encode]
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
        f"checkpoints written by mmvicreg"
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
        if asks_for_global(e):
            raise _refusal(path, e) from None
        raise CheckpointError(
            f"{path} is damaged and cannot be read (not a pickle torch wrote: {unpickling_cause(e)}); it was "
            f"probably cut short by a crash or a full disk, or replaced"
        ) from None
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (EOFError, RuntimeError, ValueError, OSError, AttributeError, TypeError, IndexError, KeyError) as e:
        raise CheckpointError(
            f"{path} is damaged and cannot be read ({type(e).__name__}: {first_line(e)}); it was probably cut "
            f"short by a crash or a full disk"
        ) from None


def asks_for_global(error: Exception) -> bool:
    """Whether weights-only unpickling refused a global (code the pickle would import), not broken bytes."""
    return bool(re.search(r"GLOBAL [\w.]+|Unsupported global", str(error)))


def unpickling_cause(error: Exception) -> str:
    """The line of torch's weights-only message that says what was wrong with the bytes."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Weights only load failed", "(1)", "(2)", "Please", "In PyTorch"))]
    return (useful[0] if useful else lines[0] if lines else type(error).__name__)[:160]


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
            f"checkpoint {directory} lacks {', '.join(missing)}, which this run's configuration expects; it was "
            f"written with other settings (compare the config.yaml beside it with yours) or files were removed "
            f"from it. Nothing was changed"
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


# ------------------------------------------------------------------------------------------- writing, finding


@dataclass
class TrainState:
    """What the checkpoint needs beyond model, optimiser, scheduler and RNG: where we are."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches of the current epoch already consumed
    skipped_nonfinite: int = 0

    def state_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.__dict__.update(state)


def checkpoint_step(path: Path) -> int:
    return int(path.name.split("_")[1])


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    ckpts = sorted(Path(output_dir, CHECKPOINTS).glob("step_*"), key=checkpoint_step)
    return ckpts[-1] if ckpts else None


def remove_debris(output_dir: Path) -> None:
    """Folders of saves cut short by a crash (``.tmp_step_*``): never resumed from."""
    for stale in (output_dir / CHECKPOINTS).glob(".tmp_step_*"):
        shutil.rmtree(stale, ignore_errors=True)


def save_checkpoint(
    accelerator: Any, output_dir: Path, step: int, keep: int, config: Mapping[str, Any] | None = None,
    mirror: Any = None,
) -> Path:
    """Accelerate state written to a temporary folder, then renamed: a crash mid-save keeps the last checkpoint.

    ``config`` (the run's, as a tree) is written inside it as ``config.yaml``: what a resumed run is checked
    against. Keeps the newest ``keep`` checkpoints; with a ``mirror`` (:class:`~mmvicreg.train.remote.RemoteMirror`)
    the checkpoint is then published there and the remote pruned the same way. A failed write (a full disk, a quota, a vanished mount) raises
    :class:`CheckpointError` naming the last complete checkpoint, which is left intact, and the space needed.
    """
    root = output_dir / CHECKPOINTS
    final, tmp = root / f"step_{step:08d}", root / f".tmp_step_{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()  # every rank's RNG file is in
        if accelerator.is_main_process:
            if config is not None:
                (tmp / "config.yaml").write_text(yaml.safe_dump(dict(config), sort_keys=False))
            publish_dir(tmp, final)  # flushed to disk, then renamed: now the checkpoint to resume from
    except BaseException as e:
        written = folder_bytes(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, (OSError, RuntimeError)):  # torch.save reports a failed write as a RuntimeError
            raise
        last = latest_checkpoint(output_dir)
        needed = folder_bytes(last) if last is not None else written
        raise CheckpointError(
            f"could not write the checkpoint of step {step} to {tmp} ({type(e).__name__}: {first_line(e)}); "
            f"{space_note(root, needed)}; the last complete checkpoint, {last or 'none'}, is intact: free space "
            f"and rerun with resume=true"
        ) from None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for old in sorted(root.glob("step_*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        if mirror is not None:
            mirror.upload_checkpoint(final, step, keep)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, path: Path, num_custom: int, frozen: FrozenWeights | None = None) -> None:
    """Verify every file of ``path`` (see the module docstring), then restore the Accelerate state from it.

    ``num_custom`` is the length of the run's list of checkpointed objects (``custom_checkpoint_<i>.pkl``).
    With ``frozen`` weights, the checkpoint holds every other tensor (checked) and the frozen ones are read
    from their one file.
    """
    custom = [f"custom_checkpoint_{i}.pkl" for i in range(num_custom)]
    rng = f"random_states_{accelerator.process_index}.pkl"
    check_world_size(path, accelerator.num_processes)
    verify_checkpoint(path, ["model.safetensors", "optimizer.bin", rng, *custom])
    if frozen is None or not frozen.keys:
        accelerator.load_state(str(path))
        return
    frozen.check_complement(path / "model.safetensors")
    accelerator.load_state(str(path), strict=False)
    frozen.load()


def check_world_size(path: Path, processes: int) -> None:
    """A checkpoint resumes only on as many processes as wrote it (one ``random_states_<rank>.pkl`` each).

    The weights, optimiser and data position would carry over (``train.batch_size`` is global), but each
    process's random streams (augmentations, dropout) and its share of every batch belong to the world that wrote
    them, so the run would no longer repeat the uninterrupted one; it is refused, naming both sizes.
    """
    written = len(list(Path(path).glob("random_states_*.pkl")))
    if written and written != processes:
        raise CheckpointError(
            f"checkpoint {path} was written by a run of {written} process{'es' if written > 1 else ''} and this "
            f"run has {processes}: launch {written} (the same global train.batch_size) to continue it exactly, or "
            f"start a new run in another output_dir"
        )


FROZEN_FILE = "frozen_encoders.safetensors"


class FrozenWeights:
    """The tensors of frozen encoders (``freeze: true``): written once per run, left out of every checkpoint.

    ``model`` is the unwrapped JointEmbedding; ``keys`` its state-dict keys that training never changes
    (:meth:`~mmvicreg.model.JointEmbedding.frozen_state_keys`). The file lives beside the step folders,
    ``checkpoints/frozen_encoders.safetensors``; a checkpoint's ``model.safetensors`` holds every other tensor.
    """

    def __init__(self, model: torch.nn.Module, keys: set[str], output_dir: Path) -> None:
        self.model, self.keys = model, set(keys)
        self.path = output_dir / CHECKPOINTS / FROZEN_FILE
        self.shared = tuple(model.shared_prefixes())  # a shared encoder's tensors are saved under their owner

    def save_once(self, resuming: bool) -> None:
        """Write the file when a run starts (main process); a resumed run reads the one it started with (a
        rebuilt encoder need not equal it: pretrained weights may have changed since)."""
        if not self.keys or resuming:
            return
        from safetensors.torch import save_file

        from mmvicreg.files import atomic_write
        from mmvicreg.model.io import storable

        state = self.model.state_dict()
        tensors = storable({k: state[k] for k in sorted(self.keys) if not k.startswith(self.shared)})
        atomic_write(self.path, lambda tmp: save_file(tensors, str(tmp)))

    def drop_from(self, models: list[Any], weights: list[dict[str, torch.Tensor]], output_dir: str) -> None:
        """Accelerate's save-state hook: the frozen tensors are taken out of the state dicts it saves."""
        for state in weights:
            for key in [k for k in state if k.removeprefix("module.") in self.keys]:
                del state[key]

    def check_complement(self, weights_file: Path) -> None:
        """A checkpoint must hold every tensor of the model that is not frozen (else resume would lose work)."""
        from safetensors import safe_open

        with safe_open(str(weights_file), framework="pt") as f:
            saved = {k.removeprefix("module.") for k in f.keys()}
        missing = sorted(set(self.model.state_dict()) - saved - self.keys)
        missing = [k for k in missing if not k.startswith(self.shared)]
        if missing:
            raise CheckpointError(
                f"{weights_file} lacks {len(missing)} trained tensors ({', '.join(missing[:3])}, ...); it was not "
                f"written by this configuration: check the branches' freeze settings against the run's config.yaml"
            )

    def load(self) -> None:
        """Put the frozen tensors back from their file (it must hold every one)."""
        from safetensors.torch import load_file

        if not self.path.is_file():
            raise CheckpointError(
                f"{self.path} is missing: it holds the frozen encoders' weights that checkpoints leave out; "
                f"restore it, or start the run again"
            )
        check_safetensors(self.path)
        tensors = load_file(str(self.path))
        missing = sorted(k for k in self.keys - set(tensors) if not k.startswith(self.shared))
        if missing:
            raise CheckpointError(
                f"{self.path} lacks frozen tensors ({', '.join(missing[:3])}); the branches' freeze settings "
                f"changed since the run started: restore config.yaml's settings"
            )
        self.model.load_state_dict(tensors, strict=False)

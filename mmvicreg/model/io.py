"""Saving and loading a :class:`~mmvicreg.model.JointEmbedding` as plain files, no pickle anywhere.

An export is a folder with ``config.json`` (the branches' architecture, see ``JointEmbedding.config``),
``model.safetensors`` (the weights; weights a ``shares:`` branch repeats are saved once, under their owner) and
``tokenizers/<branch>/`` (JSON) for each branch whose encoder owns a tokenizer, and ``README.md``, the model card
(:mod:`mmvicreg.model.card`). Every file is staged and renamed into place with the config last
(:func:`mmvicreg.files.staged_files`): a failure mid-export leaves the previous export whole and loadable. The
same folder is what the Hub holds (:mod:`mmvicreg.model.hub`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from mmvicreg.encoders import architecture_only, load_tokenizer, needs_tokenizer
from mmvicreg.files import staged_files
from mmvicreg.model.card import model_card
from mmvicreg.model.export_files import CARD_FILE, CONFIG_FILE, FORMAT_VERSION, TOKENIZER_DIR, WEIGHTS_FILE

__all__ = [
    "CARD_FILE", "CONFIG_FILE", "FORMAT_VERSION", "TOKENIZER_DIR", "WEIGHTS_FILE", "load_model",
    "read_export_config", "save_model", "storable",
]

Model = TypeVar("Model", bound=nn.Module)  # a JointEmbedding (the model imports this module, not the reverse)


def storable(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CPU copy of ``tensors`` that safetensors' ``save_file`` takes: each tensor detached, with its own storage
    (safetensors refuses tied or viewed weights) and in the contiguous layout (it refuses channels-last ones,
    ``train.channels_last``)."""
    return {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in tensors.items()}


def save_model(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    training_config: Any = None,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors``, ``tokenizers/<branch>/`` and ``README.md`` into ``directory``.

    ``training_config`` and ``metrics`` go into the model card only (:func:`mmvicreg.model.card.model_card`).
    Returns ``directory``.
    """
    from safetensors.torch import save_file

    shared = tuple(model.shared_prefixes())
    state = storable({k: v for k, v in model.state_dict().items() if not k.startswith(shared)})
    text = json.dumps(model.config(), indent=2)
    card = model_card(model, training_config=training_config, metrics=metrics)
    with staged_files(directory, last=[CONFIG_FILE]) as staging:
        for name, branch in model.branches.items():
            if branch.encoder.owns_tokenizer and branch.shares is None:
                branch.tokenizer.save(staging / TOKENIZER_DIR / name)
        save_file(state, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        (staging / CARD_FILE).write_text(card)
        (staging / CONFIG_FILE).write_text(text)
    return Path(directory)


def read_export_config(directory: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{branch: saved section}`` of the export ``directory``, after checking it has ``config.json`` and weights.

    Each encoder spec is its architecture only (:func:`mmvicreg.encoders.architecture_only`): an option that
    would load weights (``pretrained``, timm's ``checkpoint_path``, ...), open a file elsewhere, reach the network
    or run code is dropped, since the weights are the export's own. Raises ``FileNotFoundError`` naming a missing
    folder or file, ``ValueError`` for a config that is not ours.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory; pass the folder written by save_pretrained")
    config_path = directory / CONFIG_FILE
    for path in (config_path, directory / WEIGHTS_FILE):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: {directory} is not a complete mmvicreg export "
                f"(needs {CONFIG_FILE}, {WEIGHTS_FILE} and {TOKENIZER_DIR}/ for text branches)"
            )
    try:
        branch_configs = json.loads(config_path.read_text())["branches"]
        if not isinstance(branch_configs, dict) or not all(isinstance(c, dict) for c in branch_configs.values()):
            raise TypeError("'branches' must map branch names to mappings")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{config_path} is not an mmvicreg model config ({type(e).__name__}: {e})") from None
    return {name: _architecture_only(name, section, config_path) for name, section in branch_configs.items()}


def _architecture_only(name: str, section: dict[str, Any], config_path: Path) -> dict[str, Any]:
    if section.get("encoder") is None:
        return section
    try:
        return {**section, "encoder": architecture_only(section["encoder"])}
    except ValueError as e:
        raise ValueError(f"{config_path}, branch {name!r}: {e}") from None


def _read_tokenizers(directory: Path, branch_configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The saved tokenizer of every branch whose encoder owns one (the encoders package says which)."""
    tokenizers = {}
    for name, cfg in branch_configs.items():
        if cfg.get("shares") is not None or cfg.get("encoder") is None or not needs_tokenizer(cfg["encoder"]):
            continue
        folder = directory / TOKENIZER_DIR / name
        try:
            tokenizers[name] = load_tokenizer(folder)
        except FileNotFoundError:
            raise
        except (ValueError, KeyError, TypeError, OSError) as e:  # JSON errors are ValueErrors
            raise ValueError(
                f"the tokenizer of branch {name!r} in {folder} cannot be read "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); re-export the model"
            ) from None
    return tokenizers


def _load_weights(model: nn.Module, weights_path: Path, config_path: Path, map_location: str) -> None:
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights_path), device=map_location)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for truncated or foreign files
        raise ValueError(f"{weights_path} could not be read as safetensors weights ({e})") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # same names, other shapes: torch lists every mismatch on its own line
        lines = [line.strip() for line in str(e).splitlines() if "size mismatch" in line]
        raise ValueError(
            f"{weights_path} does not match {config_path}: {len(lines)} tensor(s) have other shapes, e.g. "
            f"{lines[0] if lines else str(e).splitlines()[0]}"
        ) from None
    missing = [k for k in missing if not k.startswith(tuple(model.shared_prefixes()))]
    if missing or unexpected:
        raise ValueError(
            f"{weights_path} does not match {config_path}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )


def load_model(
    cls: type[Model], directory: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> Model:
    """Rebuild a model written by :func:`save_model`: ``cls.from_config`` (``cls`` is ``JointEmbedding``) of the
    architecture from JSON, then the weights from safetensors.

    Raises ``FileNotFoundError`` for a missing folder or file and ``ValueError`` naming the file for a config,
    tokenizer or weights file that cannot be read or does not match.
    """
    directory = Path(directory)
    branch_configs = read_export_config(directory)
    tokenizers = _read_tokenizers(directory, branch_configs)
    model = cls.from_config(branch_configs, tokenizers=tokenizers)  # type: ignore[attr-defined]
    _load_weights(model, directory / WEIGHTS_FILE, directory / CONFIG_FILE, str(map_location))
    return model

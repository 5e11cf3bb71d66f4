"""Pieces every command shares: ``KEY=VALUE`` flags and loading a model onto a device."""

from __future__ import annotations

import os
from typing import Any, Sequence


def key_values(pairs: Sequence[str], flag: str, example: str = "") -> dict[str, Any]:
    """``["key=value", ...]`` (the values of a repeatable ``flag``) -> ``{key: YAML value}``; one line per mistake."""
    import yaml

    out = {}
    for text in pairs:
        if "=" not in text:
            raise ValueError(f"{flag} {text!r} must look like key=value{f', e.g. {example}' if example else ''}")
        key, value = text.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def load_model(name: str | os.PathLike, device: str | None) -> Any:
    """The exported model ``name`` (a folder or Hub id) on ``device`` (default: CUDA when torch sees a GPU)."""
    from mmvicreg.devices import resolve_device
    from mmvicreg.model import JointEmbedding

    where = resolve_device(device)  # before loading: a missing GPU is named at once
    return JointEmbedding.from_pretrained(name).to(where)

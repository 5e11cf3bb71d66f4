"""Pieces every command shares: ``KEY=VALUE`` flags, loading a model onto a device, the flags and encoding
options of every ``eval`` command, and writing ``--json``."""

from __future__ import annotations

import argparse
import os
from typing import Any, Sequence

from mmvicreg.choices import EVAL_PRECISIONS


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


def add_common_arguments(p: argparse.ArgumentParser, formats: Sequence[str]) -> None:
    """The flags of every ``eval`` command: the model, the data format, encoding, ``--option``, ``--json``."""
    p.add_argument("--model", required=True, help="directory written by save_pretrained (a run's model/)")
    p.add_argument("--format", required=True, choices=formats)
    p.add_argument("--batch-size", type=int, default=256, help="items per encoding batch")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when torch sees a GPU, else cpu)")
    p.add_argument("--precision", choices=EVAL_PRECISIONS, default="auto",
                   help="auto: bf16 autocast on CUDA, fp32 on the CPU")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="DataLoader processes that decode and preprocess (default: up to 4; 0: in this process)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="extra source option")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def encoding(args: argparse.Namespace) -> dict[str, Any]:
    """The encoding options of every eval command: ``batch_size``, ``workers``, ``precision``, ``progress``."""
    return {"batch_size": args.batch_size, "workers": args.workers, "precision": args.precision,
            "progress": args.progress}


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically to ``path`` (``--json``); nothing when ``path`` is None."""
    if path:
        from mmvicreg.files import atomic_write_json

        atomic_write_json(path, payload)

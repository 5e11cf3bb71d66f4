"""Hooks into a training run, for tools and tests that must act at a precise moment (e.g. stop a run right
after a checkpoint, or make one checkpoint write fail). Override what you need; an exception raised in a hook
propagates out of :func:`mmvicreg.train.train` like any other error of the run."""

from __future__ import annotations

from pathlib import Path


class Callback:
    def on_checkpoint_start(self, step: int) -> None:
        """Before the checkpoint of ``step`` is written."""

    def on_checkpoint_end(self, step: int, path: Path) -> None:
        """After the checkpoint of ``step`` is complete at ``path``."""

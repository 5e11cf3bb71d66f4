"""Every ``--help`` renders (argparse %-formats help strings only when it prints them, so a stray ``%`` passes
every other test and fails only here)."""

from __future__ import annotations

import pytest

from mmvicreg.cli import main
from mmvicreg.cli.evaluate import COMMANDS

TOP = ["train", "eval", "push", "index", "search", "shards", "sweep"]
PATHS = [[], *([c] for c in TOP), *(["eval", c] for c in COMMANDS), ["index", "build"]]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "mmvicreg")
def test_help_renders(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*path, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: mmvicreg {' '.join(path)}".rstrip())

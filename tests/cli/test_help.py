"""Every ``--help`` renders and teaches. The commands are found by walking the parser tree itself
(:func:`mmvicreg.cli.build_parser` and each subparsers' choices), so a newly added command or flag is checked
without being listed here: its help renders with rc 0 (argparse %-formats help strings only when it prints them,
so a stray ``%`` passes every other test and fails only here), every flag has a line of help, every subcommand
a line in its parent's list, every parser uses the one :class:`~mmvicreg.cli.common.HelpFormatter`, and every
default worth showing is shown."""

from __future__ import annotations

import argparse
from typing import Iterator

import pytest

from mmvicreg.cli import build_parser, main
from mmvicreg.cli.common import HelpFormatter, RetiredFlag


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))


def _parser(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return parser


PATHS = list(_walk(build_parser()))
IDS = [" ".join(p) or "mmvicreg" for p in PATHS]


def test_the_walk_finds_every_command():
    found = {" ".join(p) for p in PATHS}
    expected = {"", "train", "eval", "eval retrieval", "eval knn", "eval linear-probe", "eval linear", "push",
                "index", "index build", "search", "shards", "sweep"}
    assert expected <= found, expected - found


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_help_renders(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*path, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: mmvicreg {' '.join(path)}".rstrip()) and "Traceback" not in out


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_every_flag_and_subcommand_has_help(path: tuple[str, ...]) -> None:
    parser = _parser(path)
    assert parser.formatter_class is HelpFormatter, f"{' '.join(path)}: pass formatter_class=HelpFormatter"
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert (choice.help or "").strip(), f"{' '.join(path)} {choice.dest}: no help line"
            continue
        if action.help == argparse.SUPPRESS:  # hidden: only an old spelling that answers with the new one
            assert isinstance(action, RetiredFlag), f"{' '.join(path)} {name}: hidden without a RetiredFlag"
            continue
        assert (action.help or "").strip(), f"{' '.join(path)} {name}: no help"


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_defaults_are_shown(path: tuple[str, ...]) -> None:
    parser = _parser(path)
    text = " ".join(parser.format_help().split())  # the wrapping undone
    for action in parser._actions:
        default = action.default
        if not action.option_strings or default is None or isinstance(default, bool) or default == [] \
                or default == argparse.SUPPRESS or "default" in (action.help or ""):
            continue
        assert f"(default: {default})" in text, f"{' '.join(path)} {action.option_strings}: default not shown"


def test_a_literal_percent_is_escaped_once():
    """The formatter %-formats help: ``%%`` shows as ``%`` (and descriptions, not formatted, hold none)."""
    text = _parser(("eval", "linear")).format_help()
    assert "finetune 1%: 0.08" in text and "%%" not in text

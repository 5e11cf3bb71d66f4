"""The ``mmvicreg`` command line (also ``python -m mmvicreg`` and ``accelerate launch -m mmvicreg``).

    mmvicreg train CONFIG.yaml [dotted.key=value ...]
    mmvicreg eval retrieval --model RUN/model --format coco --images DIR --captions FILE [--protocol 1k]
    mmvicreg eval knn --model RUN/model --format digits [--compare-random-init]
    mmvicreg eval linear-probe --model RUN/model --format folder --train-images DIR --test-images DIR
    mmvicreg embed --model RUN/model --format csv --captions FILE.csv --images DIR --out EMB [--shard-size N]
    mmvicreg index build --model RUN/model --images DIR [--captions FILE.txt] --out INDEX
    mmvicreg index build --embeddings EMB --out INDEX
    mmvicreg search --index INDEX --text "a dog on the grass" [-k 10] [--json OUT]
    mmvicreg push --model RUN/model --repo-id ORG/NAME
    mmvicreg shards --format csv --captions FILE.csv --images DIR --out SHARDS [--per image]
    mmvicreg train CONFIG.yaml --print-config
    mmvicreg env                     (versions of Python, torch, CUDA, the libraries; --version: mmvicreg's)
    mmvicreg sweep CONFIG.yaml --grid loss.gamma=0.5,1 [--grid ...] | --optuna train.lr=1e-4:1e-2:log --trials N
        --out SWEEP [--metric rsum] [--jobs 2] [dotted.key=value ...]

Argument parsing only: the work is in :mod:`mmvicreg.train` and :mod:`mmvicreg.evaluation`. Problems with the
config or the data stop the run before training with one line naming the cause (this module holds the one
error handler of every entry point, the ``eval/*.py`` scripts included); set MMVICREG_DEBUG=1 to see the full
traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    """The ``mmvicreg`` parser and every subcommand's. Imports nothing heavy: ``--help`` answers at once."""
    from mmvicreg.version import __version__
    from mmvicreg.cli.common import CommandParser, HelpFormatter
    from mmvicreg.cli.embed import add_embed_command
    from mmvicreg.cli.env import add_env_command
    from mmvicreg.cli.evaluate import COMMANDS
    from mmvicreg.cli.hub import add_push_command
    from mmvicreg.cli.index import add_index_commands
    from mmvicreg.cli.serve import add_serve_command
    from mmvicreg.cli.shards import add_shards_command
    from mmvicreg.cli.sweep import add_sweep_command

    parser = CommandParser(prog="mmvicreg", description="Train any set of encoders with VICReg.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"mmvicreg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser("train", help="train branches with VICReg from a YAML config", formatter_class=HelpFormatter,
                           description="Config keys are set in the YAML or as dotted.key=value overrides "
                                       "(every key: docs/CONFIG.md, or --print-config).")
    train.add_argument("config", help="YAML config file (see examples/)")
    train.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. train.max_steps=100")
    train.add_argument("--print-config", action="store_true",
                       help="print the resolved config (every default filled in) as YAML and exit")
    evaluate = sub.add_parser("eval", help="evaluate an exported model", formatter_class=HelpFormatter)
    commands = evaluate.add_subparsers(dest="eval_command", required=True, metavar="EVALUATION")
    for name, (add_arguments, _, help_) in COMMANDS.items():
        add_arguments(commands.add_parser(name, help=help_, description=help_, formatter_class=HelpFormatter))
    add_push_command(sub)
    add_embed_command(sub)
    add_index_commands(sub)
    add_serve_command(sub)
    add_shards_command(sub)
    add_sweep_command(sub)
    add_env_command(sub)
    return parser


def run_train(config_path: str, overrides: list[str], print_config: bool = False) -> int:
    """Load the config (its key, type and value mistakes are answered before torch is imported), then train, or
    print it with ``print_config``."""
    from mmvicreg.config import config_yaml, load_config

    load_config(config_path, overrides, check_encoders=False)  # a quick first read: mistakes answered at once
    config = load_config(config_path, overrides)  # the encoders' names and options too (imports torch)
    if print_config:
        print(config_yaml(config), end="")
        return 0
    from mmvicreg.train import Preempted, train
    from mmvicreg.train.preempt import ignore_stop_signals

    try:
        train(config)
    except Preempted as e:  # a stop signal: the checkpoint of the last step is written
        ignore_stop_signals()  # a repeated signal while the interpreter exits must not replace the exit code
        print(f"mmvicreg: {e}", file=sys.stderr)
        return e.exit_code
    return 0


def _unknown_flags(command: str, extra: list[str], argv: Sequence[str]) -> str:
    """One line for arguments the command does not take; for ``train``/``sweep``, the config key a flag looks like."""
    if command in ("train", "sweep") and extra[0].startswith("-"):
        from mmvicreg.config.reference import flag_hint

        at = list(argv).index(extra[0]) if extra[0] in argv else -1
        after = argv[at + 1] if 0 <= at < len(argv) - 1 and not argv[at + 1].startswith("-") else None
        hint = flag_hint(extra[0], after)
        if hint:
            return hint
    return f"unrecognized arguments: {' '.join(extra)} (see mmvicreg {command} --help)"


def _run(args: argparse.Namespace) -> int:
    if args.command == "train":
        return run_train(args.config, args.overrides, args.print_config)
    if args.command != "eval":  # every other command's parser sets its `run`
        return args.run(args)
    from mmvicreg.cli.evaluate import COMMANDS

    COMMANDS[args.eval_command][1](args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; 2 and one line on stderr for a problem the user can fix."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        print(f"{parser.prog} {args.command}: error: {_unknown_flags(args.command, extra, argv)}", file=sys.stderr)
        return 2
    try:
        return _run(args)
    # ConfigError is a ValueError; NonFiniteLossError and CheckpointError are RuntimeErrors
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, ImportError) as e:
        if os.environ.get("MMVICREG_DEBUG"):
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2

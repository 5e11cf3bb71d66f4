"""The ``mmvicreg`` command line (also ``python -m mmvicreg`` and ``accelerate launch -m mmvicreg``).

    mmvicreg train CONFIG.yaml [dotted.key=value ...]
    mmvicreg eval retrieval --model RUN/model --format coco --images DIR --captions FILE [--protocol 1k]
    mmvicreg eval knn --model RUN/model --format digits [--compare-random-init]
    mmvicreg eval linear-probe --model RUN/model --format folder --train-images DIR --test-images DIR
    mmvicreg index build --model RUN/model --images DIR [--captions FILE.txt] --out INDEX
    mmvicreg search --index INDEX --text "a dog on the grass" [-k 10] [--json OUT]
    mmvicreg push --model RUN/model --repo-id ORG/NAME
    mmvicreg shards --format csv --captions FILE.csv --images DIR --out SHARDS [--per image]
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
    from mmvicreg.cli.evaluate import COMMANDS
    from mmvicreg.cli.hub import add_push_command
    from mmvicreg.cli.index import add_index_commands
    from mmvicreg.cli.shards import add_shards_command
    from mmvicreg.cli.sweep import add_sweep_command

    parser = argparse.ArgumentParser(prog="mmvicreg", description="Train any set of encoders with VICReg.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train branches with VICReg from a YAML config")
    train.add_argument("config", help="YAML config file (see examples/)")
    train.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. train.max_steps=100")
    evaluate = sub.add_parser("eval", help="evaluate an exported model").add_subparsers(dest="eval_command", required=True)
    for name, (add_arguments, _, help_) in COMMANDS.items():
        add_arguments(evaluate.add_parser(name, help=help_))
    add_push_command(sub)
    add_index_commands(sub)
    add_shards_command(sub)
    add_sweep_command(sub)
    return parser


def run_train(config_path: str, overrides: list[str]) -> int:
    from mmvicreg.config import load_config
    from mmvicreg.data.build import format_options
    from mmvicreg.train import train

    train(load_config(config_path, overrides, format_keys=format_options))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; 2 and one line on stderr for a problem the user can fix."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from mmvicreg.config import ConfigError
    from mmvicreg.train import CheckpointError, NonFiniteLossError

    try:
        if args.command == "train":
            return run_train(args.config, args.overrides)
        if args.command in ("push", "index", "search", "shards", "sweep"):
            return args.run(args)
        from mmvicreg.cli.evaluate import COMMANDS

        COMMANDS[args.eval_command][1](args)
    except (ConfigError, NonFiniteLossError, CheckpointError, OSError, ValueError, KeyError, TypeError,
            RuntimeError, ImportError) as e:
        if os.environ.get("MMVICREG_DEBUG"):
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2
    return 0

"""``mmvicreg sweep``: argument parsing for :mod:`mmvicreg.train.sweep`."""

from __future__ import annotations

import argparse
from typing import Any

from mmvicreg.cli.common import HelpFormatter


def add_sweep_command(sub: Any) -> None:
    """Register ``sweep`` on the top-level ``subparsers``; the parsed args carry ``run=run_sweep``."""
    p = sub.add_parser("sweep", help="run a config many times over a grid or an Optuna search; tabulate a metric",
                       description="Each trial is an ordinary run directory under --out; a sweep started again\n"
                                   "skips finished trials and resumes the others.",
                       formatter_class=HelpFormatter)
    p.add_argument("config", help="YAML config file (see examples/)")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides applied to every trial")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a key and its values (repeat for a Cartesian product; a+b=... sets keys a and b alike)")
    p.add_argument("--optuna", action="append", default=[], metavar="KEY=LOW:HIGH[:log]",
                   help="a key and its range for an Optuna search (needs --trials; pip install 'mmvicreg[sweep]')")
    p.add_argument("--trials", type=int, default=None, help="how many Optuna trials in all")
    p.add_argument("--metric", default="rsum", help="a dotted key of the runs' eval.json (default: rsum)")
    p.add_argument("--minimize", action="store_true", help="lower is better (default: higher)")
    p.add_argument("--jobs", type=int, default=1, help="trials run at a time, each in its own process")
    p.add_argument("--out", required=True, help="the sweep folder")
    p.set_defaults(run=run_sweep)


def run_sweep(args: argparse.Namespace) -> int:
    """Run (or resume) the sweep ``args`` describe and print its table of ``--metric``; 0 on success."""
    from mmvicreg.train.sweep import TABLE_MD, Search, Sweep, parse_grid, parse_ranges

    if args.grid and args.optuna:
        raise ValueError("give --grid or --optuna, not both")
    search = Search(grid=parse_grid(args.grid), ranges=parse_ranges(args.optuna), trials=args.trials)
    sweep = Sweep(args.out, args.config, search, metric=args.metric, overrides=args.overrides, jobs=args.jobs,
                  direction="minimize" if args.minimize else "maximize")
    sweep.run()
    print((sweep.folder / TABLE_MD).read_text())
    return 0

"""How long the command line takes to answer what needs no model: ``mmvicreg --help``, a subcommand's help,
``--version`` and a config mistake, in this checkout and in an earlier commit (the peer: the code before the
heavy libraries were imported only where they are used).

    python benchmarks/cli_latency.py [--before 45cff0e] [--repeats 5]

Each answer is a fresh ``python`` process (what a user waits for), timed from start to exit; the median of
``--repeats`` runs, the two trees alternating. The earlier commit is checked out with ``git worktree`` into a
temporary folder and removed after. Ratios > 1: this checkout answers faster.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _measure import write_section  # benchmarks/ is on sys.path

REPO = Path(__file__).resolve().parents[1]
RESULTS = str(REPO / "benchmarks" / "RESULTS.md")
RUN = "import sys; sys.path.insert(0, sys.argv[1]); from mmvicreg.cli import main; main(sys.argv[2:])"
# answer -> (argv, text the answer must hold: a run that failed some other way is not timed)
CASES = {
    "mmvicreg --help": (["--help"], "usage: mmvicreg"),
    "mmvicreg eval retrieval --help": (["eval", "retrieval", "--help"], "usage: mmvicreg eval retrieval"),
    "mmvicreg train CONFIG train.max_step=100 (a config mistake)": (
        ["train", str(REPO / "examples" / "quickstart.yaml"), "train.max_step=100"],
        "unknown config key 'train.max_step'"),
}


def seconds(tree: Path, argv: list[str], expect: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUN, str(tree), *argv], capture_output=True, text=True,
                          cwd=tempfile.gettempdir())
    took = time.perf_counter() - start
    if expect not in done.stdout + done.stderr:
        sys.exit(f"{tree}: mmvicreg {' '.join(argv)} did not answer {expect!r}:\n{done.stderr[-2000:]}")
    return took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default="45cff0e", help="the earlier commit to compare with")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), args.before],
                       check=True, capture_output=True)
        try:
            rows = []
            for name, (argv, expect) in CASES.items():
                times: dict[str, list[float]] = {"now": [], "before": []}
                for r in range(args.repeats):
                    for side in (("now", "before") if r % 2 == 0 else ("before", "now")):
                        times[side].append(seconds(REPO if side == "now" else before, argv, expect))
                now, then = statistics.median(times["now"]), statistics.median(times["before"])
                rows.append(f"| {name} | {then:.2f} | {now:.2f} | **{then / now:.1f}×** |")
                print(rows[-1], flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)], capture_output=True)
    command = "python benchmarks/cli_latency.py " + " ".join(sys.argv[1:])
    body = (f"`{command}` on {platform.machine()}, Python {platform.python_version()}; wall seconds from process "
            f"start to exit, median of {args.repeats}, before = commit {args.before}.\n\n"
            "| answer | before s | now s | before / now |\n|---|---:|---:|---:|\n" + "\n".join(rows) + "\n")
    print(body)
    write_section(RESULTS, "Command-line latency (cli_latency.py)", body)


if __name__ == "__main__":
    main()

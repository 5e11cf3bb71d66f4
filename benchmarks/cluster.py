"""Runs that survive clusters, measured on one machine: the long (``slow``) cases of issue 29.

    python benchmarks/cluster.py [--steps 16] [--every 4] [--seed N] [--write]
    python -m pytest -q -m slow tests/train/test_cluster.py     # the same cases as tests

On the tiny towers (tests/helpers/configs.py), CPU, gloo, one thread per process, every run a subprocess:

1. the reference: 2 processes on one node (``torchrun --nproc-per-node 2``), never interrupted;
2. a lost rank: the same under ``torchrun --max-restarts 1``, rank 1 SIGKILLed at a random step after the first
   checkpoint; the group restarts and resumes from the last checkpoint;
3. 2 nodes x 1 process: two ``torchrun --nnodes 2 --node-rank R`` meeting at a c10d rendezvous on localhost;
4. preemption of a group: torchrun (``--signals-to-handle SIGTERM,SIGINT,SIGUSR1``) gets SIGUSR1 at step 5 and
   forwards it; the processes stop after one step and its checkpoint (exit 75), then a new launch resumes.

Prints, for 2-4, the largest |difference| of any weight from run 1 (0: bit for bit) and what happened;
``--write`` puts the table in benchmarks/RESULTS.md. Exit 1 when 2 or 4 are not bit-identical or 3 is off by
more than 1e-6.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

from _measure import write_section  # benchmarks/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

from tests.helpers import cluster  # noqa: E402  (the scenarios the slow tests run)
from tests.helpers.cluster import identical, max_gap  # noqa: E402

SECTION = "Runs that survive clusters (cluster.py)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=16, help="optimiser steps of every run")
    parser.add_argument("--every", type=int, default=4, help="train.checkpoint_every")
    parser.add_argument("--seed", type=int, default=None, help="chooses the step at which rank 1 is killed")
    parser.add_argument("--write", action="store_true", help="write the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    kill_at = random.Random(seed).randint(args.every + 1, args.steps - 3)
    rows, ok = [], True
    with tempfile.TemporaryDirectory(prefix="mmvicreg-cluster-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        reference = cluster.two_processes(root, args.steps, args.every)
        rows.append(("2 processes, 1 node (reference)", "-", "uninterrupted", time.perf_counter() - t0))
        t0 = time.perf_counter()
        lost = cluster.lost_rank(root, args.steps, args.every, kill_at)
        gap = max_gap(lost["weights"], reference["weights"])
        ok &= identical(lost["weights"], reference["weights"])
        rows.append(("torchrun --max-restarts 1, rank 1 SIGKILLed", f"{gap:.1e}",
                     f"killed after step {lost['killed_after_step']} (seed {seed}); "
                     f"{'; '.join(lost['resumed'])}".replace(str(root) + "/", ""), time.perf_counter() - t0))
        t0 = time.perf_counter()
        nodes = cluster.two_nodes(root, args.steps, args.every)
        gap = max_gap(nodes["weights"], reference["weights"])
        ok &= gap <= 1e-6
        rows.append(("2 nodes x 1 process (c10d, localhost)", f"{gap:.1e}", "uninterrupted",
                     time.perf_counter() - t0))
        t0 = time.perf_counter()
        pre = cluster.preempted_group(root, args.steps, args.every, stop_at=5)
        gap = max_gap(pre["weights"], reference["weights"])
        ok &= identical(pre["weights"], reference["weights"])
        rows.append(("torchrun + SIGUSR1 to the launcher, then resume=true", f"{gap:.1e}",
                     f"stopped after step {pre['stopped_after_step']}, checkpoints {pre['checkpoints']}, "
                     f"workers exit 75 ({pre['log'].count('(exit code 75)')}), torchrun exit {pre['launcher_exit']}",
                     time.perf_counter() - t0))
    body = "\n".join([
        f"`python benchmarks/cluster.py --steps {args.steps} --every {args.every} --seed {seed}` — "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other jobs, CPU, gloo, "
        f"one thread per process; the tiny towers of tests/helpers/configs.py; max |Δw| against the reference "
        f"over every weight (0: bit for bit).",
        "",
        "| run | max abs Δw | what happened | wall s |",
        "|---|---|---|---|",
        *[f"| {name} | {gap} | {what} | {secs:.0f} |" for name, gap, what, secs in rows],
    ])
    print(body)
    if args.write:
        write_section(str(Path(__file__).parent / "RESULTS.md"), SECTION, body)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

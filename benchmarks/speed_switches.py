"""The step's speed switches against the eager step, as ratios measured in one run.

    python benchmarks/speed_switches.py [--workloads quickstart resnet224] [--steps 40] [--rounds 1]
        [--encoder resnet50] [--batch 16] [--section TITLE] [--no-write]

Each setting is one ``mmvicreg train`` process (no evaluation, no checkpoint): ``eager`` (channels-first, not
compiled), ``channels_last``, ``compile`` and both. Workloads: ``quickstart`` (examples/quickstart.yaml as it
is: test_resnet + GRU, 32 px, batch 128) and ``resnet224`` (the same image–text run with ``--encoder`` at 224 px
on 256 shapes scenes drawn at 224 px, batch ``--batch``: a ResNet step at the published resolution). The rate
of a setting is the median of the logged ``samples_per_s`` windows after the first one (which holds start-up
and compilation); ``wall s`` is the whole process, compilation included. The settings run in turn, the order
reversed each round; the ratios are setting / eager within each round, one per round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _measure import write_section  # benchmarks/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = str(Path(__file__).with_name("RESULTS.md"))
SETTINGS = {
    "eager": ["train.channels_last=false", "train.compile=false"],
    "channels_last": ["train.channels_last=true", "train.compile=false"],
    "compile": ["train.channels_last=false", "train.compile=true"],
    "compile+channels_last": ["train.channels_last=true", "train.compile=true"],
}


def workload_keys(name: str, args: argparse.Namespace) -> list[str]:
    if name == "quickstart":
        return []
    size = ["branches.image.transform.size=224", "data.train.size=224", "data.train.num_images=256"]
    return [f"branches.image.encoder.name={args.encoder}", f"train.batch_size={args.batch}", *size]


def run(workload: str, setting: str, args: argparse.Namespace, work: Path) -> tuple[float, float]:
    """(median samples/s after the first window, wall seconds) of one training process."""
    out = work / f"{workload}-{setting}-{time.monotonic_ns()}"
    keys = [f"output_dir={out}", "data.eval=null", f"train.max_steps={args.steps}", f"train.log_every={args.log_every}",
            "train.checkpoint_every=100000", "train.progress=false", "train.rankme_every=100000",
            *workload_keys(workload, args), *SETTINGS[setting]]
    cmd = [sys.executable, "-m", "mmvicreg", "train", str(ROOT / "examples" / "quickstart.yaml"), *keys]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{workload} {setting}: mmvicreg train failed:\n{done.stderr[-3000:]}")
    rates = [json.loads(line).get("samples_per_s") for line in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median([r for r in rates if r is not None][1:]), wall


def measure(workload: str, args: argparse.Namespace, work: Path) -> list[str]:
    """The table rows of one workload: each setting's best-round rate, wall time and ratio to eager."""
    rounds: list[dict[str, tuple[float, float]]] = []
    for r in range(args.rounds):
        order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
        rounds.append({s: run(workload, s, args, work) for s in order})
        print(workload, r, {s: round(v[0], 1) for s, v in rounds[-1].items()}, flush=True)
    rows = []
    for setting in SETTINGS:
        ratios = " / ".join(f"{rnd[setting][0] / rnd['eager'][0]:.2f}×" for rnd in rounds)
        rate = max(rnd[setting][0] for rnd in rounds)
        wall = min(rnd[setting][1] for rnd in rounds)
        rows.append(f"| {workload} | {setting} | {rate:.1f} | {wall:.0f} | **{ratios}** |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", nargs="+", default=["quickstart", "resnet224"], choices=["quickstart", "resnet224"])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--log-every", type=int, default=5)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--encoder", default="resnet50")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--section", default="Speed switches: compile and channels-last against eager (speed_switches.py)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.workloads:
            rows += measure(workload, args, Path(tmp))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.machine() + " CPU"
    body = (f"`python benchmarks/speed_switches.py {' '.join(sys.argv[1:])}` on {device}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}: median samples/s after the first log window, {args.steps} steps; resnet224 = "
            f"{args.encoder} at 224 px + GRU, batch {args.batch}.\n\n"
            "| workload | setting | samples/s (best round) | wall s | / eager, each round |\n|---|---|---:|---:|---:|\n" + "\n".join(rows) + "\n")
    print(body)
    if not args.no_write:
        write_section(RESULTS, args.section, body)


if __name__ == "__main__":
    main()

"""End-to-end training samples/s of a VICReg image recipe: colour augmentation in the workers or on the device.

    python benchmarks/end_to_end.py --images DIR [--encoder resnet50] [--batch 256] [--workers 16] [--steps 40]
        [--expander 8192-8192-8192] [--modes workers device] [--size 224] [--precision bf16] [--label TEXT]
        [--extra KEY=VALUE ...] [--section TITLE] [--no-write]

Runs ``mmvicreg train`` on the published siamese recipe (``examples/imagenet_resnet50.yaml``: two views, one
ResNet-50 and one 8192-8192-8192 expander, LARS) over the JPEGs of ``DIR`` (one class folder is made of them,
repeated to ``--batch * --steps`` samples by symbolic links), once per ``--modes`` entry:
``workers`` = the whole view in the DataLoader workers (``transform.augment_on: workers``), ``device`` = the
workers decode, crop and flip, and the colour half runs on the batch on the device (``augment_on: device``).
Reports the median of the logged ``samples_per_s`` after the first log window (start-up excluded) and the ratio
device / workers. ``--label`` names the row (e.g. the checkout measured), so that a second run with another
``PYTHONPATH`` can be compared in the same table.
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
from pathlib import Path

import torch
from _measure import write_section  # benchmarks/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = str(Path(__file__).with_name("RESULTS.md"))


def make_folder(images: Path, total: int, out: Path) -> Path:
    """``out/all/NNNNNN.jpg``: the JPEGs of ``images`` linked in turn until there are ``total``."""
    files = sorted(p for p in images.rglob("*.jpg"))
    if not files:
        sys.exit(f"no .jpg files under {images}")
    folder = out / "all"
    folder.mkdir(parents=True)
    for i in range(total):
        (folder / f"{i:06d}.jpg").symlink_to(files[i % len(files)].resolve())
    return out


def run(mode: str, data: Path, args: argparse.Namespace, work: Path) -> float:
    out = work / f"run_{mode}"
    keys = [f"output_dir={out}", f"data.train.images={data}", "data.eval=null", f"data.workers={args.workers}",
            f"train.batch_size={args.batch}", f"train.max_steps={args.steps}", "train.log_every=5",
            "train.checkpoint_every=100000", f"train.mixed_precision={args.precision}", "train.warmup_epochs=0",
            f"branches.view1.encoder.name={args.encoder}", f"branches.view1.expander={args.expander}", f"data.pin_memory={str(torch.cuda.is_available()).lower()}"]
    if mode != "legacy":  # a checkout from before issue 17 has no augment_on
        keys += [f"branches.{b}.transform.augment_on={mode}" for b in ("view1", "view2")]
    keys += [f"branches.{b}.transform.size={args.size}" for b in ("view1", "view2")]
    keys += args.extra
    cmd = [sys.executable, "-m", "mmvicreg", "train", str(ROOT / "examples" / "imagenet_resnet50.yaml"), *keys]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=work)  # not the checkout: PYTHONPATH picks the code
    if done.returncode != 0:
        sys.exit(f"{mode}: mmvicreg train failed:\n{done.stderr[-3000:]}")
    rates = [json.loads(line).get("samples_per_s") for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r for r in rates if r is not None][1:]  # the first window holds worker start-up
    return statistics.median(rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--encoder", default="resnet50")
    p.add_argument("--expander", default="8192-8192-8192", help="a smaller one makes a CPU run input-bound")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--modes", nargs="+", default=["workers", "device"])
    p.add_argument("--label", default="this checkout")
    p.add_argument("--extra", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for every run (e.g. train.channels_last=false), repeatable")
    p.add_argument("--section", default="End-to-end training samples/s (end_to_end.py)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    rows, rates = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_folder(args.images, args.batch * (args.steps + 2), Path(tmp) / "data")
        for mode in args.modes:
            rates[mode] = run(mode, data, args, Path(tmp))
            rows.append(f"| {args.label} | {mode} | {rates[mode]:.1f} |")
            print(rows[-1], flush=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.machine() + " CPU"
    ratio = (f"\n\ndevice / workers: **{rates['device'] / rates['workers']:.2f}×**"
             if {"device", "workers"} <= set(rates) else "")
    body = (f"`python benchmarks/end_to_end.py {' '.join(sys.argv[1:])}` on {device}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}: {args.encoder} (expander {args.expander}) siamese VICReg recipe, batch {args.batch}, {args.size} px, "
            f"{args.workers} workers, {args.precision}, median samples/s over {args.steps} steps after start-up."
            f"\n\n| code | augment_on | samples/s |\n|---|---|---:|\n" + "\n".join(rows) + ratio + "\n")
    print(body)
    if not args.no_write:
        write_section(RESULTS, args.section, body)


if __name__ == "__main__":
    main()

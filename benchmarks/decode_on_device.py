"""``data.decode_on: device`` against decoding in CPU workers: loader samples per second, ratios from one run.

    python benchmarks/decode_on_device.py [--workers 4 16] [--batch 64] [--epochs 3] [--transform vicreg]
        [--images DIR] [--samples N] [--write]

The training loader as ``mmvicreg train`` builds it (``make_loader`` over a ``csv`` source of the JPEGs of
``--images``, by default the coco-mini val2017 ones, about 640×480, from ``../shared/data``;
``branch_preprocessors`` and ``DeviceInput``), two image branches
at 224 px: ``vicreg`` (view 1 and view 2, ``augment_on: device``: the workers crop and flip, the device runs the
colour half, so the two paths differ only in where the JPEG decodes) or ``light`` (one branch, crop only: the
decode's share is largest). An epoch is ``--samples`` items, the JPEGs in turn (default: four batches per worker of
the most workers measured, and at least each JPEG once: an epoch of a few batches leaves most workers idle, which
made the first GPU table of this script compare two busy workers with two). Each row iterates ``--epochs`` epochs
after one warm-up batch and counts samples that reach the device (CUDA synchronised at the end).

Rows: ``workers`` decode with each of ``--workers`` CPU worker processes (default: 4 and 16 where the machine
has that many cores, else 0 .. its core count), then ``device`` decode (one batched ``torchvision.io.decode_jpeg``
per batch on CUDA when there is one, else on the CPU in the main process) with 0 workers and with the most
workers measured. The ratio columns divide each row by each ``workers`` row of the same run. Nothing is
estimated: a row that did not run is not printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from _measure import write_section  # benchmarks/ is on sys.path

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-mini" / "val2017"
RESULTS = str(Path(__file__).with_name("RESULTS.md"))
TITLE = "Decode on the device against CPU workers (data.decode_on)"


def declarations(transform: str) -> dict:
    from mmvicreg.preprocessing import ImagePreprocessing

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    if transform == "light":
        return {"image": ImagePreprocessing("image", 224, mean, std, "bicubic", 0.875, "light", "eval", "workers")}
    return {f"view{v}": ImagePreprocessing("image", 224, mean, std, "bicubic", 0.875, f"vicreg_view{v}", "eval",
                                           "device") for v in (1, 2)}


def samples_per_second(csv: Path, decode_on: str, workers: int, args: argparse.Namespace, device: str) -> float:
    """Samples per second through the loader, ``args.epochs`` epochs after one warm-up batch."""
    from mmvicreg.data import DeviceInput, branch_preprocessors, csv_captions, make_loader

    declared = declarations(args.transform)
    loader = make_loader(csv_captions(csv, csv.parent / "images"), branch_preprocessors(declared, True, decode_on),
                         batch_size=args.batch, train=True, workers=workers, seed=0, persistent_workers=True,
                         pin_memory=device == "cuda", device_stage=DeviceInput(declared, True, device))
    next(iter(loader))  # workers started, first batch through
    if device == "cuda":
        torch.cuda.synchronize()
    count, start = 0, time.perf_counter()
    for _ in range(args.epochs):
        for batch in loader:
            count += len(next(iter(batch.values())))
    if device == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def main() -> None:
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, nargs="+",
                   default=[w for w in (4, 16) if w <= cores] or list(range(0, cores + 1)))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--transform", choices=("vicreg", "light"), default="vicreg")
    p.add_argument("--images", type=Path, default=IMAGES, help="a folder of JPEGs (default: coco-mini val2017)")
    p.add_argument("--samples", type=int, default=None, help="items per epoch, the JPEGs in turn (default: 4 batches per worker)")
    p.add_argument("--write", action="store_true", help=f"write the table to {RESULTS}")
    args = p.parse_args()
    torch.set_num_threads(1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    names = sorted(f.name for f in args.images.glob("*.jpg"))
    if not names:
        sys.exit(f"no .jpg files in {args.images}: give a folder of JPEGs with --images")
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "captions.csv"
        count = args.samples or max(len(names), 4 * args.batch * max(args.workers))
        items = [names[i % len(names)] for i in range(count)]
        folder = Path(tmp) / "images"  # one link per item: a source keeps one sample per file name
        folder.mkdir()
        for i, name in enumerate(items):
            (folder / f"{i:06d}.jpg").symlink_to((args.images / name).resolve())
        csv.write_text("image,caption\n" + "".join(f"{i:06d}.jpg,a photo\n" for i in range(len(items))))
        rows = [("workers", w, samples_per_second(csv, "workers", w, args, device)) for w in args.workers]
        rows += [("device", w, samples_per_second(csv, "device", w, args, device)) for w in sorted({0, max(args.workers)})]
    machine = (f"{torch.cuda.get_device_name()} (CUDA)" if device == "cuda" else
               f"CPU only ({cores} cores, {platform.processor() or platform.machine()}): no GPU lent, the device "
               f"decode runs on the CPU in the main process")
    command = "python benchmarks/decode_on_device.py " + " ".join(sys.argv[1:])
    refs = [(w, s) for kind, w, s in rows if kind == "workers"]
    lines = [f"`{command}` on {machine}; {len(names)} JPEGs of {args.images.name}, {len(items)} per epoch, batch {args.batch}, "
             f"transform {args.transform} at 224 px, {args.epochs} epochs per row, torch {torch.__version__}.", "",
             "| decode on | loader workers | samples/s | " + " | ".join(f"÷ workers decode, {w} workers" for w, _ in refs)
             + " |", "|---|---|---|" + "---|" * len(refs)]
    for kind, w, s in rows:
        lines.append(f"| {kind} ({device if kind == 'device' else 'cpu'}) | {w} | {s:.1f} | "
                     + " | ".join(f"{s / r:.2f}×" for _, r in refs) + " |")
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(RESULTS, f"{TITLE}, {args.transform}" + (" (cuda)" if device == "cuda" else ""), text)


if __name__ == "__main__":
    main()

"""Decode + augment throughput of the data pipeline on the real Flickr8k JPEGs, with 0 and 2 loader workers.

    python benchmarks/data_throughput.py                    # writes a section of benchmarks/RESULTS.md
    python benchmarks/data_throughput.py --images 300 --no-write

For each recipe, images/s through ``make_loader`` (JPEG decode, the branch transforms, collation):
  vicreg  two VICReg views at 224 px per image (siamese pretraining: both views count as one image);
  light   one mild crop at 224 px (image–text training).
Worker start-up is excluded (the clock starts at the first batch). The main process runs torch on one thread,
as each worker does, so "2 workers / 0 workers" is the speed-up from a second process: at most 2 on two
cores, and less when other jobs share them. Each figure is the best of ``--repeats`` interleaved runs (other
jobs only ever slow a run down). Also times the generation of the 10,000-image ``shapes`` training split.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

from _measure import write_section

from mmvicreg.data import csv_captions, make_loader
from mmvicreg.data.sources import shapes as shapes_module
from mmvicreg.data.transforms import light_train, vicreg_view

FLICKR = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k-1k"
RECIPES = {
    "vicreg": lambda size: {"view1": ("image", vicreg_view(size, 1), None),
                            "view2": ("image", vicreg_view(size, 2), None)},
    "light": lambda size: {"image": ("image", light_train(size), None)},
}


def images_per_second(source, preprocessors, workers: int, batch_size: int) -> float:
    loader = make_loader(source, preprocessors, batch_size=batch_size, train=True, workers=workers, pin_memory=False,
                         seed=0)
    it = iter(loader)
    next(it)  # start-up (worker processes, first decode) is not throughput
    t0, seen = time.perf_counter(), 0
    for batch in it:
        seen += len(next(iter(batch.values())))
    return seen / (time.perf_counter() - t0)


def shapes_seconds() -> float:
    shapes_module._generate.cache_clear()
    t0 = time.perf_counter()
    shapes_module.generate_shapes("train", 10_000, 64, 0)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="how many Flickr images per measurement")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs per figure")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--no-write", action="store_true", help="print only; do not update benchmarks/RESULTS.md")
    args = parser.parse_args()
    if not (FLICKR / "captions.csv").is_file():
        sys.exit(f"the Flickr8k subset is absent (looked in {FLICKR}); see ../shared/data/README.md")
    torch.set_num_threads(1)
    source = csv_captions(FLICKR / "captions.csv", FLICKR / "images")
    source = Subset(source, range(min(args.images, len(source))))

    rows = []
    for recipe in args.recipes:
        pre = RECIPES[recipe](args.size)
        rates = {0: 0.0, 2: 0.0}
        for _ in range(args.repeats):
            for w in rates:
                rates[w] = max(rates[w], images_per_second(source, pre, w, args.batch_size))
        rows.append((recipe, rates[0], rates[2], rates[2] / rates[0]))
        print(f"{recipe:7s} 0 workers {rates[0]:7.1f} img/s   2 workers {rates[2]:7.1f} img/s   "
              f"ratio 2/0 = {rates[2] / rates[0]:.2f}", flush=True)
    gen = shapes_seconds()
    print(f"shapes: 10,000 train scenes at 64 px generated in {gen:.1f} s", flush=True)

    if not args.no_write:
        lines = [
            f"Flickr8k-1k JPEGs (mostly about 200×150, some 500×375), {len(source)} images, {args.size} px, "
            f"batch {args.batch_size}, best of {args.repeats}; {platform.machine()}, {os.cpu_count()} CPUs shared "
            f"with other jobs, 1 torch thread per process, torch {torch.__version__} "
            f"(`python benchmarks/data_throughput.py`).",
            "",
            "| recipe | 0 workers (img/s) | 2 workers (img/s) | 2 / 0 |",
            "|---|---:|---:|---:|",
            *[f"| {r} | {a:.1f} | {b:.1f} | {c:.2f} |" for r, a, b, c in rows],
            "",
            f"`shapes` train split (10,000 scenes, 64 px): generated in {gen:.1f} s.",
        ]
        write_section(str(Path(__file__).parent / "RESULTS.md"), "Data throughput (decode + augment)", "\n".join(lines))


if __name__ == "__main__":
    main()

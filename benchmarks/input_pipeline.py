"""Decode + two VICReg views per core: this library's path against lightly's, on real JPEGs (issue 17's baseline).

    python benchmarks/input_pipeline.py [--images 150] [--repeats 3]

One thread (``torch.set_num_threads(1)``), one process: pairs per second of "read the JPEG file, decode it,
make view 1 and view 2 at 224 px" on the coco-mini val2017 JPEGs (about 640×480) and the flickr8k-1k ones
(about 500×375 and smaller), both from ``../shared/data``. Both sides draw the published distribution
(Bardes et al. 2022): ours is :func:`mmvicreg.data.decode_views` (exactly what the training loader's workers
produce); lightly's is two ``VICRegViewTransform`` s set to the published view 1 (blur 1.0, solarise 0.0) and
view 2 (blur 0.1, solarise 0.2), colour jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale 0.2 (lightly's
defaults give that jitter). lightly is not a dependency: without it only ours is measured. Best of
``--repeats`` interleaved rounds; the ratio is ours / lightly's.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
from _measure import write_section  # benchmarks/ is on sys.path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {"coco-mini": SHARED / "coco-mini" / "val2017", "flickr8k-1k": SHARED / "flickr8k-1k" / "images"}
RESULTS = str(Path(__file__).with_name("RESULTS.md"))


def ours():
    from mmvicreg.data import decode_views

    return lambda path: decode_views(path, ("vicreg_view1", "vicreg_view2"), 224)


def lightly():
    try:
        from lightly.transforms import VICRegViewTransform
    except ImportError:
        return None
    from PIL import Image

    views = [VICRegViewTransform(gaussian_blur=1.0, solarize_prob=0.0), VICRegViewTransform(gaussian_blur=0.1,
                                                                                             solarize_prob=0.2)]

    def pair(path):
        with Image.open(path) as img:
            image = img.convert("RGB")
        return [view(image) for view in views]

    return pair


def pairs_per_second(fn, paths) -> float:
    start = time.perf_counter()
    for path in paths:
        fn(path)
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=150)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    missing = [str(d) for d in SETS.values() if not d.is_dir()]
    if missing:
        sys.exit(f"{missing[0]} is absent: this benchmark reads the real JPEGs of ../shared/data")
    torch.set_num_threads(1)
    sides = {"mmvicreg": ours(), "lightly": lightly()}
    sides = {k: v for k, v in sides.items() if v is not None}
    rows = []
    for name, folder in SETS.items():
        paths = sorted(folder.glob("*.jpg"))[: args.images]
        best = dict.fromkeys(sides, 0.0)
        for r in range(args.repeats):
            for side in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                best[side] = max(best[side], pairs_per_second(sides[side], paths))
        ratio = f"**{best['mmvicreg'] / best['lightly']:.2f}×**" if "lightly" in best else "—"
        rows.append(f"| {name} ({len(paths)} JPEGs) | {best['mmvicreg']:.1f} | {best.get('lightly', 0):.1f} | {ratio} |")
        print(rows[-1], flush=True)
    command = "python benchmarks/input_pipeline.py " + " ".join(sys.argv[1:])
    body = (f"`{command}` on {platform.machine()}, 1 torch thread, torch {torch.__version__}; decode + both "
            f"published views at 224 px, best of {args.repeats}.\n\n| images | mmvicreg pairs/s | lightly pairs/s "
            f"| mmvicreg / lightly |\n|---|---:|---:|---:|\n" + "\n".join(rows) + "\n")
    print(body)
    write_section(RESULTS, "Input pipeline per core (input_pipeline.py)", body)


if __name__ == "__main__":
    main()

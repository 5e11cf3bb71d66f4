"""Decode + two VICReg views per core: this library's path against lightly's and its own earlier path, on real JPEGs.

    python benchmarks/input_pipeline.py [--images 150] [--repeats 3]

One thread (``torch.set_num_threads(1)``), one process: pairs per second of "read the JPEG file, decode it,
make view 1 and view 2 at 224 px" on the coco-mini val2017 JPEGs (about 640×480) and the flickr8k-1k ones
(about 500×375 and smaller), both from ``../shared/data``. Both sides draw the published distribution
(Bardes et al. 2022): ours is :func:`mmvicreg.data.decode_views` (exactly what the training loader's workers
produce); lightly's is two ``VICRegViewTransform`` s set to the published view 1 (blur 1.0, solarise 0.0) and
view 2 (blur 0.1, solarise 0.2), colour jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale 0.2 (lightly's
defaults give that jitter). lightly is not a dependency: without it that column is empty. ``before`` is this
library's path before issue 17 (full PIL decode, every op on PIL, float normalisation in the worker), rebuilt
here from the same torchvision classes. ``device share`` is what the workers still do with ``transform.augment_on:
device`` (decode, crop, flip; the colour half runs on the GPU batch, measured by ``end_to_end.py``): not a
like-for-like row, shown for scale. Best of ``--repeats`` interleaved rounds; ratios are to lightly's.
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


def before():
    from PIL import Image, ImageFilter
    from torchvision.transforms import InterpolationMode, v2

    from mmvicreg.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    class GaussianBlurPIL(v2.GaussianBlur):  # the published blur: PIL's, radius = σ
        def transform(self, inpt, params):
            return inpt.filter(ImageFilter.GaussianBlur(radius=params["sigma"][0]))

    def view(blur_p, solarize_p):
        return v2.Compose([
            v2.RandomResizedCrop(224, scale=(0.08, 1.0), interpolation=InterpolationMode.BICUBIC, antialias=True),
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([GaussianBlurPIL(kernel_size=23, sigma=(0.1, 2.0))], p=blur_p),
            v2.RandomSolarize(threshold=128, p=solarize_p),
            v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
        ])

    views = [view(1.0, 0.0), view(0.1, 0.2)]

    def pair(path):
        with Image.open(path) as img:
            image = img.convert("RGB")
        return [v(image) for v in views]

    return pair


def device_share():
    from torchvision.transforms import v2

    from mmvicreg.data.sources.encoded import EncodedImage
    from mmvicreg.data.transforms import vicreg_crop

    crop = v2.Compose(vicreg_crop(224))

    def pair(path):
        image = EncodedImage.open(path)
        return [crop(image), crop(image)]

    return pair


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
    from mmvicreg.data.opencv_kernels import use_one_thread

    torch.set_num_threads(1)
    use_one_thread()  # OpenCV as the loader workers run it (importing mmvicreg no longer sets it)
    sides = {"mmvicreg": ours(), "lightly": lightly(), "before": before(), "device share": device_share()}
    sides = {k: v for k, v in sides.items() if v is not None}
    rows = []
    for name, folder in SETS.items():
        paths = sorted(folder.glob("*.jpg"))[: args.images]
        best = dict.fromkeys(sides, 0.0)
        for r in range(args.repeats):
            for side in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                best[side] = max(best[side], pairs_per_second(sides[side], paths))
        ratio = (lambda side: f"{best[side] / best['lightly']:.2f}×" if "lightly" in best else "—")
        rows.append(f"| {name} ({len(paths)} JPEGs) | {best['mmvicreg']:.1f} | {best.get('lightly', 0):.1f} | "
                    f"**{ratio('mmvicreg')}** | {best['before']:.1f} ({ratio('before')}) | "
                    f"{best['mmvicreg'] / best['before']:.2f}× | {best['device share']:.1f} ({ratio('device share')}) |")
        print(rows[-1], flush=True)
    command = "python benchmarks/input_pipeline.py " + " ".join(sys.argv[1:])
    body = (f"`{command}` on {platform.machine()}, 1 torch thread, torch {torch.__version__}; decode + both "
            f"published views at 224 px, best of {args.repeats}.\n\n| images | mmvicreg pairs/s | lightly pairs/s "
            f"| mmvicreg / lightly | before pairs/s (/ lightly) | mmvicreg / before | device share pairs/s (/ lightly) |"
            f"\n|---|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n")
    print(body)
    write_section(RESULTS, "Input pipeline per core (input_pipeline.py)", body)


if __name__ == "__main__":
    main()

"""Each op of a VICReg view's colour half on a 224 px crop, per core: OpenCV kernels against PIL and torchvision.

    python benchmarks/colour_ops.py [--repeats 200]

One thread, one process, the crop of a real coco-mini JPEG (``../shared/data``) resized to 224×224. Three backends
of the same torchvision v2 functionals: ``opencv`` (this library's kernels, :mod:`mmvicreg.data.opencv_kernels`,
on a ``CVImage``), ``PIL`` (what the published code and lightly run) and ``tensor`` (torchvision's uint8 tensor
kernels). The blur is σ = 1.05 (the middle of the published 0.1–2): torchvision's 23-tap kernel, and for PIL its own
``ImageFilter.GaussianBlur(radius=σ)`` as the published code calls it. Prints the median time per call and the ratios to PIL and to tensor.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch
from _measure import median_seconds, write_section  # benchmarks/ is on sys.path
from PIL import Image, ImageFilter
from torchvision.transforms.v2 import functional as F

from mmvicreg.data.opencv_kernels import as_cv_image, use_one_thread

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-mini" / "val2017"
RESULTS = str(Path(__file__).with_name("RESULTS.md"))
OPS = {
    "brightness": (F.adjust_brightness, (1.2,)),
    "contrast": (F.adjust_contrast, (1.2,)),
    "saturation": (F.adjust_saturation, (1.1,)),
    "hue": (F.adjust_hue, (0.05,)),
    "grayscale": (F.rgb_to_grayscale, (3,)),
    "gaussian blur": (F.gaussian_blur, ([23, 23], [1.05, 1.05])),
    "solarize": (F.solarize, (128,)),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=200)
    args = p.parse_args()
    files = sorted(SHARED.glob("*.jpg"))
    if not files:
        sys.exit(f"{SHARED} has no JPEGs: this benchmark reads a real coco-mini image from ../shared/data")
    torch.set_num_threads(1)
    use_one_thread()  # OpenCV as the loader workers run it
    pil = Image.open(files[0]).convert("RGB").resize((224, 224), Image.BICUBIC)
    tensor = F.pil_to_tensor(pil)
    cv_image = as_cv_image(tensor.permute(1, 2, 0).contiguous().permute(2, 0, 1))
    rows = []
    for name, (functional, op_args) in OPS.items():
        ms = {side: 1e3 * median_seconds(lambda: functional(image, *op_args), args.repeats)
              for side, image in (("opencv", cv_image), ("PIL", pil), ("tensor", tensor))}
        if name == "gaussian blur":  # torchvision blurs a PIL image as a tensor; the published code calls PIL's own
            ms["PIL"] = 1e3 * median_seconds(lambda: pil.filter(
                ImageFilter.GaussianBlur(radius=1.05)), args.repeats)
        rows.append(f"| {name} | {ms['opencv']:.3f} | {ms['PIL']:.3f} | {ms['tensor']:.3f} | "
                    f"**{ms['PIL'] / ms['opencv']:.1f}×** | {ms['tensor'] / ms['opencv']:.1f}× |")
        print(rows[-1], flush=True)
    command = "python benchmarks/colour_ops.py " + " ".join(sys.argv[1:])
    body = (f"`{command}` on {platform.machine()}, 1 thread, torch {torch.__version__}; median ms per call on a "
            f"224 px RGB crop.\n\n| op | opencv ms | PIL ms | tensor ms | PIL / opencv | tensor / opencv |\n"
            f"|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n")
    print(body)
    write_section(RESULTS, "Colour ops per core (colour_ops.py)", body)


if __name__ == "__main__":
    main()

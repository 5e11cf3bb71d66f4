"""Peak memory of k-NN evaluation against the size of the reference set: it grows by the features, no more.

    python benchmarks/knn_memory.py                    # writes a section of benchmarks/RESULTS.md
    python benchmarks/knn_memory.py --sizes 1000 5000 --no-write

Each size runs ``evaluate_knn`` in its own process on generated labelled images (drawn on demand from their
index, so the images themselves never sit in memory), with ``--dim``-wide features (timm's small
``test_resnet`` at 16 px with a ``--dim``-wide linear expander, k-NN on its output), the same 500 test images, and reports the peak resident memory the evaluation added. Between two sizes
the peak should differ by the reference features' size, (n₂ − n₁)·d·4 bytes; the script prints the ratio of
the measured difference to that size (1.00 = exactly the features).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from _measure import peak_extra_mb, run_worker, write_section

SIZE, TEST = 16, 500


class Generated:
    """``n`` labelled RGB images made from their index (10 classes: a class-dependent mean colour plus noise)."""

    def __init__(self, n: int, offset: int = 0) -> None:
        self.n, self.offset = n, offset
        self.labels = [(i + offset) % 10 for i in range(n)]

    @property
    def num_images(self) -> int:
        return self.n

    def load_image(self, i: int):
        from PIL import Image

        rng = np.random.default_rng(i + self.offset)
        base = 20 + 22 * self.labels[i]
        pixels = np.clip(base + rng.normal(0, 30, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
        return Image.fromarray(pixels, "RGB")


def worker(n: int, dim: int) -> dict:
    import torch

    from mmvicreg import JointEmbedding
    from mmvicreg.evaluation import evaluate_knn

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = JointEmbedding.from_config({"image": {"encoder": "test_resnet", "expander": str(dim),
                                                  "transform": {"size": SIZE}}})
    reference, test = Generated(n), Generated(TEST, offset=10**6)
    knn = dict(ks=(20,), layer="embedding", batch_size=256)
    evaluate_knn(model, Generated(512), Generated(16, offset=10**6), "image", **knn)  # warm the allocator up
    out = {}
    out["peak_mb"] = peak_extra_mb(lambda: out.update(evaluate_knn(model, reference, test, "image", **knn)))
    return {"n": n, "peak_mb": out["peak_mb"], "top1": out["top1_k20"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs=2, default=[2000, 20000])
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.dim)))
        return
    small, large = (run_worker(__file__, [str(n), "--dim", str(args.dim)]) for n in args.sizes)
    for r in (small, large):
        if "error" in r:
            sys.exit(f"worker failed: {r['error']}")
    features_mb = (args.sizes[1] - args.sizes[0]) * args.dim * 4 / 2**20
    measured_mb = large["peak_mb"] - small["peak_mb"]
    body = (
        f"`python benchmarks/knn_memory.py --sizes {args.sizes[0]} {args.sizes[1]} --dim {args.dim}`: `evaluate_knn` "
        f"on generated images, d = {args.dim}, {TEST} test images, each size in its own process.\n\n"
        f"| reference images | peak added (MiB) | k-NN top-1 |\n|---|---|---|\n"
        f"| {small['n']} | {small['peak_mb']:.1f} | {small['top1']:.1f} |\n"
        f"| {large['n']} | {large['peak_mb']:.1f} | {large['top1']:.1f} |\n\n"
        f"Difference {measured_mb:.1f} MiB against the added features' {features_mb:.1f} MiB: "
        f"**{measured_mb / features_mb:.2f}×** the features (1.00 = the features and nothing else).\n"
    )
    print(body)
    if not args.no_write:
        write_section(str(Path(__file__).with_name("RESULTS.md")), "k-NN evaluation memory", body)


if __name__ == "__main__":
    main()

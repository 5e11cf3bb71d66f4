"""Does the reduced-DCT JPEG decode change what a model learns? The same small training run with the shortcut
(each crop decoded at the largest 1/2, 1/4, 1/8 DCT scaling that still covers it) and with a full decode, 3 seeds
each, scored by held-out retrieval.

    python experiments/decode_shortcut.py [--steps 300] [--seeds 0 1 2]

The run: the quickstart's towers (test_resnet + GRU, 1024-1024 expanders) trained on the real JPEGs of the first
800 images of ../shared/data/flickr8k-1k with the published VICReg view (``vicreg_view1``: random resized crop,
flip, colour) at 64 px, evaluated on the other 200 images and their 1,000 captions (5k protocol). The full
decode is the same code with the DCT scalings limited to 1 (``mmvicreg.data.sources.encoded.REDUCTIONS``, read
each time a crop is decoded); evaluation decodes alike in both arms. Writes docs/RESULTS.md §7.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from pathlib import Path

from common import ROOT, mean_std, publish, run  # experiments/ is on sys.path

FLICKR = ROOT.parent / "shared" / "data" / "flickr8k-1k"
TRAIN_IMAGES = 800  # the rest are the test split


def split_captions(folder: Path) -> tuple[Path, Path]:
    """flickr8k-1k's captions.csv as train.csv (its first 800 images) and test.csv (the rest), in ``folder``."""
    with open(FLICKR / "captions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    order = list(dict.fromkeys(r["image"] for r in rows))
    train_set = set(order[:TRAIN_IMAGES])
    paths = (folder / "train.csv", folder / "test.csv")
    for path, keep in zip(paths, (lambda i: i in train_set, lambda i: i not in train_set)):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["image", "caption"])
            writer.writeheader()
            writer.writerows(r for r in rows if keep(r["image"]))
    return paths


def overrides(steps: int, seed: int, train_csv: Path, test_csv: Path) -> list[str]:
    return [
        "data.train.format=csv", f"data.train.captions={train_csv}", f"data.train.images={FLICKR / 'images'}",
        "data.eval.format=csv", f"data.eval.captions={test_csv}", f"data.eval.images={FLICKR / 'images'}",
        "data.workers=0",
        "branches.image.transform.train=vicreg_view1", "branches.image.transform.size=64",
        f"train.max_steps={steps}", "train.batch_size=64", f"train.seed={seed}", "train.checkpoint_every=100000",
        "train.rankme_every=100000", "train.warmup_steps=30",
    ]


def one_arm(full_decode: bool, steps: int, seeds: list[int], splits: tuple[Path, Path]) -> list[dict[str, float]]:
    from mmvicreg.data.sources import encoded

    shortcut = encoded.REDUCTIONS
    encoded.REDUCTIONS = (1,) if full_decode else shortcut
    try:
        scores = []
        for seed in seeds:
            result = run("quickstart.yaml", overrides(steps, seed, *splits))["eval"]
            scores.append({k: float(result[k]) for k in ("i2t_R@1", "t2i_R@1", "rsum")})
            print(("full" if full_decode else "reduced"), seed, scores[-1], flush=True)
        return scores
    finally:
        encoded.REDUCTIONS = shortcut


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    if not FLICKR.is_dir():
        sys.exit(f"{FLICKR} is absent: this experiment reads the real JPEGs of ../shared/data")
    with tempfile.TemporaryDirectory() as tmp:
        splits = split_captions(Path(tmp))
        arms = {"reduced DCT decode (shipped)": one_arm(False, args.steps, args.seeds, splits),
                "full decode": one_arm(True, args.steps, args.seeds, splits)}
    rows = [f"| {name} | {mean_std([s['i2t_R@1'] for s in scores])} | {mean_std([s['t2i_R@1'] for s in scores])} | "
            f"{mean_std([s['rsum'] for s in scores])} |" for name, scores in arms.items()]
    reduced, full = ([s["rsum"] for s in scores] for scores in arms.values())
    diff = [r - f for r, f in zip(reduced, full)]
    command = "python experiments/decode_shortcut.py " + " ".join(sys.argv[1:])
    body = (f"`{command}`: {args.steps} steps, batch 64, seeds {args.seeds}; trained on flickr8k-1k's JPEGs "
            f"(vicreg_view1 at 64 px, first 800 images), scored on the other 200 (5k protocol). "
            f"Mean ± std over seeds.\n\n"
            "| training decode | i2t R@1 | t2i R@1 | rsum |\n|---|---:|---:|---:|\n" + "\n".join(rows) + "\n\n"
            f"rsum, reduced − full, per seed: {', '.join(f'{d:+.1f}' for d in diff)} "
            f"(mean {statistics.mean(diff):+.1f}"
            + (f", std {statistics.stdev(diff):.1f}" if len(diff) > 1 else "") + ").\n")
    publish("7. The reduced JPEG decode against a full decode", body)


if __name__ == "__main__":
    main()

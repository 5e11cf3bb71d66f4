"""Extraction throughput: ``mmvicreg.encode`` against a bare loop on the same images, in one run.

    python benchmarks/eval_throughput.py                     # writes a section of benchmarks/RESULTS.md
    python benchmarks/eval_throughput.py --images 200 --no-write
    python benchmarks/eval_throughput.py --device cuda --precision bf16 --workers 8 --encoder resnet50   # a GPU

Both sides read the real Flickr8k JPEGs (``../shared/data/flickr8k-1k``), decode them in ``--workers``
DataLoader processes, apply the branch's eval transform at ``--size`` px and run the image branch (encoder +
expander) in eval mode without gradients, batch by batch, on ``--device`` under ``--precision``:

  ours  ``mmvicreg.encode(model, "image", LazyImages(source), workers=W, precision=P)`` (the path every
        evaluation takes);
  bare  a plain ``torch.utils.data.DataLoader`` over the image paths (PIL open + the same transform), the
        same batch size and workers, the same model call written out by hand.

Each figure is the best of ``--repeats`` interleaved runs (other jobs only slow a run down); worker start-up
is included on both sides. The script also checks that ours with workers equals the serial ``encode``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from _measure import write_section

from mmvicreg import JointEmbedding, encode
from mmvicreg.data import DeviceInput, LazyImages, csv_captions
from mmvicreg.data.preprocess import item_preprocessor
from mmvicreg.devices import autocast, resolve_device

FLICKR = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k-1k"


class Paths(Dataset):
    """The bare loop's dataset: open the file, convert to RGB, transform."""

    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as im:
            return self.transform(im.convert("RGB"))


def bare(model, paths, args, device) -> torch.Tensor:
    branch = model.branch("image")
    to_input = DeviceInput({"image": branch.preprocessing}, train=False, device=device)
    loader = DataLoader(Paths(paths, item_preprocessor(branch.preprocessing)), batch_size=args.batch_size,
                        num_workers=args.workers, pin_memory=device.type == "cuda")
    out = []
    with torch.no_grad():
        for x in loader:
            with autocast(device, args.precision):
                out.append(branch(to_input({"image": x})["image"]).float().cpu())
    return torch.cat(out)


def ours(model, source, args) -> torch.Tensor:
    return encode(model, "image", LazyImages(source), batch_size=args.batch_size, workers=args.workers,
                  precision=args.precision)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--encoder", default="test_resnet")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()

    device = resolve_device(args.device)
    source = csv_captions(FLICKR / "captions.csv", FLICKR / "images")
    n = min(args.images, source.num_images)
    paths = [source.store.path(i) for i in range(n)]
    torch.manual_seed(0)
    model = JointEmbedding.from_config({"image": {"encoder": args.encoder, "expander": "512",
                                                  "transform": {"size": args.size}}}).to(device).eval()
    items = _Prefix(LazyImages(source), n)

    serial = encode(model, "image", items, batch_size=args.batch_size, workers=0, precision=args.precision)
    parallel = encode(model, "image", items, batch_size=args.batch_size, workers=args.workers, precision=args.precision)
    reference = bare(model, paths, args, device)
    assert torch.allclose(serial, parallel, atol=1e-5), "workers changed the embeddings"
    assert torch.allclose(serial, reference, atol=1e-4), "ours and the bare loop disagree"

    best = {"ours": float("inf"), "bare": float("inf")}
    for _ in range(args.repeats):
        for name, run in (("ours", lambda: encode(model, "image", items, batch_size=args.batch_size,
                                                  workers=args.workers, precision=args.precision)),
                          ("bare", lambda: bare(model, paths, args, device))):
            t0 = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t0)
    rate = {k: n / v for k, v in best.items()}
    ratio = rate["ours"] / rate["bare"]
    body = (
        f"`python benchmarks/eval_throughput.py --images {args.images} --size {args.size} --encoder {args.encoder} "
        f"--workers {args.workers} --device {args.device} --precision {args.precision}` on {platform.node() or 'this machine'} "
        f"({device}, torch {torch.__version__})\n\n"
        f"| path | images/s | ratio to bare |\n|---|---|---|\n"
        f"| ours: `mmvicreg.encode(..., workers={args.workers})` | {rate['ours']:.1f} | **{ratio:.2f}×** |\n"
        f"| bare DataLoader loop | {rate['bare']:.1f} | 1.00× |\n\n"
        f"{n} Flickr8k JPEGs at {args.size} px, batch {args.batch_size}, best of {args.repeats}. Embeddings with "
        f"{args.workers} workers equal the serial `encode` (max |Δ| "
        f"{(serial - parallel).abs().max().item():.1e}) and the bare loop's (max |Δ| "
        f"{(serial - reference).abs().max().item():.1e}).\n"
    )
    print(body)
    if not args.no_write:
        write_section(str(Path(__file__).with_name("RESULTS.md")), f"Extraction throughput ({device.type})", body)


class _Prefix:
    """The first ``n`` items of a sequence (picklable, so DataLoader workers can index it)."""

    def __init__(self, items, n):
        self.items, self.n = items, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.items[i]


if __name__ == "__main__":
    main()

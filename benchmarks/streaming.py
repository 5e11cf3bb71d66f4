"""Streamed shards against the map-style loader on the same images, and the streamed loader's memory at 2k and 20k.

    python benchmarks/streaming.py [--workers 0 2] [--repeats 2]

Throughput: the 1000 Flickr8k-1k JPEGs (``../shared/data``), once through the map-style CSV source
(``make_loader`` with the epoch sampler: one sample per image) and once through webdataset shards written from
it by ``write_shards(per="image")`` (``StreamLoader``: the training path of ``format: webdataset``), both
decoding and augmenting with the published ``vicreg_view1`` at 224 px into batches of 64. Images per second,
best of ``--repeats`` rounds, the two sides alternating; the ratio is streamed / map-style (target ≥ 0.9).

Memory: shards of 2,000 and of 20,000 generated ``shapes`` scenes (64 px), each read for one whole epoch by the
streamed loader in a fresh process; the resident set's high-water mark of each (target: within 10%).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from _measure import _status_kb, run_worker, write_section  # benchmarks/ is on sys.path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k-1k"
RESULTS = str(Path(__file__).with_name("RESULTS.md"))
BATCH = 64


def _preprocessors():
    from mmvicreg.data.batching import Preprocessor
    from mmvicreg.data.transforms import build_transform

    return {"image": Preprocessor("image", build_transform("vicreg_view1", 224), None)}


def _timed(loader) -> float:
    start, n = time.perf_counter(), 0
    for batch in loader:
        n += len(batch["image"])
    return n / (time.perf_counter() - start)


def map_style_rate(workers: int) -> float:
    from mmvicreg.data import csv_captions
    from mmvicreg.data.batching import EpochBatchSampler, make_loader

    source = csv_captions(str(SHARED / "captions.csv"), images=str(SHARED / "images"))
    sampler = EpochBatchSampler(len(source), BATCH, seed=0)
    return _timed(make_loader(source, _preprocessors(), batch_sampler=sampler, workers=workers, pin_memory=False))


def streamed_rate(shards: Path, workers: int) -> float:
    from mmvicreg.data.sources.stream import ShardSource
    from mmvicreg.data.streaming import StreamDataset, StreamLoader

    source = ShardSource("train", str(shards / "shards.txt"), shuffle_buffer=500)
    loader = StreamLoader(StreamDataset(source, _preprocessors(), BATCH, seed=0, workers=workers), workers)
    loader.set_epoch(0)
    return _timed(loader)


def throughput(workers_list: list[int], repeats: int) -> str:
    from mmvicreg.data import csv_captions
    from mmvicreg.data.sources.shard_writer import write_shards

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        source = csv_captions(str(SHARED / "captions.csv"), images=str(SHARED / "images"))
        write_shards(source, Path(tmp) / "flickr", samples_per_shard=100, per="image")
        for workers in workers_list:
            best = {"map": 0.0, "stream": 0.0}
            for r in range(repeats):
                sides = ["map", "stream"] if r % 2 == 0 else ["stream", "map"]
                for side in sides:
                    rate = map_style_rate(workers) if side == "map" else streamed_rate(Path(tmp) / "flickr", workers)
                    best[side] = max(best[side], rate)
            ratio = best["stream"] / best["map"]
            rows.append(f"| {workers} | {best['map']:.1f} | {best['stream']:.1f} | **{ratio:.2f}×** |")
            print(rows[-1], flush=True)
    return ("| workers | map-style img/s | streamed img/s | streamed / map-style |\n|---:|---:|---:|---:|\n"
            + "\n".join(rows))


def write_scenes(n: int, out: Path) -> None:
    from mmvicreg.data import build_source
    from mmvicreg.data.sources.shard_writer import write_shards

    scenes = build_source({"format": "shapes", "split": "train", "num_images": n, "size": 64,
                           "cache_dir": str(out.parent)})
    write_shards(scenes, out, samples_per_shard=1000, per="image")


def memory_worker(shards: str) -> dict:
    """One streamed epoch over ``shards`` in this fresh process: samples read and the resident peak."""
    from mmvicreg.data.batching import Preprocessor
    from mmvicreg.data.sources.stream import ShardSource
    from mmvicreg.data.streaming import StreamDataset, StreamLoader
    from mmvicreg.data.transforms import build_transform

    source = ShardSource("train", str(Path(shards) / "shards.txt"), shuffle_buffer=1000)
    pre = {"image": Preprocessor("image", build_transform("vicreg_view1", 64), None)}
    loader = StreamLoader(StreamDataset(source, pre, BATCH, seed=0), 0)
    loader.set_epoch(0)
    seen = sum(len(b["image"]) for b in loader)
    return {"samples": seen, "peak_mib": _status_kb("VmHWM") / 1024}


def memory() -> str:
    """Shards are written here; each epoch is read in a fresh process (what writing kept is not counted)."""
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for n in (2000, 20000):
            write_scenes(n, Path(tmp) / str(n))
            results.append(run_worker(__file__, ["--memory", str(Path(tmp) / str(n))]))
    small, large = results
    if "error" in small or "error" in large:
        return f"failed: {small.get('error') or large.get('error')}"
    ratio = large["peak_mib"] / small["peak_mib"]
    print(f"peak RSS 20k / 2k = {ratio:.3f}", flush=True)
    return (f"| samples read | peak RSS MiB |\n|---:|---:|\n| {small['samples']} | {small['peak_mib']:.0f} |\n"
            f"| {large['samples']} | {large['peak_mib']:.0f} |\n\n20,000 / 2,000: **{ratio:.3f}** (target: within "
            f"±10%).")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--memory", help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory:
        print(json.dumps(memory_worker(args.memory)))
        return
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is absent: the throughput comparison reads the real Flickr8k-1k JPEGs")
    import torch

    command = "python benchmarks/streaming.py " + " ".join(sys.argv[1:])
    head = (f"`{command}` on {platform.machine()}, {torch.get_num_threads()} torch threads, torch "
            f"{torch.__version__}; batch {BATCH}, vicreg_view1 at 224 px, best of {args.repeats}.")
    body = f"{head}\n\nThroughput on the 1000 Flickr8k-1k JPEGs:\n\n{throughput(args.workers, args.repeats)}\n\n" \
           f"Memory of one streamed epoch (shapes scenes, 64 px, shuffle buffer 1000):\n\n{memory()}\n"
    print(body)
    write_section(RESULTS, "Streamed shards against map-style data (streaming.py)", body)


if __name__ == "__main__":
    main()

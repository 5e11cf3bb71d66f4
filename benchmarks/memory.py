"""Peak memory and time per training step, whole batch against micro-batches (gradient cache) and checkpointing.

    python benchmarks/memory.py                       # quickstart towers, 2048-2048-2048 expanders, batch 512
    python benchmarks/memory.py --device cuda --precision bf16
    python benchmarks/memory.py --published --device cuda --precision bf16   # ResNet-50, 8192-8192-8192

Quickstart mode runs four configurations of the quickstart towers (timm ``test_resnet`` + GRU, 32 px shapes
scenes) with 2048-2048-2048 expanders at global batch ``--batch``: the whole batch, ``micro_batch_size``
``--micro``, and each again with ``gradient_checkpointing`` on the image tower (the GRU has no switch). The
peer is the same library's whole-batch step, measured in the same run: the ratios are chunked / whole.

Published mode is VICReg's ResNet-50 step (two views through one ResNet-50, 8192-8192-8192 expander, 224 px) at
each ``--batches`` value, whole and with ``--micro``: the largest batch that fits is where the rows stop.

Each configuration runs in its own process through ``mmvicreg.train.setup`` and ``optimisation_step`` (the
trainer's own step), on one batch taken from the run's loader and reused, so data loading is not timed. Peak
memory is what one step adds above the weights and optimiser state (after a warm-up step): on CUDA
``torch.cuda.max_memory_allocated``, on the CPU the resident set's high-water mark (VmHWM, see ``measure``).
Part of it is the parameters' gradients, which every step allocates whether chunked or not (the quickstart's
2048-wide expanders have 18 M parameters); the table also gives the rest (activations, the objective's work).
Time per step is the median of ``--steps`` steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _measure import _status_kb, reset_peak, run_worker, write_section  # benchmarks/ is on sys.path

QUICKSTART = Path(__file__).parents[1] / "examples" / "quickstart.yaml"
RESULTS = str(Path(__file__).with_name("RESULTS.md"))


def overrides(args: argparse.Namespace, batch: int, micro: int | None, checkpointing: bool) -> list[str]:
    common = [f"train.batch_size={batch}", "data.eval=null", "train.progress=false", f"train.cpu={args.device == 'cpu'}",
              f"train.mixed_precision={args.precision}", f"data.train.num_images={batch}", "data.workers=0"]
    if micro is not None:
        common.append(f"train.micro_batch_size={micro}")
    if args.published:
        view = {"encoder": "resnet50", "expander": "8192-8192-8192", "gradient_checkpointing": checkpointing or None,
                "transform": {"train": "vicreg_view1", "size": 224}}
        second = {"shares": "view1", "transform": {"train": "vicreg_view2", "size": 224}}
        return common + [
            f"branches={json.dumps({'view1': {k: v for k, v in view.items() if v is not None}, 'view2': second})}",
            "data.train.size=64", "data.workers=8", "train.optimizer.name=lars", "train.optimizer.base_lr=0.2",
        ]
    ckpt = [f"branches.image.gradient_checkpointing={checkpointing}"] if checkpointing else []
    return common + ckpt + ["branches.image.expander=2048-2048-2048", "branches.caption.expander=2048-2048-2048"]


def worker(args: argparse.Namespace) -> dict:
    import torch

    from mmvicreg.config import load_config
    from mmvicreg.data.build import format_options
    from mmvicreg.train.setup import setup
    from mmvicreg.train.step import NonFiniteGuard, optimisation_step

    micro = None if args.worker_micro == 0 else args.worker_micro
    with tempfile.TemporaryDirectory() as tmp:
        options = [f"output_dir={tmp}", *overrides(args, args.worker_batch, micro, args.worker_ckpt)]
        run = setup(load_config(QUICKSTART, options, format_keys=format_options))
        batch = next(iter(run.loader))
        guard = NonFiniteGuard("stop", 1, Path(tmp), print)
        cuda = run.accelerator.device.type == "cuda"
        run.model.train()
        optimisation_step(run, batch, guard)  # warm-up: optimiser state, allocator, kernels
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            reset_peak()
            base = _status_kb("VmRSS") * 1024
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            optimisation_step(run, batch, guard)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        if cuda:
            peak, total = torch.cuda.max_memory_allocated() - base, torch.cuda.max_memory_allocated()
        else:
            peak, total = _status_kb("VmHWM") * 1024 - base, _status_kb("VmHWM") * 1024
        grads = sum(p.numel() * 4 for p in run.trainable)  # float32 gradients: allocated by every step alike
    return {"step_mib": peak / 2**20, "total_mib": total / 2**20, "s_per_step": statistics.median(times),
            "grad_mib": grads / 2**20}


def measure(args: argparse.Namespace, batch: int, micro: int | None, ckpt: bool) -> dict:
    """One configuration in fresh processes. On the CPU, memory is read in a process whose glibc maps every
    block above 64 KiB on its own (freed activations then leave the resident set, so its high-water mark
    follows the live tensors) and time in one with the default allocator (mapping every block is slow)."""
    flags = [f"--device={args.device}", f"--precision={args.precision}", f"--steps={args.steps}",
             f"--worker-batch={batch}", f"--worker-micro={micro or 0}"]
    flags += ["--worker-ckpt"] * ckpt + ["--published"] * args.published
    if args.device == "cuda":
        return run_worker(__file__, flags, timeout=1800)
    timed = run_worker(__file__, flags, timeout=1800)
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(64 * 1024)
    try:
        sized = run_worker(__file__, flags, timeout=1800)
    finally:
        del os.environ["MALLOC_MMAP_THRESHOLD_"]
    if "error" in timed or "error" in sized:
        return timed if "error" in timed else sized
    return {**sized, "s_per_step": timed["s_per_step"]}


def row(name: str, r: dict, whole: dict | None) -> str:
    if "error" in r:
        return f"| {name} | {r['error'][:90]} | | | | | | |"
    ok = whole is not None and "error" not in whole
    act = r["step_mib"] - r["grad_mib"]
    mem = f"{r['step_mib'] / whole['step_mib']:.2f}" if ok else "—"
    act_ratio = f"{act / (whole['step_mib'] - whole['grad_mib']):.2f}" if ok else "—"
    tim = f"{r['s_per_step'] / whole['s_per_step']:.2f}" if ok else "—"
    return (f"| {name} | {r['step_mib']:.0f} | {act:.0f} | {r['total_mib']:.0f} | {r['s_per_step'] * 1000:.0f} | "
            f"{mem} | {act_ratio} | {tim} |")


HEADER = ("| configuration | step peak MiB | of which not gradients | total peak MiB | ms / step | peak / whole | "
          "not-gradients / whole | time / whole |\n|---|---:|---:|---:|---:|---:|---:|---:|")


def quickstart(args: argparse.Namespace) -> str:
    rows = []
    for ckpt in (False, True):
        whole = measure(args, args.batch, None, ckpt)
        chunked = measure(args, args.batch, args.micro, ckpt)
        tag = " + checkpointing" if ckpt else ""
        rows += [row(f"whole batch {args.batch}{tag}", whole, whole),
                 row(f"micro_batch_size {args.micro}{tag}", chunked, whole)]
        if "error" not in whole and "error" not in chunked:
            act = (chunked["step_mib"] - chunked["grad_mib"]) / (whole["step_mib"] - whole["grad_mib"])
            print(f"checkpointing={ckpt}: peak chunked/whole = {chunked['step_mib'] / whole['step_mib']:.2f} "
                  f"(target <= 0.5; without the {whole['grad_mib']:.0f} MiB of gradients every step holds: "
                  f"{act:.2f}), time chunked/whole = {chunked['s_per_step'] / whole['s_per_step']:.2f} "
                  f"(target <= 1.5)", flush=True)
    return "\n".join([HEADER, *rows])


def published(args: argparse.Namespace) -> str:
    rows = []
    for micro in (None, args.micro):
        for batch in args.batches:
            if micro is not None and batch <= micro:
                continue
            r = measure(args, batch, micro, args.checkpointing)
            name = f"batch {batch}" + (f", micro_batch_size {micro}" if micro else ", whole")
            name += ", checkpointing" if args.checkpointing else ""
            rows.append(row(name, r, None))
            print(rows[-1], flush=True)
            if "error" in r:
                break
    return "\n".join([HEADER, *rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="no", choices=["no", "bf16", "fp16"])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--micro", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--published", action="store_true")
    p.add_argument("--checkpointing", action="store_true", help="published mode: gradient checkpointing on")
    p.add_argument("--batches", type=int, nargs="+", default=[256, 512, 1024, 2048])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--worker-micro", type=int, help=argparse.SUPPRESS)
    p.add_argument("--worker-ckpt", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    import torch

    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.machine()}, CPU"
    body = quickstart(args) if not args.published else published(args)
    command = "python benchmarks/memory.py " + " ".join(sys.argv[1:])
    title = f"ResNet-50 / 8192-8192-8192 ({command.split('memory.py ')[-1]})" if args.published else \
        f"Memory per step: micro-batches and checkpointing (memory.py, {args.device})"
    text = (f"`{command}` on {where}, torch {torch.__version__}, precision {args.precision}, median of "
            f"{args.steps} steps after one warm-up. Step peak: memory one step adds above weights and optimiser "
            f"state.\n\n{body}\n")
    print(text)
    write_section(RESULTS, title, text)


if __name__ == "__main__":
    main()

"""VCReg's fast path (the gradient written by hand) against autograd on the same penalty: time and peak memory.

    python benchmarks/vcreg_speed.py                                   # CPU: resnet18, 128 px, batch 32
    python benchmarks/vcreg_speed.py --device cuda --model resnet50 --size 224 --batch 64 --precision bf16

Two measurements, each configuration in its own process (allocator caches of one do not hide the next):

* **penalty**: one block output of shape (n, c, h, w) (the shapes of ``--model``'s four stages at ``--size``),
  the paper form's value and gradient — autograd (``vcreg_terms`` on the per-location samples, then backward)
  against :func:`~mmvicreg.objective.vcreg_paper.fast_vcreg` (value in the forward, one product in the backward).
* **step**: a classification step of ``--model`` (forward, cross-entropy, backward) with the paper-form VCReg on
  every block (``VCRegHooks`` on ``blocks``), autograd against fast, and the same step without VCReg; the ratio
  that matters is VCReg's added time and memory, autograd's over fast's.

Memory: ``saved_mb`` is what the autograd graph keeps from the forward for the backward (distinct storages, counted
through ``torch.autograd.graph.saved_tensors_hooks``; for the penalty alone the block output itself is not counted,
since in a network the next layer keeps it anyway); on CUDA also ``peak_mb``, the call's ``max_memory_allocated``
above what was allocated before it (the CPU has no allocator statistics to read). Times are medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from _measure import run_worker, write_section  # benchmarks/ is on sys.path

RESULTS = str(Path(__file__).with_name("RESULTS.md"))
STAGE_CHANNELS = {"resnet18": (64, 128, 256, 512), "resnet50": (256, 512, 1024, 2048)}


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _saved_mb(forward, exclude: int | None = None) -> float:
    """MiB of the distinct storages the autograd graph of ``forward()`` keeps for the backward (``exclude``: a
    storage not to count, e.g. a block output the next layer keeps anyway); the graph is then freed."""
    import torch

    seen: dict[int, int] = {}

    def pack(t: "torch.Tensor") -> "torch.Tensor":
        storage = t.untyped_storage()
        if storage.data_ptr() != exclude:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = forward()
    del loss
    return sum(seen.values()) / 2**20


def _measure(forward, device: str, repeats: int, exclude: int | None = None) -> dict:
    """Median seconds of ``forward().backward()``, the MiB its graph keeps, and on CUDA its peak allocation."""
    import torch

    def call() -> None:
        forward().backward()

    call()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        _sync(device)
        times.append(time.perf_counter() - t0)
    out = {"seconds": statistics.median(times), "saved_mb": _saved_mb(forward, exclude)}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        call()
        _sync(device)
        out["peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return out


def _penalty_worker(a: argparse.Namespace) -> dict:
    import torch

    from mmvicreg.objective.vcreg_paper import as_samples, fast_vcreg, vcreg_terms

    dtype = torch.bfloat16 if a.precision == "bf16" else torch.float32
    x = torch.randn(a.batch, a.channels, a.hw, a.hw, device=a.device, dtype=dtype, requires_grad=True)
    kw = dict(form="paper", variance_weight=1.0, covariance_weight=0.04, gamma=1.0, eps=1e-4, delta=1.0)

    def autograd() -> "torch.Tensor":
        return vcreg_terms(as_samples(x, "locations", None), **kw)

    def fast() -> "torch.Tensor":
        return fast_vcreg(x, **kw)[1]

    # x is not counted: in a network the next layer keeps the block output for its own backward
    return _measure(autograd if a.impl == "autograd" else fast, a.device, a.repeats, x.untyped_storage().data_ptr())


def _step_worker(a: argparse.Namespace) -> dict:
    import timm
    import torch
    import torch.nn.functional as F

    from mmvicreg.objective.vcreg import VCRegHooks, resolve_layers

    torch.manual_seed(0)
    model = timm.create_model(a.model, pretrained=False, num_classes=100).to(a.device)
    hooks = None
    if a.impl != "none":
        hooks = VCRegHooks(model, resolve_layers(model, ["blocks"]), form="paper", fast=a.impl == "fast")
    x = torch.randn(a.batch, 3, a.size, a.size, device=a.device)
    y = torch.randint(0, 100, (a.batch,), device=a.device)

    def forward() -> "torch.Tensor":
        model.zero_grad(set_to_none=True)
        with torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            loss = F.cross_entropy(model(x), y)
        return loss + hooks.loss() if hooks is not None else loss

    return _measure(forward, a.device, a.repeats)


def _worker(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    for name in ("kind", "impl", "device", "model", "precision"):
        p.add_argument(f"--{name}")
    for name in ("batch", "channels", "hw", "size", "repeats"):
        p.add_argument(f"--{name}", type=int)
    a = p.parse_args(argv)
    print(json.dumps(_penalty_worker(a) if a.kind == "penalty" else _step_worker(a)))


def _run(kind: str, impl: str, a: argparse.Namespace, **extra: int) -> dict:
    args = [f"--kind={kind}", f"--impl={impl}", f"--device={a.device}", f"--model={a.model}",
            f"--precision={a.precision}", f"--batch={a.batch}", f"--size={a.size}", f"--repeats={a.repeats}"]
    args += [f"--{k}={v}" for k, v in extra.items()]
    return run_worker(__file__, args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--model", default="resnet18", choices=sorted(STAGE_CHANNELS))
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-write", action="store_true", help="print the table without writing RESULTS.md")
    a = p.parse_args()
    metrics = ["seconds", "saved_mb"] + (["peak_mb"] if a.device == "cuda" else [])
    head = "".join(f" autograd {m} | fast {m} | autograd / fast |" for m in metrics)
    rows = [f"| measured |{head}", "|---|" + "---|---|---|" * len(metrics)]
    for stage, channels in enumerate(STAGE_CHANNELS[a.model]):
        hw = a.size // (4 * 2**stage)
        slow, fast = (_run("penalty", impl, a, channels=channels, hw=hw) for impl in ("autograd", "fast"))
        rows.append(_row(f"penalty ({a.batch}, {channels}, {hw}, {hw})", slow, fast, metrics))
        print(rows[-1], flush=True)
    plain, slow, fast = (_run("step", impl, a) for impl in ("none", "autograd", "fast"))
    rows.append(_row(f"{a.model} step, every block", slow, fast, metrics))
    added = {k: {m: r[m] - plain[m] for m in metrics} for k, r in (("slow", slow), ("fast", fast))}
    rows.append(_row("VCReg's addition to that step", added["slow"], added["fast"], metrics))
    print("\n".join(rows[-2:]))
    body = (f"Command: `python benchmarks/vcreg_speed.py --device {a.device} --model {a.model} --size {a.size} "
            f"--batch {a.batch} --precision {a.precision}`; the paper form (α 1, β 0.04, SmoothL1 δ 1) on per-location "
            f"samples; the step without VCReg: {json.dumps({m: round(plain[m], 4) for m in metrics})}.\n\n"
            + "\n".join(rows))
    print(body)
    if not a.no_write:
        write_section(RESULTS, f"VCReg fast path against autograd ({a.device}, {a.model}, {a.precision})", body)


def _row(label: str, slow: dict, fast: dict, metrics: list[str]) -> str:
    if "error" in slow or "error" in fast:
        return f"| {label} | {slow.get('error', '')} | {fast.get('error', '')} |"
    cells = []
    for m in metrics:
        ratio = slow[m] / fast[m] if fast[m] > 0 else float("inf")
        digits = 4 if m == "seconds" else 1
        cells.append(f" {slow[m]:.{digits}f} | {fast[m]:.{digits}f} | {ratio:.2f}× |")
    return f"| {label} |" + "".join(cells)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2:])
    else:
        main()

"""Forward+backward time and peak memory of the VICReg loss: mmvicreg against the dense form and lightly.

    python benchmarks/loss_speed.py                 # all shapes, writes benchmarks/RESULTS.md
    python benchmarks/loss_speed.py --cases 256x8192 --repeats 3 --no-write

Peers, measured in the same run, each in its own process:
  dense    the equations as the published code writes them (d×d covariance matrix, autograd);
  lightly  lightly.loss.VICRegLoss, when the optional package ``lightly`` is installed.
Prints ratios (peer time / mmvicreg time: above 1 means mmvicreg is faster) and peak extra memory.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from _measure import median_seconds, peak_extra_mb, run_worker, write_section

CASES = [(256, 8192), (512, 8192), (2048, 8192), (1024, 1024), (4096, 512)]
IMPLS = ["mmvicreg", "dense", "lightly"]


def dense_vicreg(za, zb):
    """The published form: full d×d covariance matrices, autograd for the backward."""
    import torch
    import torch.nn.functional as F

    n, d = za.shape
    inv = F.mse_loss(za, zb)
    za = za - za.mean(dim=0)
    zb = zb - zb.mean(dim=0)
    std_a = torch.sqrt(za.var(dim=0) + 1e-4)
    std_b = torch.sqrt(zb.var(dim=0) + 1e-4)
    var = torch.mean(F.relu(1 - std_a)) / 2 + torch.mean(F.relu(1 - std_b)) / 2
    cov_a = (za.T @ za) / (n - 1)
    cov_b = (zb.T @ zb) / (n - 1)
    off = ~torch.eye(d, dtype=torch.bool)
    cov = cov_a[off].pow(2).sum() / d + cov_b[off].pow(2).sum() / d
    return 25 * inv + 25 * var + cov


def make_loss(impl: str):
    if impl == "mmvicreg":
        from mmvicreg import vicreg_loss

        return lambda a, b: vicreg_loss(a, b).loss
    if impl == "dense":
        return dense_vicreg
    if impl == "lightly":
        from lightly.loss import VICRegLoss

        return VICRegLoss()
    raise ValueError(impl)


def worker(impl: str, n: int, d: int, repeats: int) -> dict:
    import torch

    try:
        loss_fn = make_loss(impl)
    except ImportError as e:
        return {"skipped": f"{impl} not installed ({e.name})"}
    g = torch.Generator().manual_seed(0)
    za = torch.randn(n, d, generator=g).requires_grad_()
    zb = torch.randn(n, d, generator=g).requires_grad_()

    def step():
        za.grad = zb.grad = None
        loss_fn(za, zb).backward()

    peak = peak_extra_mb(step)
    seconds = median_seconds(step, repeats=repeats, warmup=0)
    return {"seconds": seconds, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(f"{n}x{d}" for n, d in CASES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    parser.add_argument("--worker", nargs=4, metavar=("IMPL", "N", "D", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        impl, n, d, r = args.worker
        print(json.dumps(worker(impl, int(n), int(d), int(r))))
        return

    import torch

    rows = [
        "| n | d | mmvicreg ms | dense ms | dense / mmvicreg | lightly / mmvicreg | peak MiB mmvicreg / dense / lightly |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for case in args.cases.split(","):
        n, d = (int(x) for x in case.split("x"))
        repeats = max(1, args.repeats if n * d * d <= 512 * 8192 * 8192 else args.repeats // 2)
        res = {impl: run_worker(__file__, [impl, str(n), str(d), str(repeats)]) for impl in IMPLS}
        ours = res["mmvicreg"]["seconds"]

        def ratio(impl: str) -> str:
            r = res[impl]
            return f"{r['seconds'] / ours:.2f}×" if "seconds" in r else r.get("skipped", r.get("error", "?"))

        def peak(impl: str) -> str:
            return f"{res[impl]['peak_mb']:.0f}" if "peak_mb" in res[impl] else "–"

        row = (
            f"| {n} | {d} | {ours * 1e3:.1f} | {res['dense'].get('seconds', float('nan')) * 1e3:.1f} | "
            f"{ratio('dense')} | {ratio('lightly')} | {peak('mmvicreg')} / {peak('dense')} / {peak('lightly')} |"
        )
        rows.append(row)
        print(row, flush=True)
    try:
        import lightly

        lightly_version = lightly.__version__
    except ImportError:
        lightly_version = "not installed"
    body = (
        f"`python benchmarks/loss_speed.py` — forward+backward of the loss, median of {args.repeats} "
        f"(half as many for the largest dense cases), float32, CPU ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads), torch {torch.__version__}, lightly {lightly_version}. "
        f"Ratios > 1: mmvicreg is faster. Peak = resident memory added during one step.\n\n" + "\n".join(rows)
    )
    print()
    print(body)
    if not args.no_write:
        write_section(str(Path(__file__).with_name("RESULTS.md")), "Loss speed (loss_speed.py)", body)


if __name__ == "__main__":
    main()

"""Where a training step's time goes: torch.profiler over a few steps of the memory benchmark's configuration.

    python benchmarks/profile_step.py --device cuda --micro 64      # the quickstart towers, chunked

Prints the operators that take the most time on the host and on the device.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

QUICKSTART = Path(__file__).parents[1] / "examples" / "quickstart.yaml"


def main() -> None:
    from mmvicreg.config import load_config
    from mmvicreg.data.build import format_options
    from mmvicreg.train.setup import setup
    from mmvicreg.train.step import NonFiniteGuard, optimisation_step

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--micro", type=int, default=0)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--rows", type=int, default=25)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        options = [f"output_dir={tmp}", f"train.batch_size={args.batch}", "data.eval=null", "train.progress=false",
                   f"train.cpu={args.device == 'cpu'}", f"data.train.num_images={args.batch}",
                   "branches.image.expander=2048-2048-2048", "branches.caption.expander=2048-2048-2048"]
        options += [f"train.micro_batch_size={args.micro}"] if args.micro else []
        run = setup(load_config(QUICKSTART, options, format_keys=format_options))
        batch, guard = next(iter(run.loader)), NonFiniteGuard("stop", 1, Path(tmp), print)
        run.model.train()
        for _ in range(2):
            optimisation_step(run, batch, guard)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if args.device == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(3):
                optimisation_step(run, batch, guard)
        key = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
        if args.device == "cuda":
            print(prof.key_averages().table(sort_by=key, row_limit=args.rows))


if __name__ == "__main__":
    main()

"""The published siamese VICReg step (ResNet-50 + 8192-8192-8192, two views) on synthetic on-device batches:
mmvicreg with each speed switch, and solo-learn's VICReg method, in one process, as ratios.

    python benchmarks/step_speed.py [--encoder resnet50] [--expander 8192-8192-8192] [--batch 256] [--size 224]
        [--precision bf16] [--steps 30] [--settings eager channels_last compile all] [--solo-learn]
        [--peak-tflops N] [--section TITLE] [--no-write]

mmvicreg's side is its own training step (``mmvicreg.train.step.optimisation_step``: autocast, the objective in
float32, the gradient-norm guard, LARS) on the run ``examples/imagenet_resnet50.yaml`` describes, each setting a
set of config overrides. solo-learn's side is its ``VICReg`` LightningModule (same backbone, projector, batch,
precision, LARS; its defaults otherwise: channels-last, an online linear classifier) under a Lightning ``Trainer``,
as ``main_pretrain.py`` runs it. Both read the same pre-made batches already on the device, so neither is bound
by an input pipeline. solo-learn is not a dependency: give its checkout and Lightning on ``PYTHONPATH`` (it pins
lightning 2.1.2). A side's rate is the median step time after ``--warmup`` steps; MFU = model FLOPs of a step
(``torch.utils.flop_counter``) / step time / the device's peak (``--peak-tflops``, bf16 dense; on CUDA only).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _measure import write_section  # benchmarks/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = str(Path(__file__).with_name("RESULTS.md"))
SETTINGS = {
    "eager": ["train.channels_last=false", "train.optimizer.fused=false", "train.compile=false"],
    "channels_last": ["train.channels_last=true", "train.optimizer.fused=false", "train.compile=false"],
    "compile": ["train.channels_last=false", "train.optimizer.fused=false", "train.compile=true"],
    "all": ["train.channels_last=true", "train.compile=true", "train.tf32=true", "train.deterministic=false"],
}
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.1, "A10G": 125.0}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ours(setting: str, args: argparse.Namespace, views: list[torch.Tensor], work: Path, count_flops: bool) -> dict:
    """Step times of mmvicreg's training step with ``setting``'s overrides (and its FLOPs per step: ``count_flops``)."""
    from mmvicreg.config import load_config
    from mmvicreg.data.build import format_options
    from mmvicreg.train.setup import setup
    from mmvicreg.train.step import NonFiniteGuard, optimisation_step

    keys = [f"output_dir={work / setting}", "data.eval=null", "data.workers=0", f"train.batch_size={args.batch}",
            "data.train={format: shapes, split: train, num_images: " + str(2 * args.batch) + ", size: 32}",
            f"train.mixed_precision={args.precision}", "train.progress=false", "train.warmup_epochs=0",
            f"branches.view1.encoder.name={args.encoder}", f"branches.view1.expander={args.expander}",
            *[f"branches.{b}.transform.size={args.size}" for b in ("view1", "view2")], *SETTINGS[setting]]
    run = setup(load_config(ROOT / "examples" / "imagenet_resnet50.yaml", keys, format_keys=format_options))
    guard = NonFiniteGuard("stop", 1, run.output_dir, print)
    batch = {"view1": views[0], "view2": views[1]}
    run.model.train()
    try:
        return timed(lambda: optimisation_step(run, batch, guard), args, views[0].device, count_flops)
    finally:
        run.lock.release()


def solo_learn(args: argparse.Namespace, views: list[torch.Tensor], work: Path) -> dict:
    """Step times of solo-learn's VICReg under Lightning (the Trainer's own loop; a callback reads the clock)."""
    try:
        import lightning.pytorch as pl
        from omegaconf import OmegaConf
        from solo.methods import VICReg
    except ImportError as e:
        sys.exit(f"--solo-learn: {e}; put a solo-learn checkout and lightning==2.1.2 on PYTHONPATH")
    expander = [int(w) for w in args.expander.split("-")]
    cfg = OmegaConf.create({
        "name": "bench", "method": "vicreg", "backbone": {"name": args.encoder},
        "method_kwargs": {"proj_hidden_dim": expander[0], "proj_output_dim": expander[-1]},
        "data": {"dataset": "imagenet", "num_classes": 1000, "num_large_crops": 2, "num_small_crops": 0},
        "optimizer": {"name": "lars", "batch_size": args.batch, "lr": 0.2 * args.batch / 256, "classifier_lr": 0.1,
                      "weight_decay": 1e-6, "kwargs": {"momentum": 0.9, "eta": 0.001, "clip_lr": True,
                                                       "exclude_bias_n_norm": True}},
        "scheduler": {"name": "warmup_cosine"}, "max_epochs": 1, "devices": 1, "num_nodes": 1,
        "accelerator": views[0].device.type, "checkpoint": {"enabled": False}, "auto_resume": {"enabled": False},
    })
    OmegaConf.set_struct(cfg, False)
    model = VICReg(VICReg.add_and_assert_specific_cfg(cfg))
    targets = torch.randint(0, 1000, (args.batch,), device=views[0].device)
    steps, stamps = args.warmup + args.steps, []

    class Batches(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return steps

        def __getitem__(self, i: int):
            return [i, [views[0], views[1]], targets]

    class Clock(pl.Callback):
        def on_train_batch_end(self, *_: object) -> None:
            synchronize(views[0].device)
            stamps.append(time.perf_counter())

    precision = {"bf16": "bf16-mixed", "fp16": "16-mixed", "no": "32-true"}[args.precision]
    trainer = pl.Trainer(accelerator=views[0].device.type, devices=1, precision=precision, max_steps=steps,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[Clock()],
                         benchmark=True, default_root_dir=str(work / "solo"), enable_model_summary=False)
    loader = torch.utils.data.DataLoader(Batches(), batch_size=None, shuffle=False)
    cuda = views[0].device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(views[0].device)
    start = time.perf_counter()
    trainer.fit(model, loader)
    times = [b - a for a, b in zip([start, *stamps], stamps)][args.warmup:]
    peak = torch.cuda.max_memory_allocated(views[0].device) / 2**20 if cuda else None
    return {"step_s": statistics.median(times), "flops": None, "peak_mib": peak}


def timed(step, args: argparse.Namespace, device: torch.device, count_flops: bool) -> dict:
    """Median seconds of ``step`` after ``--warmup`` calls, and (``count_flops``) the model FLOPs of one more call."""
    from torch.utils.flop_counter import FlopCounterMode

    for _ in range(args.warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    flops = None
    if count_flops:  # model FLOPs: counted once, on the first setting (compiled kernels bypass the counter)
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        flops = counter.get_total_flops() or None
    return {"step_s": statistics.median(times), "flops": flops, "peak_mib": peak}


def peak_tflops(args: argparse.Namespace, device: torch.device) -> float | None:
    if args.peak_tflops is not None or device.type != "cuda":
        return args.peak_tflops
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="resnet50")
    p.add_argument("--expander", default="8192-8192-8192")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "no"])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--solo-learn", action="store_true", help="also time solo-learn's VICReg (on PYTHONPATH)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's bf16 dense peak, for MFU")
    p.add_argument("--section", default="The published step against solo-learn, and each speed switch (step_speed.py)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    views = [torch.randn(args.batch, 3, args.size, args.size, device=device) for _ in range(2)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.solo_learn:  # first: a run stopped at its time limit has the peer's figure and the eager one
            results["solo-learn VICReg"] = solo_learn(args, views, Path(tmp))
            print("solo-learn", results["solo-learn VICReg"], flush=True)
        for setting in args.settings:
            counted = setting == args.settings[0]
            results[f"mmvicreg {setting}"] = ours(setting, args, views, Path(tmp), count_flops=counted)
            print(setting, results[f"mmvicreg {setting}"], flush=True)
    flops = next((r["flops"] for r in results.values() if r.get("flops")), None)
    peak = peak_tflops(args, device)
    first = results[f"mmvicreg {args.settings[0]}"]["step_s"]
    solo = results.get("solo-learn VICReg", {}).get("step_s")
    rows = []
    for name, r in results.items():
        mfu = f"{100 * flops / r['step_s'] / (peak * 1e12):.1f} %" if flops and peak else "–"
        mem = f"{r['peak_mib']:.0f}" if r.get("peak_mib") else "–"
        vs_solo = f"{solo / r['step_s']:.2f}×" if solo else "–"
        rows.append(f"| {name} | {args.batch / r['step_s']:.1f} | {mem} | {mfu} | {first / r['step_s']:.2f}× | {vs_solo} |")
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.machine()} CPU, {os.cpu_count()} cores"
    body = (f"`python benchmarks/step_speed.py {' '.join(sys.argv[1:])}` on {where}, torch {torch.__version__}: "
            f"{args.encoder} + {args.expander}, two views of {args.size} px, batch {args.batch}, {args.precision}, "
            f"synthetic batches on the device; median of {args.steps} steps after {args.warmup}. Model FLOPs per step "
            f"{flops / 1e12 if flops else float('nan'):.3f} TFLOP.\n\n| side | samples/s | peak MiB | MFU | "
            f"/ mmvicreg {args.settings[0]} | / solo-learn |\n|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n")
    print(body)
    if not args.no_write:
        write_section(RESULTS, args.section, body)


if __name__ == "__main__":
    main()

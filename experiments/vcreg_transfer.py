"""Experiment: VCReg in supervised pretraining, judged by transfer to classes the pretraining never saw.

A small CNN (``test_resnet``) is pretrained with cross-entropy (``loss.name: supervised``, a linear head on the
encoder's output) on digits 0–4 of scikit-learn's digits (``data.train.classes``), with and without VCReg on every
block (``loss.vcreg_layers: [blocks]``, our default weights). The export's frozen representation is then scored on
the held-out digits 5–9, as ``mmvicreg eval knn`` / ``eval linear-probe`` would with
``--option classes=[5,6,7,8,9]``: k-NN top-1 (k = 20) with the training split's 5–9 as the memory, and the quick
linear probe trained on those and tested on the test split's 5–9. The same network untrained is the floor.

    python experiments/vcreg_transfer.py [--form vicreg paper] [--seeds 0 1 2] [--epochs 40]

``--form`` (``loss.vcreg_form``): the VCReg form(s) to run, each a with-VCReg row.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from common import publish, run

SIZE = 16  # the 8×8 scans upscaled to 16 px: every digit-level detail, a quarter of the 32-px compute
PRETRAIN = [0, 1, 2, 3, 4]
HELD_OUT = [5, 6, 7, 8, 9]
RANDOM = "random init (the same CNN, untrained)"


def _options(classes: list[int]) -> list[str]:
    return ["--format", "digits", "--option", f"size={SIZE}", "--option", f"classes={classes}",
            "--workers", "0", "--no-progress"]


def score(run_dir: Path, classes: list[int] = HELD_OUT) -> dict[str, dict[str, float]]:
    """k-NN (k = 20) and linear-probe top-1 on ``classes`` of the export and of its random-init twin."""
    from mmvicreg.cli.evaluate import add_knn_arguments, add_linear_probe_arguments, run_knn, run_linear_probe

    out: dict[str, dict[str, float]] = {}
    for name, add, fn, extra in (("knn", add_knn_arguments, run_knn, ["--k", "20"]),
                                 ("probe", add_linear_probe_arguments, run_linear_probe, [])):
        parser = argparse.ArgumentParser()
        add(parser)
        args = parser.parse_args(["--model", str(run_dir / "model"), *_options(classes), "--compare-random-init",
                                  *extra])
        for which, branches in fn(args)["results"].items():
            value = branches["image"]["top1_k20" if name == "knn" else "top1_last"]
            out.setdefault(which, {})[name] = value
    return out


def _summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--form", nargs="+", default=["vicreg"], choices=["vicreg", "paper"],
                   help="VCReg's form(s) (loss.vcreg_form); each adds a with-VCReg row")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=40)
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)  # tiny tensors on a shared CPU: one thread is faster, and repeats exactly
    common = [f"train.epochs={args.epochs}", "data.eval=null", f"data.train.size={SIZE}",
              f"branches.image.transform.size={SIZE}", f"data.train.classes={PRETRAIN}", "train.batch_size=64",
              "train.optimizer.lr=0.005", "train.log_every=50"]
    settings = {"supervised, no VCReg": ["loss.vcreg_layers=[]"]}
    for form in args.form:
        settings[f"supervised + VCReg ({form} form, every block)"] = ["loss.vcreg_layers=[blocks]",
                                                                     f"loss.vcreg_form={form}"]
    rows: dict[str, dict[str, list[float]]] = {RANDOM: {}}
    start = time.perf_counter()
    for seed in args.seeds:  # seed by seed: every setting of a seed before the next seed
        for name, extra in settings.items():
            res = run("digits_supervised_vcreg.yaml", [*common, f"train.seed={seed}", *extra], after=score)
            for which, label in (("trained", name), ("random_init", RANDOM)):
                for metric, value in res["after"][which].items():
                    rows.setdefault(label, {}).setdefault(metric, []).append(value)
            print(name, seed, res["after"], f"{time.perf_counter() - start:.0f}s", flush=True)
    publish("VCReg transfer: supervised pretraining on digits 0–4, scored on the held-out 5–9",
            _body(args, rows, time.perf_counter() - start, _counts()))


def _counts() -> dict[str, int]:
    """Images per split and class group, as the runs read them."""
    from mmvicreg.data import build_source

    return {f"{split} {'pretrain' if classes is PRETRAIN else 'held'}": len(build_source(
        {"format": "digits", "size": SIZE, "classes": [str(c) for c in classes]}, split))
        for split in ("train", "test") for classes in (PRETRAIN, HELD_OUT)}


def _body(args: argparse.Namespace, rows: dict[str, dict[str, list[float]]], seconds: float,
          n: dict[str, int]) -> str:
    from mmvicreg.config import LossConfig

    loss = LossConfig()
    command = (f"python experiments/vcreg_transfer.py --form {' '.join(args.form)} --seeds "
               f"{' '.join(map(str, args.seeds))} --epochs {args.epochs}")
    trained = {name: m for name, m in rows.items() if name != RANDOM}
    floor = rows[RANDOM]  # one twin (the evaluation seeds it with 0): the same numbers after every run
    table = "\n".join([f"| {RANDOM} | {floor['knn'][0]:.1f} | {floor['probe'][0]:.1f} |"] + [
        f"| {name} | {_summary(m['knn'])} | {_summary(m['probe'])} |" for name, m in trained.items()])
    per_seed = "; ".join(f"{name}: {', '.join(f'{v:.1f}' for v in m['knn'])}" for name, m in trained.items())
    form = (" The vicreg form scales VCReg's terms as VICReg does (μ/d, ν/d); the paper form uses the VCReg paper's "
            "normalisation and SmoothL1 covariance (mmvicreg/objective/vcreg_paper.py), so the same two numbers "
            "weigh differently there.")
    return (
        f"Command: `{command}` ({seconds / 60:.0f} min on 2 CPU cores shared with other jobs). Supervised "
        f"pretraining (`examples/digits_supervised_vcreg.yaml`: `test_resnet`, cross-entropy of a linear head on "
        f"the encoder's output, {SIZE} px, batch 64, AdamW lr 5e-3, {args.epochs} epochs) on the "
        f"{n['train pretrain']} training images of digits 0–4 (`data.train.classes`); then the export's frozen "
        f"representation on digits 5–9, which pretraining never saw: k-NN top-1 (k = 20; memory: the "
        f"{n['train held']} training images of 5–9; test: the {n['test held']} test images of 5–9) and the quick "
        f"linear probe (100 epochs on those features; top-1 after the last epoch), in percent, mean ± std over "
        f"seeds {', '.join(map(str, args.seeds))}; the random-init row is one untrained twin.{form} VCReg's "
        f"weights (μ = {loss.vcreg_variance_weight:g}, ν = {loss.vcreg_covariance_weight:g} on every block) are "
        f"our defaults, not values taken from the paper.\n\n"
        f"| pretraining | k-NN top-1, 5–9 | linear probe top-1, 5–9 |\n|---|---|---|\n{table}\n\n"
        f"k-NN top-1 per seed: {per_seed}."
    )


if __name__ == "__main__":
    main()

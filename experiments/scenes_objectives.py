"""Experiment 5: VICReg, InfoNCE, the VSE++ hinge and Barlow Twins on the ``scenes`` benchmark, tuned alike.

Same towers and trainer as ``examples/scenes.yaml`` (test_resnet + GRU, 1024-1024 expanders, batch 128, AdamW,
``--steps`` steps); only ``loss.*`` and the learning rate change. Each objective gets the same 3×2 grid (the
learning rate 2e-3/4e-3/6e-3 × its own main coefficient; run as two sweeps, 4e-3/6e-3 then 2e-3), every trial
scored by rsum on the **val** split; the best of its six trials is then trained with seeds 0, 1 and 2 and scored
once on the **test** split (objectives that chose the same learning rate share one test sweep). Every stage is an ordinary
``mmvicreg sweep`` (its folder holds each trial's run directory and ``sweep.md``), so a killed experiment started
again skips what finished. Writes ``<out>/summary.md`` (the tables of docs/RESULTS.md §5).

    python experiments/scenes_objectives.py [--steps 300] [--out runs/sweeps/scenes]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

from common import ROOT, mean_std

CONFIG = "examples/scenes.yaml"
LRS = ("train.optimizer.lr=0.004,0.006", "train.optimizer.lr=0.002")  # stage a, stage b: 6 trials per objective
COEFFICIENTS = {  # each objective's own main coefficient: two values, the library default among them
    "vicreg": "loss.variance_weight=25,100",
    "infonce": "loss.temperature=0.03,0.07",
    "triplet": "loss.margin=0.1,0.2",
    "barlow": "loss.barlow_lambda=0.0051,0.02",
}
QUICKSTART = {"train.optimizer.lr": 0.004, "loss.variance_weight": 100}  # the quickstart's tuned settings
KEYS = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "rsum"]


def sweep(args: list[str]) -> str:
    """Run ``mmvicreg sweep`` with ``args``; the command as a reader would type it."""
    subprocess.run([sys.executable, "-m", "mmvicreg", "sweep", *args], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    return "mmvicreg sweep " + " ".join(args)


def best_values(folder: Path) -> tuple[float, dict[str, str]]:
    """The rsum and swept values of the best trial in ``folder/sweep.csv`` (ties: the lower trial)."""
    with open(folder / "sweep.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["rsum"]]
    best = max(rows, key=lambda r: (float(r["rsum"]), -int(r["trial"])))
    return float(best["rsum"]), {k: v for k, v in best.items() if k not in ("trial", "rsum", "step", "samples_per_s")}


def test_groups(finals: dict[str, list[str]]) -> dict[str, tuple[list[str], list[str]]]:
    """The test sweeps: finals that chose the same learning rate share one (``--grid loss.name=a,b``, so two
    trials always run at a time); each run also carries the others' coefficients, which its loss ignores.
    ``{folder: (objectives, overrides)}``; a final whose objective or coefficient clashes gets its own sweep."""
    groups: dict[str, tuple[list[str], list[str]]] = {}
    for final, settings in finals.items():
        objective, lr = final.split("_")[0], settings[0].split("=")[1]
        folder = f"test_lr{lr}" + ("_quickstart" if final != objective else "")
        names, shared = groups.setdefault(folder, ([], [settings[0]]))
        clash = objective in names or any(s.split("=")[0] == t.split("=")[0] and s != t for s in settings for t in shared)
        if clash:
            raise ValueError(f"{final} {settings} cannot share the test sweep {folder} ({names}, {shared})")
        names.append(objective)
        shared += [s for s in settings[1:] if s not in shared]
    return groups


def test_results(out: Path, final: str, objective: str) -> list[dict]:
    """The test eval.json of each seed of ``final`` (trial folders whose ``loss.name`` is ``objective``)."""
    results = []
    for folder in sorted(out.glob(f"test_lr*{'_quickstart' if final != objective else ''}/trial_*")):
        quick = folder.parent.name.endswith("_quickstart")
        trial = json.loads((folder / "trial.json").read_text())["values"]
        if quick == (final != objective) and trial["loss.name"] == objective and (folder / "eval.json").exists():
            results.append(json.loads((folder / "eval.json").read_text()))
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", default="runs/sweeps/scenes")
    args = p.parse_args()
    out, steps = Path(args.out), f"train.max_steps={args.steps}"
    parts = [f"Validation selection (rsum on the val split, {args.steps} steps, seed 0):"]
    best: dict[str, list[tuple[float, dict[str, str]]]] = {name: [] for name in COEFFICIENTS}
    for stage, lrs in zip("ab", LRS):
        for name, coefficient in COEFFICIENTS.items():
            folder = out / (f"{name}_val" if stage == "a" else f"{name}_val_{stage}")
            command = sweep([CONFIG, f"loss.name={name}", steps, "--jobs", "2", "--out", str(folder),
                             "--grid", lrs, "--grid", coefficient])
            best[name].append(best_values(ROOT / folder))
            parts.append(f"**{name}, stage {stage}**: `{command}`\n\n{(ROOT / folder / 'sweep.md').read_text()}")
    finals = {name: [f"{k}={v}" for k, v in max(found, key=lambda f: f[0])[1].items()] for name, found in best.items()}
    chosen = {k: float(v) for k, v in (item.split("=") for item in finals["vicreg"])}
    if chosen != QUICKSTART:
        finals["vicreg_quickstart"] = [f"{k}={v}" for k, v in QUICKSTART.items()]

    commands = [sweep([CONFIG, steps, *settings, "data.eval.split=test", "--jobs", "2", "--out", str(out / folder),
                       "--grid", "loss.name=" + ",".join(names), "--grid", "train.seed=0,1,2"])
                for folder, (names, settings) in test_groups(finals).items()]
    header = "| objective (selected settings) | " + " | ".join(k.replace("_", " ") for k in KEYS) + " |"
    rows = []
    for name, values in finals.items():
        results = test_results(ROOT / out, name, name.split("_")[0])
        rows.append(f"| {name} ({', '.join(values)}) | " + " | ".join(mean_std([r[k] for r in results]) for k in KEYS)
                    + " |")
    parts.append("Test, read once (seeds 0, 1, 2; mean ± std):\n\n" + "\n".join(f"`{c}`" for c in commands)
                 + "\n\n" + header + "\n|" + "---|" * (len(KEYS) + 1) + "\n" + "\n".join(rows))
    quick = "vicreg_quickstart" if "vicreg_quickstart" in finals else "vicreg"
    r1 = [r["i2t_R@1"] for r in test_results(ROOT / out, quick, "vicreg")]
    parts.append(f"Quickstart settings (VICReg, lr 0.004, μ 100), test i2t R@1 per seed: {r1} "
                 f"(mean {statistics.mean(r1):.1f})")
    text = "\n\n".join(parts) + "\n"
    (ROOT / out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

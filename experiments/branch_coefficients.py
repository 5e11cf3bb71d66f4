"""Experiment 4: per-branch coefficients — what changing one branch's variance weight does.

The image branch's variance weight μ_image varies while the caption branch keeps μ = 25 (loss: Σ_b (μ_b/2)·v(Z_b)).

    python experiments/branch_coefficients.py [--steps 400] [--weights 1 5 25 50]
"""

from __future__ import annotations

import argparse

from common import publish, run, UNTUNED_QUICKSTART


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--weights", type=float, nargs="+", default=[1.0, 5.0, 25.0, 50.0])
    args = p.parse_args()
    rows = []
    for mu in args.weights:
        r = run("quickstart.yaml", [*UNTUNED_QUICKSTART, f"train.max_steps={args.steps}",
                                    f"branches.image.variance_weight={mu}",
                                    f"train.rankme_every={args.steps}"])
        m, e = r["last"], r["eval"]
        rows.append(
            f"| {mu:g} | {m['std/image']:.3f} | {m['std/caption']:.3f} | {m['rankme/image']:.1f} | "
            f"{m['rankme/caption']:.1f} | {e['i2t_R@1']:.1f} | {e['i2t_R@5']:.1f} | {e['t2i_R@1']:.1f} | {e['t2i_R@5']:.1f} |"
        )
        print(rows[-1], flush=True)
    body = (
        f"Command: `python experiments/branch_coefficients.py --steps {args.steps}`. Quickstart setting, seed 0, "
        f"{args.steps} steps; caption branch μ = 25 throughout; std and RankMe of the last training batch.\n\n"
        "| μ_image | std image | std caption | RankMe image | RankMe caption | i2t R@1 | i2t R@5 | t2i R@1 | t2i R@5 |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    publish("4. Per-branch coefficients", body)


if __name__ == "__main__":
    main()

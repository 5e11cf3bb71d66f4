"""Soak: the quickstart for 2,000 steps with an evaluation every 500; resident memory must not creep.

    python benchmarks/soak.py [--steps 2000] [--eval-every 500] [--write]

Runs ``python -m mmvicreg train examples/quickstart.yaml train.max_steps=STEPS train.eval_every=EVERY`` in a
child process (one run directory in a temporary folder) and samples the child's resident memory (VmRSS from
/proc) every ``--interval`` seconds. Each evaluation rewrites ``eval.json`` with its step; the RSS sampled right
after each evaluation is recorded. Pass: the RSS after the last evaluation (the end of the run) is within 10% of
the RSS after the first one. Prints both, their ratio, and the peak; ``--write`` puts them in RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _measure import write_section

ROOT = Path(__file__).parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
TOLERANCE = 0.10


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def eval_step(run: Path) -> int | None:
    try:
        return int(json.loads((run / "eval.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return None


def last_step(run: Path) -> int:
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return int(json.loads(lines[-1])["step"]) if lines else 0
    except (OSError, ValueError, KeyError, IndexError):
        return 0


def soak(steps: int, eval_every: int, interval: float, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "mmvicreg", "train", str(QUICKSTART), f"output_dir={run}",
               f"train.max_steps={steps}", f"train.eval_every={eval_every}", "train.progress=false", *extra]
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        log = open(Path(tmp) / "log.txt", "w")
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        after_eval: dict[int, float] = {}
        samples: list[tuple[float, int, float]] = []
        seen = None
        while proc.poll() is None:
            rss = rss_mb(proc.pid)
            if rss is not None:
                samples.append((time.perf_counter() - t0, last_step(run), rss))
                step = eval_step(run)
                if step is not None and step != seen:  # an evaluation just finished
                    seen = step
                    after_eval[step] = rss
                    print(f"  after the evaluation at step {step}: RSS {rss:.0f} MiB "
                          f"({time.perf_counter() - t0:.0f} s)", flush=True)
            time.sleep(interval)
        log.close()
        if proc.returncode != 0:
            tail = (Path(tmp) / "log.txt").read_text()[-3000:]
            raise SystemExit(f"the training run failed (rc={proc.returncode}):\n{tail}")
    evals = sorted(after_eval)
    if len(evals) < 2:
        raise SystemExit(f"saw evaluations at {evals}: need at least two; lower --eval-every or --interval")
    first, end = after_eval[evals[0]], after_eval[evals[-1]]
    return {
        "steps": steps,
        "eval_every": eval_every,
        "seconds": round(time.perf_counter() - t0, 1),
        "rss_after_first_eval_mb": round(first, 1),
        "first_eval_step": evals[0],
        "rss_at_end_mb": round(end, 1),
        "end_eval_step": evals[-1],
        "ratio": round(end / first, 4),
        "peak_rss_mb": round(max(s[2] for s in samples), 1),
        "rss_after_each_eval_mb": {str(k): round(v, 1) for k, v in sorted(after_eval.items())},
        "within_tolerance": abs(end / first - 1) <= TOLERANCE,
    }


SECTION = "Soak: memory over a long run (soak.py)"


def results_body(r: dict, overrides: list[str]) -> str:
    verdict = "PASS" if r["within_tolerance"] else "FAIL"
    per_eval = ", ".join(f"step {k}: {v:.0f}" for k, v in r["rss_after_each_eval_mb"].items())
    extra = " " + " ".join(overrides) if overrides else ""
    cpu = platform.processor() or platform.machine()
    return (
        f"`python benchmarks/soak.py --steps {r['steps']} --eval-every {r['eval_every']}{extra}` (the quickstart, "
        f"CPU) on {cpu}, {os.cpu_count()} CPUs shared with other work, default torch threads; {r['seconds']:.0f} s.\n\n"
        f"| RSS after the first evaluation | RSS at the end | end / first | peak RSS | verdict (±10%) |\n"
        f"|---:|---:|---:|---:|:---|\n"
        f"| {r['rss_after_first_eval_mb']:.0f} MiB (step {r['first_eval_step']}) | {r['rss_at_end_mb']:.0f} MiB "
        f"(step {r['end_eval_step']}) | {r['ratio']:.3f} | {r['peak_rss_mb']:.0f} MiB | {verdict} |\n\n"
        f"RSS right after each evaluation (MiB): {per_eval}.\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between RSS samples")
    parser.add_argument("--write", action="store_true", help="write the result into benchmarks/RESULTS.md")
    parser.add_argument("overrides", nargs="*", help="extra dotted.key=value overrides for the run")
    args = parser.parse_args()
    print(f"soak: quickstart, {args.steps} steps, evaluation every {args.eval_every}", flush=True)
    r = soak(args.steps, args.eval_every, args.interval, args.overrides)
    print(json.dumps(r, indent=2))
    verdict = "PASS" if r["within_tolerance"] else "FAIL"
    print(f"{verdict}: RSS after the first evaluation {r['rss_after_first_eval_mb']:.0f} MiB (step "
          f"{r['first_eval_step']}), at the end {r['rss_at_end_mb']:.0f} MiB (step {r['end_eval_step']}), "
          f"ratio {r['ratio']:.3f} (limit 1 ± {TOLERANCE:.2f})")
    if args.write:
        write_section(str(Path(__file__).parent / "RESULTS.md"), SECTION, results_body(r, args.overrides))
    return 0 if r["within_tolerance"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Shared plumbing of the experiments: run one training from a base config plus overrides, collect its numbers,
and write a markdown table into docs/RESULTS.md (one section per experiment)."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _measure import write_section  # noqa: E402

RESULTS = ROOT / "docs" / "RESULTS.md"
# the quickstart's settings before the tuning of §5: sections 1, 2 and 4 compare objectives on these
UNTUNED_QUICKSTART = ["branches.image.expander=512-512", "branches.caption.expander=512-512",
                      "loss.variance_weight=25", "train.optimizer.lr=0.002"]


def run(base: str, overrides: Sequence[str], keep: str | None = None, after=None) -> dict[str, Any]:
    """Train ``examples/<base>`` with ``overrides``; returns eval.json, the last metrics record and, when given,
    ``after(run_dir)`` (called before a temporary run directory is deleted)."""
    from mmvicreg.config import load_config
    from mmvicreg.data.build import format_options
    from mmvicreg.train import train

    with tempfile.TemporaryDirectory() as tmp:
        out = keep or tmp
        cfg = load_config(ROOT / "examples" / base, [f"output_dir={out}", "train.progress=false", *overrides],
                          format_keys=format_options)
        result = train(cfg)
        lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
        extra = after(Path(out)) if after else None
        return {"eval": result, "last": json.loads(lines[-1]), "after": extra}


def mean_std(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def publish(title: str, body: str) -> None:
    print(body)
    write_section(str(RESULTS), title, body)

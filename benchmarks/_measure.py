"""Shared helpers for the benchmarks: peak resident memory of a call and a median timer.

Peak memory is read from the kernel (VmHWM after resetting it through /proc/self/clear_refs), because CPU
tensors are invisible to tracemalloc; every measurement runs in its own process so that allocator caches of
one implementation do not hide the memory of the next.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # not Linux, or not permitted: peak then includes earlier work
        pass


def peak_extra_mb(fn: Callable[[], object]) -> float:
    """Peak resident memory added while ``fn`` runs, in MiB."""
    reset_peak()
    base = _status_kb("VmRSS")
    fn()
    return max(0, _status_kb("VmHWM") - base) / 1024


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_worker(script: str, args: list[str], timeout: float = 1800) -> dict:
    """Run ``script --worker ARGS`` in a fresh interpreter and parse the JSON line it prints last."""
    proc = subprocess.run(
        [sys.executable, script, "--worker", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc={proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_section(results_md: str, title: str, body: str) -> None:
    """Replace (or append) the section ``## title`` of ``results_md`` with ``body``."""
    text = open(results_md).read() if os.path.exists(results_md) else "# Benchmark results\n"
    head = f"## {title}\n"
    start = text.find(head)
    if start >= 0:
        end = text.find("\n## ", start + len(head))
        text = text[:start] + text[end + 1 :] if end >= 0 else text[:start]
    text = text.rstrip("\n") + "\n\n" + head + "\n" + body.rstrip("\n") + "\n"
    with open(results_md, "w") as f:
        f.write(text)

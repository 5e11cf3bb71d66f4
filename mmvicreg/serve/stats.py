"""Counts and latency percentiles of the queries a server answered (the ``/api/metrics`` endpoint)."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class QueryStats:
    """Queries served, bad requests, and the latency of the last ``window`` queries (milliseconds)."""

    def __init__(self, window: int = 10_000) -> None:
        self.served = 0
        self.rejected = 0
        self._latencies: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def record(self, milliseconds: float) -> None:
        with self._lock:
            self.served += 1
            self._latencies.append(milliseconds)

    def reject(self) -> None:
        with self._lock:
            self.rejected += 1

    def snapshot(self) -> dict[str, object]:
        """``{"queries", "rejected", "latency_ms": {"p50", "p90", "p99", "window"}}`` (None before any query)."""
        with self._lock:
            values = np.array(self._latencies, dtype=np.float64)
            served, rejected = self.served, self.rejected
        pct = {f"p{q}": (float(np.percentile(values, q)) if values.size else None) for q in (50, 90, 99)}
        return {"queries": served, "rejected": rejected, "latency_ms": {**pct, "window": int(values.size)}}

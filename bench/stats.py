"""Latency summaries: nearest-rank percentiles over recorded samples, in milliseconds."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["percentile", "summarize"]


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile of already sorted values (0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(latencies_s: Sequence[float], elapsed_s: float) -> dict[str, float]:
    """Throughput and p50/p95/p99 (ms) of request latencies given in seconds."""
    ordered = sorted(latencies_s)
    return {
        "requests": len(ordered),
        "per_second": round(len(ordered) / elapsed_s, 1) if elapsed_s > 0 else 0.0,
        "p50_ms": round(percentile(ordered, 50) * 1000, 2),
        "p95_ms": round(percentile(ordered, 95) * 1000, 2),
        "p99_ms": round(percentile(ordered, 99) * 1000, 2),
    }

"""Figures of the soak scenario: per 10 s window, and over the run against the pass criteria
of issue #5 — server RSS grows < 10% after warm-up, no leaked file descriptors or
PostgreSQL connections, p99 of the last 5 minutes within 20% of the first 5 after warm-up."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import mean
from typing import Any

from bench.soak_traffic import MIX, Record
from bench.stats import percentile

__all__ = ["latency_figures", "phases", "summarize_soak", "window_figures"]

WARMUP_S = 180.0
COMPARE_S = 300.0
MEMORY_SPAN_S = 60.0
RSS_GROWTH_LIMIT_PERCENT = 10.0
P99_DRIFT_LIMIT_PERCENT = 20.0


def latency_figures(records: Sequence[Record]) -> dict[str, Any]:
    ordered = sorted(r.latency_s for r in records)
    return {
        "requests": len(ordered),
        "p50_ms": round(percentile(ordered, 50) * 1000, 1),
        "p99_ms": round(percentile(ordered, 99) * 1000, 1),
        "errors": sum(not r.ok for r in records),
    }


def window_figures(records: Sequence[Record], seconds: float) -> dict[str, Any]:
    """Requests, rate, p50/p99 (ms) and errors of the requests completed in one window."""
    figures = latency_figures(records)
    figures["per_second"] = round(len(records) / seconds, 1) if seconds > 0 else 0.0
    return figures


def _mean_of(windows: list[dict[str, Any]], key: str, low: float, high: float) -> float:
    """Mean of `key` over the windows ending in (low, high]."""
    values = [w[key] for w in windows if low < w["t_s"] <= high]
    return round(mean(values), 1) if values else 0.0


def _drift_by_detail(first: list[Record], last: list[Record]) -> dict[str, dict[str, Any]]:
    """p50/p99 of each request detail (search question, read type, write kind), first
    comparison span vs last: which requests a drift comes from."""
    details = sorted({r.detail for r in first} | {r.detail for r in last})
    return {
        detail: {
            "first": latency_figures([r for r in first if r.detail == detail]),
            "last": latency_figures([r for r in last if r.detail == detail]),
        }
        for detail in details
    }


def phases(duration_s: float) -> tuple[float, float]:
    """Warm-up and comparison span: 3 and 5 minutes, shortened for soaks under 30 minutes."""
    warmup = min(WARMUP_S, duration_s / 6)
    return warmup, min(COMPARE_S, (duration_s - warmup) / 2)


def _count_check(windows: list[dict[str, Any]], key: str, warmup: float) -> dict[str, Any]:
    """Start (first window after warm-up), end (last window), and whether the end stays
    within what the warm-up, under the same load, already needed (the pool's working set)."""
    after = [w for w in windows if w["t_s"] >= warmup] or windows
    during = [w[key] for w in windows if w["t_s"] <= warmup] or [after[0][key]]
    start, end = after[0][key], windows[-1][key]
    allowance = max(start, *during)
    return {
        "start": start,
        "end": end,
        "max": max(w[key] for w in windows),
        "warmup_max": max(during),
        "leak_free": end <= allowance,
    }


def summarize_soak(
    windows: list[dict[str, Any]], records: list[Record], duration_s: float
) -> dict[str, Any]:
    warmup, compare = phases(duration_s)
    end_s = windows[-1]["t_s"]
    span = min(MEMORY_SPAN_S, compare)
    rss_start = mean(w["server_rss_mib"] for w in windows if warmup < w["t_s"] <= warmup + span)
    rss_end = mean(w["server_rss_mib"] for w in windows if w["t_s"] > end_s - span)
    memory = {
        "rss_after_warmup_mib": round(rss_start, 1),
        "rss_end_mib": round(rss_end, 1),
        "rss_max_mib": max(w["server_rss_mib"] for w in windows),
        "growth_percent": round(100 * (rss_end / rss_start - 1), 1),
    }
    first = latency_figures([r for r in records if warmup <= r.done_s < warmup + compare])
    last = latency_figures([r for r in records if r.done_s >= end_s - compare])
    drift = round(100 * (last["p99_ms"] / first["p99_ms"] - 1), 1) if first["p99_ms"] else None
    latency = {"first": first, "last": last, "p99_change_percent": drift}
    first["other_cpu_percent"] = _mean_of(windows, "other_cpu_percent", warmup, warmup + compare)
    last["other_cpu_percent"] = _mean_of(windows, "other_cpu_percent", end_s - compare, end_s)
    settled = [r for r in records if r.done_s >= warmup]
    by_kind = {kind: latency_figures([r for r in settled if r.kind == kind]) for kind, _ in MIX}
    drift_by_detail = _drift_by_detail(
        [r for r in records if warmup <= r.done_s < warmup + compare],
        [r for r in records if r.done_s >= end_s - compare],
    )
    fds = _count_check(windows, "server_fds", warmup)
    connections = _count_check(windows, "pg_connections", warmup)
    criteria = [
        {
            "criterion": f"server RSS growth after warm-up < {RSS_GROWTH_LIMIT_PERCENT:g}%",
            "measured": f"{memory['growth_percent']}% "
            f"({memory['rss_after_warmup_mib']} -> {memory['rss_end_mib']} MiB)",
            "met": memory["growth_percent"] < RSS_GROWTH_LIMIT_PERCENT,
        },
        {
            "criterion": "no leaked file descriptors",
            "measured": f"{fds['start']} -> {fds['end']} (warm-up max {fds['warmup_max']})",
            "met": fds["leak_free"],
        },
        {
            "criterion": "no leaked PostgreSQL connections",
            "measured": f"{connections['start']} -> {connections['end']} "
            f"(warm-up max {connections['warmup_max']})",
            "met": connections["leak_free"],
        },
        {
            "criterion": f"p99 of the last {compare / 60:.2g} min within "
            f"{P99_DRIFT_LIMIT_PERCENT:g}% of the first after warm-up",
            "measured": f"{first['p99_ms']} -> {last['p99_ms']} ms ({drift:+}%)"
            if drift is not None
            else "no requests",
            "met": drift is not None and drift <= P99_DRIFT_LIMIT_PERCENT,
        },
    ]
    return {
        "warmup_s": warmup,
        "compare_s": compare,
        "seconds": end_s,
        "requests": len(records),
        "per_second": round(len(records) / end_s, 1) if end_s else 0.0,
        "errors": sum(not r.ok for r in records),
        "memory": memory,
        "fds": fds,
        "pg_connections": connections,
        "latency": latency,
        "by_kind": by_kind,
        "drift_by_detail": drift_by_detail,
        "criteria": criteria,
        "passed": all(c["met"] for c in criteria),
    }

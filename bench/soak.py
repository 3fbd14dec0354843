"""Scenario `soak` (issue #5): a steady, bounded mix of reads, writes, searches and
transaction Bundles against the loaded caseload for `--soak-minutes`, watching the server
every 10 s (memory, open file descriptors, PostgreSQL connections, p50/p99 per window) for
leaks and for latency that drifts as time passes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from bench.caseload import Staff
from bench.cpu_split import CpuMeter
from bench.other_load import OtherLoad
from bench.queries import Args
from bench.server import Server, free_port, start_server
from bench.soak_probe import Probe
from bench.soak_report import latency_figures, summarize_soak, window_figures
from bench.soak_traffic import MIX, Traffic

__all__ = ["SoakOptions", "run_soak"]


@dataclass(frozen=True)
class SoakOptions:
    minutes: float = 30.0
    rate: float = 50.0  # requests/s over all clients
    clients: int = 4
    window_s: float = 10.0
    seed: int = 1
    workers: int = 2  # of the control server
    control: bool = True  # afterwards, the same traffic against a freshly started server


async def _control(
    server: Server,
    ids: dict[str, list[str]],
    samples: dict[str, list[Args]],
    staff: Staff,
    options: SoakOptions,
    seconds: float,
) -> dict[str, Any]:
    """The same traffic against a second, freshly started server on the grown database: if
    its p99 matches the soak's last minutes, a drift came from the data; if it matches the
    first minutes, from the soaked server processes. A warm-up of a fifth is left out."""
    fresh = await asyncio.to_thread(
        start_server,
        server.data_dir / "control",
        free_port(),
        options.workers,
        server.database_url,
    )
    try:
        traffic = Traffic(
            fresh.base_url, ids, samples, staff, rate=options.rate, seed=-options.seed
        )
        traffic.begin()
        await traffic.run(options.clients, seconds * 1.25)
    finally:
        await asyncio.to_thread(fresh.stop)
    settled = [r for r in traffic.records if r.done_s >= seconds * 0.25]
    return {
        "seconds": seconds,
        **latency_figures(settled),
        "by_detail": {
            detail: latency_figures([r for r in settled if r.detail == detail])
            for detail in sorted({r.detail for r in settled})
        },
    }


async def _watch(
    traffic: Traffic, probe: Probe, window_s: float, stop: asyncio.Event
) -> list[dict[str, Any]]:
    """One window every `window_s` until `stop`, then a last (shorter) one."""
    windows: list[dict[str, Any]] = []
    seen = 0
    other_before = (await probe.read())["other_cpu_s"]
    next_at = time.perf_counter() + window_s
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_at - time.perf_counter()))
        end = time.perf_counter()
        records = traffic.records[seen:]
        seen += len(records)
        start_s = windows[-1]["t_s"] if windows else 0.0
        window = {"t_s": round(end - traffic.started, 1)}
        window |= window_figures(records, window["t_s"] - start_s)
        window |= await probe.read()
        capacity = (window["t_s"] - start_s) * (os.cpu_count() or 1)
        window["other_cpu_percent"] = (
            round(100 * (window["other_cpu_s"] - other_before) / capacity, 1) if capacity else 0.0
        )
        other_before = window["other_cpu_s"]
        windows.append(window)
        print(
            f"  soak t={window['t_s']:>6.0f} s  {window['per_second']:>5.1f} req/s  "
            f"p50 {window['p50_ms']:>7.1f} ms  p99 {window['p99_ms']:>7.1f} ms  "
            f"errors {window['errors']}  RSS {window['server_rss_mib']:.0f} MiB  "
            f"fds {window['server_fds']}  pg {window['pg_connections']}  "
            f"other CPU {window['other_cpu_percent']}%",
            flush=True,
        )
        if stop.is_set():
            return windows
        next_at += window_s


async def run_soak(
    server: Server,
    ids: dict[str, list[str]],
    samples: dict[str, list[Args]],
    staff: Staff,
    options: SoakOptions,
    other: OtherLoad | None = None,
    cpu: CpuMeter | None = None,
) -> dict[str, Any]:
    """Run the soak; `other` (if given) reports CPU used by processes outside the run, `cpu`
    measures the CPU split of the soak itself (not of the control phase)."""
    duration_s = options.minutes * 60
    traffic = Traffic(server.base_url, ids, samples, staff, rate=options.rate, seed=options.seed)
    probe = await Probe.open(server, other)
    try:
        before = await probe.read()
        print(
            f"soak: {options.minutes:g} min at {options.rate:g} requests/s from "
            f"{options.clients} clients; before: {before}",
            flush=True,
        )
        stop = asyncio.Event()
        with cpu() if cpu else nullcontext({}) as split:
            traffic.begin()
            watcher = asyncio.create_task(_watch(traffic, probe, options.window_s, stop))
            await traffic.run(options.clients, duration_s)
            stop.set()
            windows = await watcher
        await asyncio.sleep(options.window_s)  # idle: what the server keeps afterwards
        after = await probe.read()
    finally:
        await probe.close()
    summary = summarize_soak(windows, traffic.records, duration_s)
    if options.control:
        print(f"soak control: a fresh server for {summary['compare_s'] * 1.25:.0f} s", flush=True)
        summary["control"] = await _control(
            server, ids, samples, staff, options, summary["compare_s"]
        )
    return {
        "options": {
            "minutes": options.minutes,
            "rate_per_second": options.rate,
            "clients": options.clients,
            "window_s": options.window_s,
            "mix_percent": dict(MIX),
        },
        "before": before,
        "cpu": split,
        "idle_after": after,
        "resources_written": traffic.resources_written,
        "failures": dict(traffic.failures),
        **summary,
        "windows": windows,
    }

"""Who used the machine's CPU during a scenario: the server (`cmfhir serve` and its uvicorn
workers), PostgreSQL (postmaster, backends, and backends already gone), the harness with its
load generators (wrk, the httpx clients, asyncpg for the SQL side), and other processes.
Each as CPU seconds and as a share of the machine (wall time times cores)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psutil

from bench.other_load import OtherLoad
from bench.server import Server

__all__ = ["CpuMeter", "cpu_seconds", "cpu_split"]

# A scenario's way to measure one of its phases: `with cpu() as split: ...`.
CpuMeter = Callable[[], AbstractContextManager[dict[str, Any]]]


def _cpu(pids: list[int], *, reaped: bool = False) -> float:
    """User + system seconds of the live processes (and, with `reaped`, of the exited
    children they waited for)."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
        if reaped:
            total += times.children_user + times.children_system
    return total


cpu_seconds = _cpu


def _is_worker(pid: int) -> bool:
    """A uvicorn worker, not multiprocessing's resource tracker (a child of the supervisor
    too, which would show as a third, idle "worker")."""
    try:
        return "resource_tracker" not in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False


def _per_worker(server: Server) -> dict[int, float]:
    return {pid: _cpu([pid]) for pid in server.worker_pids() if _is_worker(pid)}


def _snapshot(server: Server, other: OtherLoad) -> dict[str, float]:
    postgres = server.postgres_pids()
    return {
        "server": _cpu(server.pids()),
        # `cmfhir worker`, when the background workers run apart (else 0).
        "background_worker": _cpu(server.background_pids()),
        # The postmaster reaps its backends: their time moves to its children times.
        "postgres": _cpu(postgres[:1], reaped=True) + _cpu(postgres[1:]),
        # Reaped children of the harness: wrk runs and other finished subprocesses.
        "harness_and_load": _cpu([os.getpid()], reaped=True),
        "other": other.cpu_seconds(),
    }


@contextmanager
def cpu_split(server: Server, other: OtherLoad) -> Iterator[dict[str, Any]]:
    """Fills the yielded dict, when the block ends, with each group's CPU seconds and
    share of the machine."""
    figures: dict[str, Any] = {}
    workers_before = _per_worker(server)
    before, started = _snapshot(server, other), time.monotonic()
    try:
        yield figures
    finally:
        other.sample()
        after, seconds = _snapshot(server, other), time.monotonic() - started
        workers_after = _per_worker(server)
        capacity = seconds * (os.cpu_count() or 1)
        figures["seconds"] = round(seconds, 1)
        for group, value in after.items():
            used = max(0.0, value - before[group])
            figures[group] = {
                "cpu_seconds": round(used, 1),
                "percent_of_machine": round(100 * used / capacity, 1) if capacity else 0.0,
            }
        # Each worker's share of one core: a lopsided split means the load's keep-alive
        # connections landed on one worker.
        figures["worker_percent_of_core"] = (
            [
                round(100 * (workers_after[pid] - workers_before.get(pid, 0.0)) / seconds, 1)
                for pid in sorted(workers_after)
            ]
            if seconds
            else []
        )

"""What the soak scenario watches about the server between requests: the resident memory of
`cmfhir serve` and all its uvicorn workers, their open file descriptors (`/proc/PID/fd`),
and the PostgreSQL connections the server holds (`pg_stat_activity`, application `cmfhir`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import asyncpg
import psutil

from bench.other_load import OtherLoad
from bench.server import Server

__all__ = ["Probe", "open_fds", "rss_bytes"]

MIB = 1024**2
_PG_CONNECTIONS = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cmfhir'"


def rss_bytes(pids: list[int]) -> int:
    """Summed resident set size of the processes still alive."""
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def open_fds(pids: list[int]) -> int:
    """Summed count of open file descriptors (entries of /proc/PID/fd)."""
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


@dataclass
class Probe:
    """One asyncpg connection of the harness's own (not counted: its application_name
    is not `cmfhir`), the server's process tree, and the CPU other processes used."""

    server: Server
    conn: asyncpg.Connection
    other: OtherLoad | None = None

    @classmethod
    async def open(cls, server: Server, other: OtherLoad | None = None) -> Probe:
        return cls(server, await asyncpg.connect(server.database_url), other)

    async def close(self) -> None:
        await self.conn.close()

    async def read(self) -> dict[str, Any]:
        pids = self.server.pids()
        connections: int = await self.conn.fetchval(_PG_CONNECTIONS)
        return {
            "server_rss_mib": round(rss_bytes(pids) / MIB, 1),
            "server_fds": open_fds(pids),
            "server_processes": len(pids),
            "pg_connections": connections,
            "other_cpu_s": round(self.other.cpu_seconds(), 2) if self.other else 0.0,
        }

"""CPU cost per search and per read, one request at a time, against a database a run kept
(`--keep-data`): server CPU ms and PostgreSQL CPU ms per request, beside the PostgreSQL CPU
ms of the hand-written SQL for the same page. CPU time per request moves far less than
latency when other work shares the machine, so before/after figures can be compared on a
busy machine.

    python -m bench.search_cost .data/bench/run-<stamp> [--requests 200] [--out F]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from bench.caseload import make_staff
from bench.headers import client_headers
from bench.probe import stored_ids
from bench.queries import QUERIES, build_samples
from bench.server import Server, free_port, start_server

_PAGE = 20


def _cpu(pids: list[int], reaped: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
        if pid in reaped:
            total += t.children_user + t.children_system
    return total


def _groups(server: Server) -> dict[str, float]:
    pg = server.postgres_pids()
    return {"server": _cpu(server.pids(), []), "postgres": _cpu(pg, pg[:1])}


def _measure(server: Server, paths: list[str], requests: int) -> dict[str, Any]:
    latencies = []
    with httpx.Client(base_url=f"{server.base_url}/", headers=client_headers()) as client:
        for path in paths[:10]:  # warm the statement caches
            client.get(path)
        before = _groups(server)
        for n in range(requests):
            started = time.perf_counter()
            response = client.get(paths[n % len(paths)])
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text[:300]
        after = _groups(server)
    return {
        "server_cpu_ms": round(1000 * (after["server"] - before["server"]) / requests, 2),
        "postgres_cpu_ms": round(1000 * (after["postgres"] - before["postgres"]) / requests, 2),
        "p50_ms": round(1000 * statistics.median(latencies), 2),
    }


async def _sql_cost(server: Server, sql: str, args: list[tuple[Any, ...]], n: int) -> float:
    conn = await asyncpg.connect(server.database_url)
    try:
        backend = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()"))
        statement = await conn.prepare(sql)
        for a in args[:10]:
            await statement.fetch(*a)
        t0 = backend.cpu_times()
        for k in range(n):
            await statement.fetch(*args[k % len(args)])
        t1 = backend.cpu_times()
        return round(1000 * ((t1.user + t1.system) - (t0.user + t0.system)) / n, 3)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.search_cost")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--only", default="")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    only = {x for x in args.only.split(",") if x}
    server = start_server(args.data_dir.resolve(), free_port(), 1, None)
    out: dict[str, Any] = {"load_average_start": os.getloadavg(), "rows": []}
    try:
        ids = asyncio.run(stored_ids(server.database_url))
        samples = asyncio.run(
            build_samples(server.database_url, make_staff(args.members), ids, args.members, 1)
        )
        reads = {
            "read_patient": [f"Patient/{i}" for i in ids["Patient"][:500]],
            "read_encounter": [f"Encounter/{i}" for i in ids["Encounter"][:500]],
        }
        print(f"{'query':38} {'srv ms':>7} {'pg ms':>7} {'SQL pg ms':>9} {'p50 ms':>7}")
        for name, paths in reads.items():
            if only and name not in only:
                continue
            row = {"query": name, **_measure(server, paths, args.requests)}
            out["rows"].append(row)
            print(f"{name:38} {row['server_cpu_ms']:7} {row['postgres_cpu_ms']:7} {'':9} "
                  f"{row['p50_ms']:7}")  # fmt: skip
        for query in QUERIES:
            if only and query.name not in only:
                continue
            values = samples.get(query.sample, [])
            row = {"query": query.name}
            row |= _measure(server, [query.path(v) for v in values], args.requests)
            sql_args = [(*query.sql_args(v), _PAGE + 1) for v in values]
            row["sql_postgres_cpu_ms"] = asyncio.run(
                _sql_cost(server, query.sql, sql_args, args.requests)
            )
            out["rows"].append(row)
            print(f"{query.name:38} {row['server_cpu_ms']:7} {row['postgres_cpu_ms']:7} "
                  f"{row['sql_postgres_cpu_ms']:9} {row['p50_ms']:7}")  # fmt: skip
    finally:
        server.stop()
    out["load_average_end"] = os.getloadavg()
    print(f"load average start {out['load_average_start']}, end {out['load_average_end']}")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""What the ingest harness's write (a member's transaction Bundle, about 60 resources) costs,
per resource stored, measured in one process on a scratch database: the server's CPU
(`time.process_time`), the embedded PostgreSQL's CPU, the WAL it wrote
(`pg_current_wal_lsn()` before and after: a load-independent measure of its work), the
statements the server sent and the rows it COPYd or inserted, per table.

    .venv/bin/python -m bench.ingest_cost [--members 60] [--side NAME ...] [--profile N]

Sides are named switches (`SIDES`) applied around alternate Bundles, so two ways of doing
the same write are compared in the same run, interleaved; `same` (the default, twice)
compares the code with itself, which shows the noise. `--profile N` runs cProfile over the
first side's Bundles and prints the N functions with the most own and cumulative time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg
import httpx
import orjson
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from bench import caseload
from bench.scratch import ROOT, admin_url, create_database, drop_database, postgres_cpu
from cmfhir.app import create_app
from cmfhir.config import Settings

# Named switches: a context manager that puts the process in that side's state.
SIDES: dict[str, Callable[[], Any]] = {}


def side(name: str) -> Callable[[Callable[[], Iterator[None]]], Callable[[], Any]]:
    def register(function: Callable[[], Iterator[None]]) -> Callable[[], Any]:
        SIDES[name] = contextmanager(function)
        return SIDES[name]

    return register


@side("same")
def _same() -> Iterator[None]:
    yield


class _Tally:
    """Statements and rows the server sends, counted at the asyncpg connection."""

    def __init__(self) -> None:
        self.statements = 0
        self.rows: Counter[str] = Counter()
        self.on = False

    @contextmanager
    def installed(self) -> Iterator[None]:
        conn = asyncpg.connection.Connection
        execute, many, copy = conn._execute, conn._executemany, conn.copy_records_to_table
        tally = self

        async def _execute(self: Any, query: str, args: Any, *rest: Any, **kw: Any) -> Any:
            if tally.on:
                tally.statements += 1
                verb = query.lstrip().split(None, 1)[0].upper()
                if verb == "INSERT":
                    tally.rows[_table_of(query)] += 1
            return await execute(self, query, args, *rest, **kw)

        async def _executemany(self: Any, query: str, args: Any, *rest: Any, **kw: Any) -> Any:
            args = list(args)
            if tally.on:
                tally.statements += 1
                if query.lstrip().upper().startswith("INSERT"):
                    tally.rows[_table_of(query)] += len(args)
            return await many(self, query, args, *rest, **kw)

        async def _copy(self: Any, table_name: str, *, records: Any, **kw: Any) -> Any:
            records = list(records)
            if tally.on:
                tally.statements += 1
                tally.rows[table_name] += len(records)
            return await copy(self, table_name, records=records, **kw)

        conn._execute, conn._executemany = _execute, _executemany  # type: ignore[method-assign]
        conn.copy_records_to_table = _copy  # type: ignore[method-assign]
        try:
            yield
        finally:
            conn._execute, conn._executemany = execute, many  # type: ignore[method-assign]
            conn.copy_records_to_table = copy  # type: ignore[method-assign]


def _table_of(query: str) -> str:
    words = query.split()
    upper = [w.upper() for w in words]
    return words[upper.index("INTO") + 1] if "INTO" in upper else "?"


@asynccontextmanager
async def _served(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench/fhir/") as http:
            yield http


async def _post(http: httpx.AsyncClient, bundle: dict[str, Any]) -> int:
    body = orjson.dumps(bundle)
    answer = await http.post("", content=body, headers={"content-type": "application/fhir+json"})
    assert answer.status_code == 200, answer.text[:500]
    return len(bundle["entry"])


async def _connect(url: str) -> asyncpg.Connection:
    parsed = make_url(url)
    return await asyncpg.connect(
        user=parsed.username,
        password=parsed.password,
        host=parsed.query.get("host") or parsed.host,
        port=parsed.port,
        database=parsed.database,
    )


async def run(members: int, sides: list[str], profile: int) -> dict[str, Any]:
    admin = admin_url()
    url = await create_database(admin, "cmfhir_ingestcost")
    settings = Settings(
        database_url=url, data_dir=ROOT / ".data" / "bench-ingest-cost", auth="off", workers=False
    )
    app = create_app(settings)
    labels = [f"{i}:{name}" for i, name in enumerate(sides)]
    zero = {"cpu": 0.0, "pg": 0.0, "wal": 0, "bundles": 0, "resources": 0, "statements": 0}
    totals: dict[str, dict[str, Any]] = {label: dict(zero) for label in labels}
    rows: dict[str, Counter[str]] = {label: Counter() for label in labels}
    profiler = cProfile.Profile() if profile else None
    staff = caseload.make_staff(max(members, 50))
    tally = _Tally()
    watcher = await _connect(url)
    try:
        async with _served(app) as http:
            await _post(http, caseload.staff_bundle(staff))
            for index in range(4):  # warm-up: compiled plans, prepared statements
                await _post(http, caseload.member_bundle(3, 10_000 + index, staff))
            with tally.installed():
                for index in range(members):
                    label = labels[index % len(labels)]
                    bundle = caseload.member_bundle(3, index, staff)
                    with SIDES[label.split(":", 1)[1]]():
                        wal = await watcher.fetchval("SELECT pg_current_wal_insert_lsn()")
                        tally.statements, tally.rows, tally.on = 0, Counter(), True
                        pg_before, before = postgres_cpu(admin), time.process_time()
                        if profiler is not None and label == labels[0]:
                            profiler.enable()
                        count = await _post(http, bundle)
                        if profiler is not None:
                            profiler.disable()
                        spent = time.process_time() - before
                        pg = postgres_cpu(admin) - pg_before
                        tally.on = False
                        wal_bytes = await watcher.fetchval(
                            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1)", wal
                        )
                    t = totals[label]
                    t["cpu"] += spent
                    t["pg"] += pg
                    t["wal"] += int(wal_bytes)
                    t["bundles"] += 1
                    t["resources"] += count
                    t["statements"] += tally.statements
                    rows[label].update(tally.rows)
    finally:
        await watcher.close()
        await drop_database(admin, url)
    out: dict[str, Any] = {}
    for label in labels:
        t = totals[label]
        n = t["resources"]
        out[label] = {
            "bundles": t["bundles"],
            "resources": n,
            "server_us_per_resource": round(1e6 * t["cpu"] / n, 1),
            "postgres_us_per_resource": round(1e6 * t["pg"] / n, 1),
            "wal_bytes_per_resource": round(t["wal"] / n),
            "statements_per_bundle": round(t["statements"] / t["bundles"], 1),
            "rows_per_resource": {k: round(v / n, 2) for k, v in sorted(rows[label].items())},
            "rows_per_resource_total": round(sum(rows[label].values()) / n, 2),
        }
    if profiler is not None:
        profiler.dump_stats(str(ROOT / ".data" / "ingest_cost.prof"))
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(profile)
        stats.sort_stats("cumulative").print_stats(profile)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--members", type=int, default=60)
    parser.add_argument("--side", action="append", choices=sorted(SIDES), default=None)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    args = parser.parse_args()
    sides = args.side or ["same", "same"]
    print(json.dumps(asyncio.run(run(args.members, sides, args.profile)), indent=2))


if __name__ == "__main__":
    main()

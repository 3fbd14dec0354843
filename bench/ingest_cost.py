"""What the ingest harness's write (a member's transaction Bundle, about 60 resources) costs,
per resource stored, measured in one process on a scratch database: the server's CPU
(`time.process_time`), the embedded PostgreSQL's CPU, the WAL it wrote
(`pg_current_wal_lsn()` before and after: a load-independent measure of its work), the
statements the server sent and the rows it COPYd or inserted, per table.

    .venv/bin/python -m bench.ingest_cost [--members 60] [--side NAME ...] [--profile N]
                                          [--waldump]

Sides are named switches (`SIDES`) applied around alternate Bundles, so two ways of doing
the same write are compared in the same run, interleaved; `same` (the default, twice)
compares the code with itself, which shows the noise. `--profile N` runs cProfile over the
first side's Bundles and prints the N functions with the most own and cumulative time.
`--waldump` reads the WAL of the measured Bundles with `pg_waldump` and prints the bytes
per resource by relation (heap, each index, TOAST) and by record type.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import re
import subprocess
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


@side("all_rows")
def _all_rows() -> Iterator[None]:
    """Index rows stored for every parameter, those stored under others' names too
    (`ResourceIndex.stored_elsewhere`): the layout before branch `index5`."""
    from cmfhir.store import indexing

    kept = indexing._stored_here, indexing._first_param
    indexing._stored_here = lambda index, elsewhere: index
    indexing._first_param = lambda index: None
    try:
        yield
    finally:
        indexing._stored_here, indexing._first_param = kept


class _Tally:
    """Statements and rows the server sends, counted at the asyncpg connection."""

    def __init__(self) -> None:
        self.statements = 0
        self.queries: list[str] = []
        self.rows: Counter[str] = Counter()
        self.on = False

    def _count(self, query: str, rows: int) -> None:
        self.statements += 1
        self.queries.append(f"{rows} {query[:140]}")
        if query.lstrip()[:6].upper() == "INSERT":
            self.rows[_table_of(query)] += rows

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Counting wrappers on the asyncpg calls the server makes: its own (`_execute`,
        `executemany`, `copy_records_to_table`, `execute` without arguments: BEGIN and
        COMMIT) and SQLAlchemy's (prepared statements)."""
        conn, prepared = asyncpg.connection.Connection, asyncpg.prepared_stmt.PreparedStatement
        saved = {
            (conn, "_execute"): conn._execute,
            (conn, "_executemany"): conn._executemany,
            (conn, "copy_records_to_table"): conn.copy_records_to_table,
            (conn, "execute"): conn.execute,
            (prepared, "fetch"): prepared.fetch,
            (prepared, "executemany"): prepared.executemany,
        }
        tally = self

        async def _execute(self: Any, query: str, args: Any, *rest: Any, **kw: Any) -> Any:
            if tally.on:
                tally._count(query, 1)
            return await saved[conn, "_execute"](self, query, args, *rest, **kw)

        async def _executemany(self: Any, query: str, args: Any, *rest: Any, **kw: Any) -> Any:
            args = list(args)
            if tally.on:
                tally._count(query, len(args))
            return await saved[conn, "_executemany"](self, query, args, *rest, **kw)

        async def execute(self: Any, query: str, *args: Any, **kw: Any) -> Any:
            if tally.on and not args:
                tally._count(query, 1)
            return await saved[conn, "execute"](self, query, *args, **kw)

        async def copy(self: Any, table_name: str, *, records: Any, **kw: Any) -> Any:
            records = list(records)
            if tally.on:
                tally.statements += 1
                tally.queries.append(f"{len(records)} COPY {table_name}")
                tally.rows[table_name] += len(records)
            return await saved[conn, "copy_records_to_table"](
                self, table_name, records=records, **kw
            )

        async def fetch(self: Any, *args: Any, **kw: Any) -> Any:
            if tally.on:
                query = self.get_query()
                inserted = query.count("), (") + 1 if " VALUES " in query else 1
                tally._count(query, inserted)
            return await saved[prepared, "fetch"](self, *args, **kw)

        async def prepared_many(self: Any, args: Any, **kw: Any) -> Any:
            args = list(args)
            if tally.on:
                tally._count(self.get_query(), len(args))
            return await saved[prepared, "executemany"](self, args, **kw)

        wrappers = {
            (conn, "_execute"): _execute,
            (conn, "_executemany"): _executemany,
            (conn, "copy_records_to_table"): copy,
            (conn, "execute"): execute,
            (prepared, "fetch"): fetch,
            (prepared, "executemany"): prepared_many,
        }
        for (owner, name), wrapper in wrappers.items():
            setattr(owner, name, wrapper)
        try:
            yield
        finally:
            for (owner, name), original in saved.items():
                setattr(owner, name, original)


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


def _lsn(value: int) -> str:
    """asyncpg's pg_lsn (an int) as PostgreSQL writes it."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def _waldump(start: str, end: str, resources: int, names: dict[int, str]) -> dict[str, Any]:
    """WAL bytes per resource between two LSNs, by relation and by record type."""
    import pgserver  # type: ignore[import-untyped]

    binary = f"{pgserver.__path__[0]}/pginstall/bin/pg_waldump"
    wal_dir = ROOT / ".data" / "test" / "pg" / "pg_wal"
    done = subprocess.run(
        [binary, "-p", str(wal_dir), "-s", start, "-e", end],
        capture_output=True,
        text=True,
        check=False,
    )
    text = done.stdout
    if not text:
        print(done.stderr)
    per_relation: Counter[str] = Counter()
    per_kind: Counter[str] = Counter()
    pattern = re.compile(r"rmgr: (\w+)\s+len \(rec/tot\):\s+\d+/\s*(\d+),.*?desc: (\w+)")
    for line in text.splitlines():
        found = pattern.search(line)
        if found is None:
            continue
        size = int(found.group(2))
        rel = re.search(r"rel \d+/\d+/(\d+)", line)
        name = names.get(int(rel.group(1)), rel.group(1)) if rel else "-"
        fpw = "FPW" in line
        per_relation[name] += size
        per_kind[f"{found.group(1)}:{found.group(3)}{' +FPW' if fpw else ''}"] += size
    return {
        "by_relation": {k: round(v / resources) for k, v in per_relation.most_common(40)},
        "by_record": {k: round(v / resources) for k, v in per_kind.most_common(25)},
    }


async def run(
    members: int,
    sides: list[str],
    profile: int,
    waldump: bool = False,
    show_statements: bool = False,
) -> dict[str, Any]:
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
    # The time spent in PL/pgSQL functions (the report trigger's), from the server's
    # connections opened after this.
    database = make_url(url).database
    await watcher.execute(f"ALTER DATABASE {database} SET track_functions = 'pl'")
    try:
        async with _served(app) as http:
            await _post(http, caseload.staff_bundle(staff))
            for index in range(4):  # warm-up: compiled plans, prepared statements
                await _post(http, caseload.member_bundle(3, 10_000 + index, staff))
            first_lsn = await watcher.fetchval("SELECT pg_current_wal_insert_lsn()")
            with tally.installed():
                for index in range(members):
                    label = labels[index % len(labels)]
                    bundle = caseload.member_bundle(3, index, staff)
                    with SIDES[label.split(":", 1)[1]]():
                        wal = await watcher.fetchval("SELECT pg_current_wal_insert_lsn()")
                        tally.statements, tally.rows, tally.on = 0, Counter(), True
                        tally.queries = []
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
                    if show_statements and index == members - 1:
                        print("\n".join(tally.queries))
                    t = totals[label]
                    t["cpu"] += spent
                    t["pg"] += pg
                    t["wal"] += int(wal_bytes)
                    t["bundles"] += 1
                    t["resources"] += count
                    t["statements"] += tally.statements
                    rows[label].update(tally.rows)
        last_lsn = await watcher.fetchval("SELECT pg_current_wal_insert_lsn()")
        await asyncio.sleep(1)  # statistics are flushed at the end of a transaction, lazily
        functions = {
            r[0]: (r[1], round(r[2], 1), round(r[3], 1))
            for r in await watcher.fetch(
                "SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions"
            )
        }
        names = {
            r[0]: r[1]
            for r in await watcher.fetch(
                "SELECT pg_relation_filenode(c.oid), coalesce(t.relname || ':toast', c.relname)"
                " FROM pg_class c LEFT JOIN pg_class t ON t.reltoastrelid = c.oid"
                " WHERE pg_relation_filenode(c.oid) IS NOT NULL"
            )
        }
        if waldump:  # before the database is dropped (a checkpoint recycles the WAL)
            resources = sum(t["resources"] for t in totals.values())
            wal = _waldump(_lsn(first_lsn), _lsn(last_lsn), resources, names)
    finally:
        await watcher.close()
        await drop_database(admin, url)
    out: dict[str, Any] = {"wal": wal} if waldump else {}
    # All sides together, warm-up included: (calls, total ms, own ms).
    out["plpgsql_functions"] = functions
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
    parser.add_argument("--waldump", action="store_true")
    parser.add_argument("--statements", action="store_true", help="list the last Bundle's")
    args = parser.parse_args()
    sides = args.side or ["same", "same"]
    out = asyncio.run(run(args.members, sides, args.profile, args.waldump, args.statements))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""`python -m bench.search_explain`: where each bench search (`bench/queries.py`) spends its
time, in one process over a scratch caseload: the server's CPU per search, and PostgreSQL's
execution of each statement the search sends, beside the hand-written SQL of the same page.

- **server CPU µs per search**: `time.process_time()` around the search interaction
  (`cmfhir.interactions.search_type.search`, no HTTP), one search at a time over the
  question's sample values, after a warm-up that fills the statement caches.
- **PostgreSQL**: every statement one search sends (captured at asyncpg), then
  `EXPLAIN (ANALYZE, BUFFERS)` of it for up to `--samples` sample values, once with
  `plan_cache_mode = force_custom_plan` and once with `force_generic_plan` (a prepared
  statement's plan after its fifth execution is one of the two): median execution and
  planning ms, shared buffers, and the rows the resource table gave. The hand-written
  SQL is explained the same way.

The caseload is loaded once (in-process transactions, `--members`, default 2,000) into a
new database of the worktree's embedded PostgreSQL (`.data/test`) and kept (its URL is
printed first), to be given with `--database-url` on later runs.

    python -m bench.search_explain --members 2000 --out F
    python -m bench.search_explain --database-url URL --out F
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import asyncpg

from bench.caseload import make_staff, member_bundles, staff_bundle
from bench.probe import stored_ids
from bench.queries import QUERIES, Query, build_samples
from bench.scratch import admin_url, create_database
from cmfhir.app import open_context
from cmfhir.auth.principal import OPEN, TRUSTED
from cmfhir.config import Settings
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.search_type import search
from cmfhir.interactions.transaction import process_bundle

__all__ = ["explain_statement", "main"]

_PAGE = 20
_BASE = "http://bench/fhir"
_MODES = ("custom", "generic")


async def _load(ctx: FhirContext, members: int, concurrency: int) -> None:
    staff = make_staff(members)
    await process_bundle(ctx, staff_bundle(staff), base=_BASE)
    bundles = member_bundles(1, members, staff)
    done = 0
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal done
        for bundle in bundles:  # one shared iterator: each bundle taken once
            await process_bundle(ctx, bundle, base=_BASE, representation=False)
            done += 1
            if done % 250 == 0:
                rate = done / (time.perf_counter() - started)
                print(f"loaded {done} members ({rate:.1f}/s)", file=sys.stderr, flush=True)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


# `_include` and `_revinclude` of one level on a 50-row page, each beside the same search
# without it (issue #10: at most 2x).
INCLUDES = tuple(
    Query(name, name, fhir, "", "care_manager")
    for name, fhir in (
        ("episodes_50", "EpisodeOfCare?care-manager=Practitioner/{0}&_count=50"),
        (
            "episodes_50_include",
            "EpisodeOfCare?care-manager=Practitioner/{0}&_count=50&_include=EpisodeOfCare:patient",
        ),
        (
            "patients_50",
            "Patient?_has:EpisodeOfCare:patient:care-manager=Practitioner/{0}&_count=50",
        ),
        (
            "patients_50_revinclude",
            "Patient?_has:EpisodeOfCare:patient:care-manager=Practitioner/{0}&_count=50"
            "&_revinclude=EpisodeOfCare:patient",
        ),
    )
)


# -- capturing what a search sends -----------------------------------------------------------

_captured: list[tuple[str, tuple[Any, ...]]] | None = None
_original_execute = asyncpg.connection.Connection._execute


async def _capturing_execute(self: Any, query: str, args: Any, *rest: Any, **kw: Any) -> Any:
    if _captured is not None:
        _captured.append((query, tuple(args)))
    return await _original_execute(self, query, args, *rest, **kw)


@contextmanager
def _capture() -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    global _captured
    found: list[tuple[str, tuple[Any, ...]]] = []
    _captured = found
    asyncpg.connection.Connection._execute = _capturing_execute  # type: ignore[method-assign]
    try:
        yield found
    finally:
        asyncpg.connection.Connection._execute = _original_execute  # type: ignore[method-assign]
        _captured = None


def _split(path: str) -> tuple[str, list[tuple[str, str]]]:
    parts = urlsplit(path)
    return parts.path, parse_qsl(parts.query, keep_blank_values=True)


async def _search(ctx: FhirContext, path: str) -> None:
    resource_type, params = _split(path)
    result = await search(ctx, resource_type, params, base=_BASE)
    if result.status != 200:
        raise RuntimeError(f"{path}: {result.status}")


# -- EXPLAIN ---------------------------------------------------------------------------------


def _resource_rows(plan: Any) -> int:
    if isinstance(plan, list):
        return sum(_resource_rows(p) for p in plan)
    if not isinstance(plan, dict):
        return 0
    own = 0
    if plan.get("Relation Name") == "resource":
        own = int(plan.get("Actual Rows", 0) * plan.get("Actual Loops", 1))
    return own + sum(_resource_rows(v) for v in plan.values() if isinstance(v, dict | list))


async def explain_statement(
    conn: asyncpg.Connection, sql: str, args: tuple[Any, ...], mode: str
) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of `sql` as a prepared statement executed with `args`,
    its plan chosen with `plan_cache_mode = force_<mode>_plan`."""
    prepared = await conn.prepare(sql)
    types = [t.name if t.schema == "pg_catalog" else f"{t.schema}.{t.name}" for t in
             prepared.get_parameters()]  # fmt: skip
    await conn.execute(f"SET plan_cache_mode = force_{mode}_plan")
    await conn.execute(f"PREPARE explained ({', '.join(types)}) AS {sql}" if types else
                       f"PREPARE explained AS {sql}")  # fmt: skip
    try:
        # EXECUTE takes no bound parameters: each value goes in as a literal of its type.
        literals = [
            await conn.fetchval(f"SELECT quote_nullable(($1::{t})::text) || '::{t}'", value)
            for t, value in zip(types, args, strict=True)
        ]
        execute = f"EXECUTE explained({', '.join(literals)})" if types else "EXECUTE explained"
        raw = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {execute}")
    finally:
        await conn.execute("DEALLOCATE explained")
        await conn.execute("RESET plan_cache_mode")
    (plan,) = json.loads(raw) if isinstance(raw, str) else raw
    top = plan["Plan"]
    return {
        "execution_ms": plan["Execution Time"],
        "planning_ms": plan.get("Planning Time", 0.0),
        "buffers": top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0),
        "resource_rows": _resource_rows(plan),
        "rows": top.get("Actual Rows", 0),
        "plan": plan,
    }


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in rows), 3)


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "execution_ms": _median(rows, "execution_ms"),
        "execution_ms_max": round(max(r["execution_ms"] for r in rows), 3),
        "planning_ms": _median(rows, "planning_ms"),
        "buffers": _median(rows, "buffers"),
        "resource_rows": _median(rows, "resource_rows"),
    }


def _label(sql: str) -> str:
    if sql.startswith("SELECT count(*)"):
        return "count"
    if "FROM resource r WHERE r.rid IN (" in sql or "unnest($1::text[], $2::text[])" in sql:
        return "include"
    return "page"


async def _explain_query(
    ctx: FhirContext, conn: asyncpg.Connection, query: Query, samples: list[Any], n: int
) -> dict[str, Any]:
    per_statement: dict[str, dict[str, list[dict[str, Any]]]] = {}
    plans: dict[str, Any] = {}
    for values in samples[:n]:
        with _capture() as sent:
            await _search(ctx, query.path(values))
        statements = [(sql, a) for sql, a in sent if sql.lstrip().upper().startswith("SELECT ")
                      and "FROM" in sql]  # fmt: skip
        found = [(_label(s), (s, a)) for s, a in statements]
        if query.sql:
            found.append(("sql", (query.sql, (*query.sql_args(values), _PAGE + 1))))
        for label, (sql, args) in found:
            for mode in _MODES:
                found = await explain_statement(conn, sql, args, mode)
                per_statement.setdefault(label, {}).setdefault(mode, []).append(found)
                plans.setdefault(f"{label}/{mode}", found["plan"])
    return {
        "statements": {
            label: {mode: _summary(rows) for mode, rows in modes.items()}
            for label, modes in per_statement.items()
        },
        "plans": plans,
    }


async def _server_cpu(ctx: FhirContext, paths: list[str], requests: int) -> dict[str, float]:
    for path in paths[:10]:
        await _search(ctx, path)
    started, cpu = time.perf_counter(), time.process_time()
    for k in range(requests):
        await _search(ctx, paths[k % len(paths)])
    return {
        "server_cpu_us": round(1e6 * (time.process_time() - cpu) / requests),
        "wall_ms": round(1e3 * (time.perf_counter() - started) / requests, 2),
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    admin = admin_url()  # the embedded PostgreSQL started (or joined) for this process
    url = args.database_url or await create_database(admin, "cmfhir_search")
    print(f"database: {url}", file=sys.stderr, flush=True)
    settings = Settings(database_url=url, pool_size=4)
    out: dict[str, Any] = {"database_url": url, "rows": []}
    async with open_context(settings) as opened:
        if args.database_url is None:
            await _load(replace(opened, principal=TRUSTED), args.members, args.concurrency)
        conn = await asyncpg.connect(url)
        try:
            # As an operator would after a bulk load (the harness does the same).
            await conn.execute("VACUUM ANALYZE" if args.database_url is None else "ANALYZE")
            out["resources"] = await conn.fetchval("SELECT count(*) FROM resource")
            members = await conn.fetchval(
                "SELECT count(*) FROM resource WHERE resource_type = 'Patient'"
            )
            out["members"] = members
            ids = await stored_ids(url)
            samples = await build_samples(url, make_staff(members), ids, members, 1)
            ctx = replace(opened, principal=OPEN)
            only = {x for x in args.only.split(",") if x}
            for query in (*QUERIES, *INCLUDES):
                if only and query.name not in only:
                    continue
                values = samples.get(query.sample, [])
                row: dict[str, Any] = {"query": query.name, "example": query.path(values[0])}
                row |= await _server_cpu(ctx, [query.path(v) for v in values], args.requests)
                row |= await _explain_query(ctx, conn, query, values, args.samples)
                out["rows"].append(row)
                _print(row)
        finally:
            await conn.close()
    return out


def _print(row: dict[str, Any]) -> None:
    parts = [f"{row['query']:36} cpu {row['server_cpu_us']:6} us"]
    for label, modes in row["statements"].items():
        c, g = modes["custom"], modes["generic"]
        parts.append(
            f"{label} {c['execution_ms']:.2f}/{g['execution_ms']:.2f} ms"
            f" (plan {c['planning_ms']:.2f}, {c['buffers']:.0f} buf, {c['resource_rows']:.0f} r)"
        )
    print(" | ".join(parts), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search_explain", description=__doc__)
    parser.add_argument("--database-url", help="a database loaded by an earlier --keep run")
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--only", default="")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    out = asyncio.run(_run(args))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scenario 3, search: each care-manager question under 20 clients through the FHIR API
(https://hl7.org/fhir/R4B/search.html) and, in the same run, as hand-written SQL over the
same database; p50/p99 side by side. Each question is first checked for the same answer.
Last, the `mixed` row: the questions that checked, in turn, under the same 20 clients (a
care-management team's traffic rather than one question at a time)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import asyncpg
import httpx

from bench.cpu_split import CpuMeter
from bench.headers import client_headers
from bench.load import run_load
from bench.queries import QUERIES, Args, Query
from bench.sql_load import run_sql_load

__all__ = ["CLIENTS", "MIXED", "run_search"]

CLIENTS = 20
MIXED = "mixed"  # the row of the questions in turn
_PAGE = 20  # the server's default _count


async def _check(
    client: httpx.AsyncClient, conn: asyncpg.Connection, query: Query, values: Args
) -> dict[str, Any]:
    """Fetch the first page both ways; an unsupported feature answers 400."""
    response = await client.get(query.path(values))
    if response.status_code != 200:
        issue = response.text[:300]
        if query.feature and response.status_code in (400, 501):
            return {"status": "unsupported", "detail": issue}
        return {"status": "error", "detail": f"{response.status_code}: {issue}"}
    bundle = response.json()
    server_ids = sorted(e["resource"]["id"] for e in bundle.get("entry", []))
    rows = await conn.fetch(query.sql, *query.sql_args(values), _PAGE)
    sql_ids = sorted(row[0] for row in rows)
    return {
        "status": "ok",
        "page_size": len(server_ids),
        "total": bundle.get("total"),
        "same_page_as_sql": server_ids == sql_ids,
        "sql_page_size": len(sql_ids),
    }


async def run_search(
    base_url: str,
    database_url: str,
    samples: dict[str, list[Args]],
    duration_s: float,
    cpu: CpuMeter | None = None,
    only: set[str] | None = None,
) -> list[dict[str, Any]]:
    """Each query checked, then loaded through the server (with `cpu`: its CPU split) and
    as SQL (with `only`: just the queries so named)."""
    rows: list[dict[str, Any]] = []
    checked: list[list[str]] = []  # each checked question's paths, for the mixed load
    conn = await asyncpg.connect(database_url)
    try:
        async with httpx.AsyncClient(
            base_url=f"{base_url}/", headers=client_headers(), timeout=60
        ) as client:
            for query in QUERIES:
                if only is not None and query.name not in only:
                    continue
                values = samples.get(query.sample, [])
                row: dict[str, Any] = {"query": query.name, "question": query.question}
                row["example"] = query.path(values[0]) if values else query.fhir
                if not values:
                    rows.append(row | {"status": "no data"})
                    continue
                check = await _check(client, conn, query, values[0])
                row |= check
                if check["status"] == "ok":
                    paths = [query.path(x) for x in values]
                    checked.append(paths)
                    with cpu() if cpu else nullcontext({}) as split:
                        row["server"] = run_load(base_url, paths, CLIENTS, duration_s)
                    row["cpu"] = split
                    args = [(*query.sql_args(x), _PAGE + 1) for x in values]
                    row["sql"] = await run_sql_load(
                        database_url, query.sql, args, CLIENTS, duration_s
                    )
                    sql_p99 = row["sql"]["p99_ms"]
                    row["p99_ratio"] = (
                        round(row["server"]["p99_ms"] / sql_p99, 1) if sql_p99 else None
                    )
                rows.append(row)
    finally:
        await conn.close()
    if len(checked) > 1 and (only is None or MIXED in only):
        with cpu() if cpu else nullcontext({}) as split:
            server = run_load(base_url, _in_turn(checked), CLIENTS, duration_s)
        rows.append(
            {
                "query": MIXED,
                "question": f"the {len(checked)} questions above in turn",
                "status": "ok",
                "server": server,
                "cpu": split,
            }
        )
    return rows


def _in_turn(paths: list[list[str]]) -> list[str]:
    """One path of each question in turn (each question's own values cycled), so any run
    of consecutive lines mixes every question."""
    longest = max(len(p) for p in paths)
    return [p[i % len(p)] for i in range(longest) for p in paths]

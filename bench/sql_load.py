"""The database's own limit for a question: a hand-written SQL query run directly with
asyncpg by a fixed number of concurrent connections, cycling through argument tuples."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from bench.stats import summarize

__all__ = ["run_sql_load"]


async def run_sql_load(
    database_url: str,
    sql: str,
    arguments: Sequence[tuple[Any, ...]],
    connections: int,
    duration_s: float,
) -> dict[str, Any]:
    """Run `sql` (one prepared statement per connection) for `duration_s`."""
    latencies: list[float] = []
    pool = await asyncpg.create_pool(database_url, min_size=connections, max_size=connections)
    try:

        async def worker(offset: int, deadline: float) -> None:
            index = offset
            async with pool.acquire() as conn:
                statement = await conn.prepare(sql)
                while time.perf_counter() < deadline:
                    index = (index + 1) % len(arguments)
                    started = time.perf_counter()
                    await statement.fetch(*arguments[index])
                    latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        deadline = started + duration_s
        await asyncio.gather(*(worker(n * 7919, deadline) for n in range(connections)))
        elapsed = time.perf_counter() - started
    finally:
        await pool.close()
    return {"tool": "asyncpg", "connections": connections, **summarize(latencies, elapsed)}

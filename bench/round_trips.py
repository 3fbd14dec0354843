"""Counting the database round trips a block of code makes through a store's engine: each
statement SQLAlchemy executes, and each one sent to asyncpg directly (BEGIN and COMMIT
among them: the asyncpg dialect starts and ends transactions that way). Preparing a
statement the connection has not seen yet is not counted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine


class RoundTrips:
    def __init__(self) -> None:
        self.count = 0
        self.statements: list[str] = []

    def _add(self, statement: str) -> None:
        self.count += 1
        self.statements.append(" ".join(statement.split())[:80])


@asynccontextmanager
async def round_trips(engine: AsyncEngine) -> AsyncIterator[RoundTrips]:
    counted = RoundTrips()
    logged: list[Any] = []

    def on_driver_query(record: Any) -> None:
        counted._add(record.query)

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not args[-1]:  # not executemany (asyncpg logs those itself)
            counted._add(statement)

    def on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        driver = dbapi_connection.driver_connection
        if driver not in logged:
            driver.add_query_logger(on_driver_query)
            logged.append(driver)

    sync = engine.sync_engine
    event.listen(sync, "before_cursor_execute", on_execute)
    event.listen(sync.pool, "checkout", on_checkout)
    try:
        yield counted
        await asyncio.sleep(0)  # asyncpg calls its query loggers soon, not at once
        await asyncio.sleep(0)
    finally:
        event.remove(sync, "before_cursor_execute", on_execute)
        event.remove(sync.pool, "checkout", on_checkout)
        for driver in logged:
            driver.remove_query_logger(on_driver_query)

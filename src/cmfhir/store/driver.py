"""The asyncpg connection under a SQLAlchemy one, for statements sent as text with only
their values bound (searches, includes): asyncpg prepares each text once per connection."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["driver_connection"]


async def driver_connection(conn: AsyncConnection) -> Any:
    """The asyncpg connection of `conn`, inside `conn`'s transaction if it has one.

    SQLAlchemy's asyncpg adapter sends BEGIN with its first statement, so a transaction in
    which nothing has run yet is not open on the driver: a statement sent straight to it
    would run outside (and before) the transaction's snapshot. One statement through
    SQLAlchemy opens it first; autocommit connections (reads) skip this.
    """
    raw = await conn.get_raw_connection()
    adapted: Any = raw.dbapi_connection
    if (
        conn.in_transaction()
        and getattr(adapted, "isolation_level", None) != "autocommit"
        and getattr(adapted, "_transaction", True) is None
    ):
        await conn.exec_driver_sql("SELECT 1")
    return raw.driver_connection

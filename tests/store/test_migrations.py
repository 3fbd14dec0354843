"""The migrations in migrations/ build exactly the schema store/schema.py declares."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from cmfhir.config import Settings
from cmfhir.store.database import async_url
from cmfhir.store.schema import metadata


async def _diff(url: str) -> list[Any]:
    engine = create_async_engine(async_url(url))
    try:
        async with engine.connect() as conn:

            def compare(sync_conn: Any) -> list[Any]:
                context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
                return list(compare_metadata(context, metadata))

            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


def test_migrated_schema_matches_the_declared_one(base: str, settings: Settings) -> None:
    # `base` starts the server, which migrates the test database to the newest revision.
    assert asyncio.run(_diff(settings.database_url or "")) == []

"""Connecting to PostgreSQL: an external server (`CMFHIR_DATABASE_URL`) or the embedded one
from the pgserver wheel, kept in the data directory; schema migrations applied at start."""

from __future__ import annotations

import asyncio
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cmfhir.resources.fhirjson import dump_json

__all__ = ["Database", "async_url", "embedded_url", "open_database"]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"
# Serializes migrations when several processes start at once.
_MIGRATION_LOCK = 0x636D66686972


def embedded_url(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL in `data_dir/pg` and return its URL."""
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime dir at import; a missing XDG_RUNTIME_DIR
        # (containers, CI) only means it falls back to /tmp, which is fine.
        warnings.simplefilter("ignore")
        import pgserver

    pgdata = (data_dir / "pg").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    uri: str = server.get_uri()
    return uri


def async_url(url: str) -> str:
    """The asyncpg form of a PostgreSQL URL (`postgresql://` → `postgresql+asyncpg://`)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def _json_serializer(value: Any) -> str:
    return dump_json(value).decode()


@dataclass
class Database:
    engine: AsyncEngine
    url: str

    async def dispose(self) -> None:
        await self.engine.dispose()

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (see `migrations/`)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        async with self.engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})

            # Alembic announces its plugins and context at INFO on every start.
            logging.getLogger("alembic").setLevel(logging.WARNING)

            def upgrade(sync_conn: Any) -> None:
                cfg.attributes["connection"] = sync_conn
                command.upgrade(cfg, "head")

            await conn.run_sync(upgrade)


async def open_database(
    database_url: str | None,
    data_dir: Path,
    *,
    pool_size: int = 10,
    statement_timeout_ms: int = 60_000,
    migrate: bool = True,
) -> Database:
    if database_url is None:
        database_url = await asyncio.to_thread(embedded_url, data_dir)
    url = async_url(database_url)
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        # No overflow: past the pool, requests wait for a connection rather than open and
        # close one each (a PostgreSQL backend forked per request).
        max_overflow=0,
        # No ping before each use (a round trip per request): a connection the database
        # dropped fails its request with 503 and the pool is refreshed.
        pool_pre_ping=False,
        json_serializer=_json_serializer,
        # A database that is down must fail requests fast (503), not hang them.
        connect_args={
            "server_settings": {
                "application_name": "cmfhir",
                # A statement that runs away is stopped, not left running for nobody.
                "statement_timeout": str(statement_timeout_ms),
            },
            "timeout": 5,
        },
    )
    db = Database(engine=engine, url=url)
    if migrate:
        await db.migrate()
    log.info("database ready at %s", make_url(url).render_as_string(hide_password=True))
    return db

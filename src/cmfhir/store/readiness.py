"""Is the database ready to serve: reachable, and its schema at the migration this release
ships as its newest (`GET /readyz`)."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cmfhir.store.database import MIGRATIONS_DIR

__all__ = ["Readiness"]

log = logging.getLogger(__name__)


def _head_revisions() -> frozenset[str]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return frozenset(ScriptDirectory.from_config(config).get_heads())


class Readiness:
    """Checks one engine against the migrations on disk (read once)."""

    def __init__(self, engine: AsyncEngine, *, timeout: float = 3.0) -> None:
        self.engine = engine
        self.timeout = timeout
        self.heads = _head_revisions()

    async def problem(self) -> str | None:
        """None when ready, else a short reason safe to show any caller."""
        try:
            current = await asyncio.wait_for(self._current(), self.timeout)
        except TimeoutError:
            log.warning("readiness: the database did not answer in %g s", self.timeout)
            return "database unavailable"
        except Exception as error:  # any failure to reach it means not ready
            log.warning("readiness: database unavailable (%s)", type(error).__name__)
            return "database unavailable"
        if current != self.heads:
            log.warning(
                "readiness: schema at %s, this release expects %s",
                ",".join(sorted(current)) or "no revision",
                ",".join(sorted(self.heads)),
            )
            return "database schema is not at this release's migration"
        return None

    async def _current(self) -> frozenset[str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
            return frozenset(str(row[0]) for row in rows)

"""The `export_job` table (migration 0009_exchange): Bulk Data export jobs, claimed by
workers with `FOR UPDATE SKIP LOCKED` and a lease, so a job whose worker died is taken
again once its lease runs out. `import_job` (migration 0011_import_job) has the same
columns plus `state`, where an import records how far it got (`ImportJobs`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["ExportJob", "ExportJobs", "ImportJobs"]


@dataclass(frozen=True, slots=True)
class ExportJob:
    id: str
    status: str
    request: str
    params: dict[str, Any]
    principal: dict[str, Any]
    progress: str | None
    manifest: dict[str, Any] | None
    error: str | None
    expires_at: datetime | None
    attempts: int


_COLUMNS = "id, status, request, params, principal, progress, manifest, error, expires_at, attempts"


def _job(row: Any) -> ExportJob:
    def load(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    return ExportJob(
        row[0],
        row[1],
        row[2],
        load(row[3]),
        load(row[4]),
        row[5],
        load(row[6]),
        row[7],
        row[8],
        int(row[9]),
    )


class ExportJobs:
    """Each method is its own short transaction (autocommit of one statement or a claim)."""

    table = "export_job"

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self, id: str, request: str, params: dict[str, Any], principal: dict[str, Any]
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    f"INSERT INTO {self.table} (id, status, request, params, principal)"
                    " VALUES (:id, 'accepted', :request, CAST(:params AS jsonb),"
                    " CAST(:principal AS jsonb))"
                ),
                {
                    "id": id,
                    "request": request,
                    "params": json.dumps(params),
                    "principal": json.dumps(principal),
                },
            )

    async def get(self, id: str) -> ExportJob | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(f"SELECT {_COLUMNS} FROM {self.table} WHERE id = :id"), {"id": id}
                )
            ).first()
        return None if row is None else _job(row)

    async def claim(self, lease_s: int) -> ExportJob | None:
        """The oldest job waiting (or whose worker's lease ran out), now in progress."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        f"""
                        UPDATE {self.table} SET status = 'in-progress',
                               started_at = coalesce(started_at, now()),
                               lease_until = now() + make_interval(secs => :lease),
                               attempts = attempts + 1
                        WHERE id = (
                            SELECT id FROM {self.table}
                            WHERE status = 'accepted'
                               OR (status = 'in-progress' AND lease_until < now())
                            ORDER BY created_at
                            FOR UPDATE SKIP LOCKED
                            LIMIT 1)
                        RETURNING {_COLUMNS}
                        """
                    ),
                    {"lease": lease_s},
                )
            ).first()
        return None if row is None else _job(row)

    async def heartbeat(self, id: str, progress: str, lease_s: int) -> str | None:
        """Record progress and extend the lease; the job's status now (a DELETE may have
        cancelled it), None if it is gone."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        f"UPDATE {self.table} SET progress = :progress,"
                        " lease_until = now() + make_interval(secs => :lease)"
                        " WHERE id = :id AND status = 'in-progress' RETURNING status"
                    ),
                    {"id": id, "progress": progress, "lease": lease_s},
                )
            ).first()
            if row is not None:
                return str(row[0])
            status = (
                await conn.execute(
                    text(f"SELECT status FROM {self.table} WHERE id = :id"), {"id": id}
                )
            ).scalar_one_or_none()
        return None if status is None else str(status)

    async def complete(
        self, id: str, manifest: dict[str, Any], transaction_time: datetime, expiry_s: int
    ) -> bool:
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        f"UPDATE {self.table} SET status = 'completed', finished_at = now(),"
                        " manifest = CAST(:manifest AS jsonb), transaction_time = :tt,"
                        " progress = 'completed', lease_until = NULL,"
                        " expires_at = now() + make_interval(secs => :expiry)"
                        " WHERE id = :id AND status = 'in-progress' RETURNING id"
                    ),
                    {
                        "id": id,
                        "manifest": json.dumps(manifest),
                        "tt": transaction_time,
                        "expiry": expiry_s,
                    },
                )
            ).first()
        return row is not None

    async def fail(self, id: str, error: str, expiry_s: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    f"UPDATE {self.table} SET status = 'failed', finished_at = now(),"
                    " error = :error,"
                    " lease_until = NULL, expires_at = now() + make_interval(secs => :expiry)"
                    " WHERE id = :id AND status = 'in-progress'"
                ),
                {"id": id, "error": error, "expiry": expiry_s},
            )

    async def cancel(self, id: str) -> bool:
        """Cancel (or, once completed, discard) a job; False when there is none to cancel."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        f"UPDATE {self.table} SET status = 'cancelled', finished_at = now(),"
                        " lease_until = NULL, expires_at = now()"
                        " WHERE id = :id AND status <> 'cancelled' RETURNING id"
                    ),
                    {"id": id},
                )
            ).first()
        return row is not None

    async def expired(self) -> list[str]:
        """Jobs past their expiry: their rows are deleted here, their files by the caller."""
        async with self.engine.begin() as conn:
            rows = await conn.execute(
                text(f"DELETE FROM {self.table} WHERE expires_at < now() RETURNING id")
            )
            return [str(r[0]) for r in rows]

    async def running(self, client: str | None) -> int:
        async with self.engine.connect() as conn:
            count = await conn.execute(
                text(
                    f"SELECT count(*) FROM {self.table}"
                    " WHERE status IN ('accepted', 'in-progress')"
                    " AND principal->>'client_id' IS NOT DISTINCT FROM :client"
                ),
                {"client": client},
            )
            return int(count.scalar_one())


class ImportJobs(ExportJobs):
    """`$import` jobs: the export jobs' life cycle, plus the state an import resumes from."""

    table = "import_job"

    async def checkpoint(
        self, id: str, state: dict[str, Any], progress: str, lease_s: int
    ) -> str | None:
        """Record how far the import got (after a committed batch) and extend the lease;
        the job's status now, as `heartbeat` answers."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        "UPDATE import_job SET state = CAST(:state AS jsonb), progress = :progress,"
                        " lease_until = now() + make_interval(secs => :lease)"
                        " WHERE id = :id AND status = 'in-progress' RETURNING status"
                    ),
                    {"id": id, "state": json.dumps(state), "progress": progress, "lease": lease_s},
                )
            ).first()
        if row is not None:
            return str(row[0])
        job = await self.get(id)
        return None if job is None else job.status

    async def state(self, id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            value = (
                await conn.execute(text("SELECT state FROM import_job WHERE id = :id"), {"id": id})
            ).scalar_one_or_none()
        return json.loads(value) if isinstance(value, str) else value

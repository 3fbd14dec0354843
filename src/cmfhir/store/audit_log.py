"""The audit trail's writer (interactions/audit.py): new AuditEvents into their own table
(store/audit_events.py), a batch in one statement.

The buffered events of reads, searches, logins and refused requests are written on their
own account (`append_events`: one COPY, its own transaction, each event stamped with the
clock of the process that built it, as every AuditEvent is); the AuditEvents of a
transaction's writes in that transaction (`append_events_in`), so they commit with it or
not at all. Neither goes through the generic write path: no access or referential-integrity
check (the trail names what was read, which may be deleted since), no history row, no
index rows, no outbox event."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from cmfhir.store.audit_events import EventRow, insert_events
from cmfhir.store.driver import driver_connection
from cmfhir.store.indexing import Record, index_records
from cmfhir.store.reader import reader_for
from cmfhir.store.records import NewVersion
from cmfhir.store.repository import Repository

__all__ = ["AUDIT_RECORD_COLUMNS", "EventRow", "append_events", "append_events_in", "event_row"]

# The columns of the index records the trail makes per family (interactions/audit_rows.py):
# store/indexing.py's RECORD_COLUMNS without `rid`, `resource_type` and `grp`, nor a
# token's `text` (the trail's codings have none).
AUDIT_RECORD_COLUMNS = {
    "token": ("param", "system", "code"),
    "string": ("param", "value", "exact"),
    "date": ("param", "low", "high"),
    "reference": ("param", "target_type", "target_id", "url"),
}


def event_row(version: NewVersion) -> EventRow:
    """The row of the first version of a new AuditEvent made as any resource is
    (`audit_version`, the generic indexer): its content whole, with its own stamp."""
    if version.resource_type != "AuditEvent" or version.version != 1:
        raise ValueError("event_row takes the first version of a new AuditEvent")
    index: dict[str, list[Record]] = {}
    if version.index is not None:
        for kind, records in index_records(0, "AuditEvent", version.index).items():
            index[kind] = [r[3:] for r in records]
    return EventRow(
        version.id,
        version.content or "",
        version.patient_id,
        index,
        stamped=version.last_updated,
    )


async def append_events(engine: AsyncEngine, rows: Sequence[EventRow]) -> None:
    """Store new AuditEvents in one statement (a COPY in its own transaction), on a
    connection of `engine`'s raw pool (store/reader.py) when it has one: taking one of
    SQLAlchemy's (checkout, and a rollback round trip on return) cost a batch of thirty
    events as much CPU again as the COPY itself."""
    if not rows:
        return
    reader = reader_for(engine)
    if reader is not None:
        async with reader.connection() as driver:
            await insert_events(driver, rows)
        return
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        await insert_events(driver, rows)


async def append_events_in(repo: Repository, rows: Sequence[EventRow]) -> None:
    """Store new AuditEvents in `repo`'s transaction."""
    if rows:
        await insert_events(await driver_connection(repo.conn), rows)

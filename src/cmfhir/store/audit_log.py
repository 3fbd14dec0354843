"""The audit trail's batch writer (interactions/audit.py): the first versions of many new
resources the server writes on its own account — the buffered AuditEvents of reads,
searches, logins and refused requests — appended in one transaction by COPY alone.

`append_audit_rows` takes them as interactions/audit_rows.py builds them: the JSON around
its `meta.lastUpdated` and the index records, with no rid yet (`AuditRow`);
`append_new_versions` takes `NewVersion`s (the generic indexer's, when the trail cannot
build its own rows).

The same rows as `Repository.write(versions, as_server=True)` (current row, history row,
index rows, outbox event), without what a client's write needs and an AuditEvent does not:
no access check, no referential-integrity check, no journal, and no INSERT ... RETURNING
for the rids, which are taken from the table's sequence by the query that stamps the
versions. tests/auth/test_audit_batch.py compares what it stores with what the generic
indexer and `cmfhir check` expect."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from cmfhir.store.copying import (
    HISTORY_COLUMNS,
    INDEX_COLUMNS,
    RESOURCE_COLUMNS,
    STAMP_AND_RIDS,
    copy_first_versions,
    copy_records,
    to_millisecond,
)
from cmfhir.store.history import restamp
from cmfhir.store.indexing import Record, index_records
from cmfhir.store.records import NewVersion
from cmfhir.store.schema import INDEX_TABLES, event, resource, resource_history

__all__ = ["AuditRow", "append_audit_rows", "append_new_versions"]


@dataclass(frozen=True, slots=True)
class AuditRow:
    """The first version of a new AuditEvent: its content is `head`, the version's stamp
    (a FHIR instant, `meta.lastUpdated`) and `tail`; `index` holds its index records per
    family (`token`, `date`, ... as in schema.INDEX_TABLES), each a record of
    store/indexing.py's `RECORD_COLUMNS` without the leading `rid`."""

    id: str
    head: str
    tail: str
    patient_id: str | None
    index: dict[str, list[Record]]


_AUDIT_EVENT = "AuditEvent"
_EVENT_COLUMNS = ["rid", "resource_type", "id", "version", "method", "patient_id"]


async def append_audit_rows(engine: AsyncEngine, rows: Sequence[AuditRow]) -> None:
    """Store new AuditEvents in one transaction: current rows, history, index rows and
    outbox events, each table by one COPY, stamped with the database clock and given their
    rids as `Repository.write` does."""
    if not rows:
        return
    async with engine.connect() as conn, conn.begin():
        _, clock, rids = (await conn.execute(STAMP_AND_RIDS, {"n": len(rows)})).one()
        now = to_millisecond(clock)
        stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        current, history, events = [], [], []
        index: dict[str, list[Record]] = {}
        for row, rid in zip(rows, rids, strict=True):
            content = row.head + stamp + row.tail
            patient = row.patient_id
            current.append((rid, _AUDIT_EVENT, row.id, 1, now, False, patient, content))
            history.append((rid, 1, _AUDIT_EVENT, row.id, now, "create", patient, content))
            events.append((rid, _AUDIT_EVENT, row.id, 1, "create", patient))
            for kind, records in row.index.items():
                found = index.get(kind)
                if found is None:
                    found = index[kind] = []
                found.extend([(rid, *r) for r in records])
        driver = (await conn.get_raw_connection()).driver_connection
        await copy_records(driver, resource.name, RESOURCE_COLUMNS, current)
        await copy_records(driver, resource_history.name, HISTORY_COLUMNS, history)
        for kind, records in index.items():
            await copy_records(driver, INDEX_TABLES[kind].name, INDEX_COLUMNS[kind], records)
        await copy_records(driver, event.name, _EVENT_COLUMNS, events)


async def append_new_versions(engine: AsyncEngine, versions: Sequence[NewVersion]) -> None:
    """Store the first versions (`version` 1, `rid` None, method create) of new resources in
    one transaction: current rows, history, index rows and outbox events, each by one COPY.
    The versions are stamped with the database clock and given their rids, as
    `Repository.write` does."""
    if not versions:
        return
    async with engine.connect() as conn, conn.begin():
        # Through SQLAlchemy: it begins the transaction, and the stamp must be read in it.
        _, clock, rids = (await conn.execute(STAMP_AND_RIDS, {"n": len(versions)})).one()
        now = to_millisecond(clock)
        index: dict[str, list[Record]] = {kind: [] for kind in INDEX_TABLES}
        for v, rid in zip(versions, rids, strict=True):
            if v.rid is not None or v.version != 1 or v.method != "create":
                raise ValueError("append_new_versions writes first versions of new resources")
            restamp(v, now)
            v.rid = rid
            if v.index is not None:
                for kind, records in index_records(rid, v.resource_type, v.index).items():
                    index[kind].extend(records)
        raw = await conn.get_raw_connection()
        await copy_first_versions(raw.driver_connection, versions, index)

"""The audit trail's batch writer (interactions/audit.py): the first versions of many new
resources the server writes on its own account — the buffered AuditEvents of reads,
searches, logins and refused requests — appended in one transaction by COPY alone.

The same rows as `Repository.write(versions, as_server=True)` (current row, history row,
index rows, outbox event), without what a client's write needs and an AuditEvent does not:
no access check, no referential-integrity check, no journal, and no INSERT ... RETURNING
for the rids, which are taken from the table's sequence by the query that stamps the
versions. tests/auth/test_audit_batch.py compares what it stores with what the generic
indexer and `cmfhir check` expect."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from cmfhir.store.copying import STAMP_AND_RIDS, copy_first_versions, to_millisecond
from cmfhir.store.history import restamp
from cmfhir.store.indexing import Record, index_records
from cmfhir.store.records import NewVersion
from cmfhir.store.schema import INDEX_TABLES

__all__ = ["append_new_versions"]


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

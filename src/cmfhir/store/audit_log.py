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
from datetime import UTC
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cmfhir.resources.index_values import ResourceIndex
from cmfhir.store.history import restamp
from cmfhir.store.indexing import MAX_INDEXED_BYTES, index_rows
from cmfhir.store.records import NewVersion
from cmfhir.store.schema import INDEX_TABLES, event, resource, resource_history

__all__ = ["append_new_versions"]

# The transaction's id first, then the clock (as Repository._stamp: the history watermark
# relies on a stamp read once the transaction has its id), and one rid per version.
_STAMP = text(
    "WITH assigned AS MATERIALIZED (SELECT pg_current_xact_id() AS xid) "
    "SELECT xid, clock_timestamp(), ARRAY(SELECT nextval(pg_get_serial_sequence("
    "'resource', 'rid')) FROM generate_series(1, :n)) FROM assigned"
).bindparams(bindparam("n"))
_RESOURCE_COLUMNS = [
    "rid",
    "resource_type",
    "id",
    "version",
    "last_updated",
    "deleted",
    "patient_id",
    "content",
]
_HISTORY_COLUMNS = [
    "rid",
    "version",
    "resource_type",
    "id",
    "last_updated",
    "method",
    "patient_id",
    "content",
]
_EVENT_COLUMNS = ["rid", "resource_type", "id", "version", "method", "patient_id"]
_COLUMNS = {kind: [c.name for c in table.c] for kind, table in INDEX_TABLES.items()}
# Up to 4 bytes a character: a string this short fits an index entry without encoding it.
_ALWAYS_FITS = MAX_INDEXED_BYTES // 4


def _fit(value: str | None) -> str | None:
    """As store/indexing.py cuts a text value to what a btree entry holds."""
    if value is None or len(value) <= _ALWAYS_FITS:
        return value
    encoded = value.encode()
    if len(encoded) <= MAX_INDEXED_BYTES:
        return value
    return encoded[:MAX_INDEXED_BYTES].decode(errors="ignore")


def _index_records(
    rid: int, resource_type: str, index: ResourceIndex, out: dict[str, list[tuple[Any, ...]]]
) -> None:
    """The index rows of one version as COPY records, in INDEX_TABLES' column order. The
    families an AuditEvent fills are built straight into tuples; any other value (numbers,
    quantities, uris, identifier types, composites) goes through store/indexing.py."""
    token = out["token"]
    for t in index.token:
        token.append((rid, resource_type, t.param, _fit(t.system), _fit(t.code), t.text, None))
    for r in index.reference_identifiers:
        token.append(
            (rid, resource_type, r.param + ":identifier", _fit(r.system), _fit(r.value), None, None)
        )
    out["string"].extend(
        (rid, resource_type, s.param, _fit(s.value), _fit(s.exact), None) for s in index.string
    )
    out["date"].extend((rid, resource_type, d.param, d.low, d.high, None) for d in index.date)
    out["reference"].extend(
        (rid, resource_type, r.param, _fit(r.target_type), _fit(r.target_id), _fit(r.url), None)
        for r in index.reference
    )
    if index.number or index.quantity or index.uri or index.identifier_types or index.composite:
        rest = ResourceIndex(
            number=index.number,
            quantity=index.quantity,
            uri=index.uri,
            identifier_types=index.identifier_types,
            composite=index.composite,
        )
        for kind, rows in index_rows(rid, resource_type, rest).items():
            columns = _COLUMNS[kind]
            out[kind].extend(tuple(row[c] for c in columns) for row in rows)


async def append_new_versions(engine: AsyncEngine, versions: Sequence[NewVersion]) -> None:
    """Store the first versions (`version` 1, `rid` None, method create) of new resources in
    one transaction: current rows, history, index rows and outbox events, each by one COPY.
    The versions are stamped with the database clock and given their rids, as
    `Repository.write` does."""
    if not versions:
        return
    async with engine.connect() as conn, conn.begin():
        # Through SQLAlchemy: it begins the transaction, and the stamp must be read in it.
        _, clock, rids = (await conn.execute(_STAMP, {"n": len(versions)})).one()
        now = clock.astimezone(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        current: list[tuple[Any, ...]] = []
        history: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        index: dict[str, list[tuple[Any, ...]]] = {kind: [] for kind in INDEX_TABLES}
        for v, rid in zip(versions, rids, strict=True):
            if v.rid is not None or v.version != 1 or v.method != "create":
                raise ValueError("append_new_versions writes first versions of new resources")
            restamp(v, now)
            v.rid = rid
            current.append((rid, v.resource_type, v.id, 1, now, False, v.patient_id, v.content))
            history.append((rid, 1, v.resource_type, v.id, now, "create", v.patient_id, v.content))
            events.append((rid, v.resource_type, v.id, 1, "create", v.patient_id))
            if v.index is not None:
                _index_records(rid, v.resource_type, v.index, index)
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        await _copy(driver, resource.name, _RESOURCE_COLUMNS, current)
        await _copy(driver, resource_history.name, _HISTORY_COLUMNS, history)
        for kind, records in index.items():
            await _copy(driver, INDEX_TABLES[kind].name, _COLUMNS[kind], records)
        await _copy(driver, event.name, _EVENT_COLUMNS, events)


async def _copy(
    driver: Any, table: str, columns: list[str], records: list[tuple[Any, ...]]
) -> None:
    if records:
        await driver.copy_records_to_table(table, records=records, columns=columns)

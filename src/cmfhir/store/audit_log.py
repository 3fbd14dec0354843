"""The audit trail's batch writer (interactions/audit.py): the first versions of many new
AuditEvents the server writes on its own account — the buffered events of reads, searches,
logins and refused requests — appended in one transaction.

The same rows as `Repository.write(versions, as_server=True)` (current row, history row,
index rows, outbox event), without what a client's write needs and an AuditEvent does not:
no access check, no referential-integrity check, no journal. `append_audit_rows` takes the
events as interactions/audit_rows.py builds them (`AuditRow`: the JSON around its
`meta.lastUpdated`, the index records without a rid) and stores a batch in one statement;
`append_new_versions` takes `NewVersion`s (the trail's generic path) and stores them by
COPY. tests/auth/test_audit_batch.py compares what both store with what the generic
indexer and `cmfhir check` expect."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from cmfhir.store.copying import (
    STAMP_AND_RIDS,
    copy_first_versions,
    to_millisecond,
)
from cmfhir.store.history import restamp
from cmfhir.store.indexing import Record, index_records
from cmfhir.store.records import NewVersion
from cmfhir.store.schema import INDEX_TABLES

__all__ = ["AUDIT_RECORD_COLUMNS", "AuditRow", "append_audit_rows", "append_new_versions"]


@dataclass(frozen=True, slots=True)
class AuditRow:
    """The first version of a new AuditEvent: its content is `head`, the version's stamp
    (a FHIR instant, `meta.lastUpdated`) and `tail`; `index` holds its index records per
    family (`token`, `string`, `date`, `reference`), each a record of store/indexing.py's
    `RECORD_COLUMNS` without `rid`, `resource_type` and `grp` (the AuditEvent's rid, its
    type, none) nor a token's `text` (none): `AUDIT_RECORD_COLUMNS`."""

    id: str
    head: str
    tail: str
    patient_id: str | None
    index: dict[str, list[Record]]


_AUDIT_EVENT = "AuditEvent"
_EVENT_COLUMNS = ["rid", "resource_type", "id", "version", "method", "patient_id"]


# The columns of an `AuditRow`'s index records, per family.
AUDIT_RECORD_COLUMNS = {
    "token": ("param", "system", "code"),
    "string": ("param", "value", "exact"),
    "date": ("param", "low", "high"),
    "reference": ("param", "target_type", "target_id", "url"),
}
_FAMILIES = tuple(AUDIT_RECORD_COLUMNS)
_TYPES = {"low": "timestamptz", "high": "timestamptz"}


def _index_insert(kind: str, first: int) -> str:
    """The CTE inserting a family's index rows, given as arrays from parameter `first` on:
    the position of their event in the batch, then each of `AUDIT_RECORD_COLUMNS`."""
    columns = AUDIT_RECORD_COLUMNS[kind]
    casts = ", ".join(
        [f"${first}::int[]"]
        + [f"${first + n}::{_TYPES.get(c, 'text')}[]" for n, c in enumerate(columns, start=1)]
    )
    listed = ", ".join(columns)
    return (
        f"{kind}_rows AS (INSERT INTO {INDEX_TABLES[kind].name} "
        f"(rid, resource_type, {listed}) "
        f"SELECT v.rid, 'AuditEvent', {', '.join('x.' + c for c in columns)} "
        f"FROM unnest({casts}) AS x(n, {listed}) JOIN v USING (n))"
    )


def _statement() -> str:
    first, parts = 5, []
    for kind in _FAMILIES:
        parts.append(_index_insert(kind, first))
        first += 1 + len(AUDIT_RECORD_COLUMNS[kind])
    return (
        # The transaction's id first, then the clock (the history watermark relies on a
        # stamp read once the transaction has its id, as in `Repository.write`), then a rid
        # from the table's sequence for each event and its content with the stamp.
        "WITH assigned AS MATERIALIZED (SELECT pg_current_xact_id() AS xid), "
        "stamp AS MATERIALIZED (SELECT at, to_char(at AT TIME ZONE 'UTC', "
        '\'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"\') AS text '
        "FROM (SELECT date_trunc('milliseconds', clock_timestamp()) AS at FROM assigned) s), "
        "v AS MATERIALIZED (SELECT u.n, nextval(pg_get_serial_sequence('resource', 'rid')) "
        "AS rid, u.i, u.p, (u.h || stamp.text || u.t)::jsonb AS c, stamp.at "
        "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY "
        "AS u(i, p, h, t, n), stamp), "
        "current_rows AS (INSERT INTO resource "
        "(rid, resource_type, id, version, last_updated, deleted, patient_id, content) "
        "SELECT rid, 'AuditEvent', i, 1, at, false, p, c FROM v), "
        "history_rows AS (INSERT INTO resource_history "
        "(rid, version, resource_type, id, last_updated, method, patient_id, content) "
        "SELECT rid, 1, 'AuditEvent', i, at, 'create', p, c FROM v), "
        "outbox_rows AS (INSERT INTO event (rid, resource_type, id, version, method, "
        "patient_id) SELECT rid, 'AuditEvent', i, 1, 'create', p FROM v), "
        + ", ".join(parts)
        + " SELECT count(*) FROM v"
    )


# One statement for a whole batch, so one round trip and its own transaction: the events
# ($1 ids, $2 compartments, $3 and $4 the content before and after the stamp) and the index
# rows of each family, column by column.
_APPEND = _statement()


async def append_audit_rows(engine: AsyncEngine, rows: Sequence[AuditRow]) -> None:
    """Store new AuditEvents — current rows, history, index rows and outbox events — in one
    statement (one round trip, its own transaction), stamped with the database clock and
    given rids from the table's sequence as `Repository.write` does. A batch costs a round
    trip this way, where a COPY per table and a query for the stamp cost ten."""
    if not rows:
        return
    ids, patients, heads, tails = [], [], [], []
    index: dict[str, list[Record]] = {kind: [] for kind in _FAMILIES}
    for n, row in enumerate(rows, start=1):
        ids.append(row.id)
        patients.append(row.patient_id)
        heads.append(row.head)
        tails.append(row.tail)
        for kind, records in row.index.items():
            # KeyError: a family the trail does not write.
            index[kind].extend([(n, *r) for r in records])
    arguments: list[Any] = [ids, patients, heads, tails]
    for kind in _FAMILIES:
        found = index[kind]
        width = 1 + len(AUDIT_RECORD_COLUMNS[kind])
        arguments.extend(zip(*found, strict=True) if found else [()] * width)
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.execute(_APPEND, *arguments)


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

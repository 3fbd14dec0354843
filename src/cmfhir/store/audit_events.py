"""The AuditEvents' own table (docs/security.md, Audit): one row per AuditEvent, where the
generic store spends a current row, a history row, an outbox event and a dozen index rows
(some fifty index entries) on each.

A row holds the event's JSON (`content`), its `rid` (from the `resource` table's sequence,
so that it never names a resource row), `last_updated`, `recorded`, its compartment
(`patient_id`), its index records (`idx`: per family, the records the generic indexer makes
for every AuditEvent search parameter, without rid, type and group) and `terms`: the
references of `patient`, `agent` and `entity` by id ('param|id', 'param|url') and its
`site` ('site|code': the request id), under a GIN index with its pending list
(`fastupdate`): an event adds a few entries to a list merged in bulk, not a dozen btree
insertions.

The events the trail writes for one requestor and kind of event in a batch — a search's
page of twenty members is twenty events, one per member (docs/security.md); a client's
reads in the same tens of milliseconds are alike but for what they read — are stored as
one row of up to fifty (`events`: a JSON array of what each has of its own, its entities,
request id, compartment and index records; `content` and `idx` what they share; `terms`
the terms of them all), expanded into the events when read (store/audit_queries.py). The
row's cost, its index entries and WAL are spent once for them all.

Searches are answered here with the generic engine's value conditions
(store/search_sql.py) applied to the records of `idx`, so every parameter, modifier and
prefix means what it means on any other type; `terms` narrows a search by those
parameters to the events that hold one of its values before the records are tested.
AuditEvents are written by the server alone, never updated: each has one version.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import BigInteger, Column, Index, Table, Text, text
from sqlalchemy.dialects.postgresql import ARRAY

from cmfhir.errors import MethodNotAllowed
from cmfhir.store.schema import TS, metadata

__all__ = [
    "AUDIT_FAMILIES",
    "EventRow",
    "audit_event_table",
    "events",
    "insert_events",
    "refuse_audit_writes",
    "split_id",
    "terms_of",
]

audit_event_table = Table(
    "audit_event",
    metadata,
    Column(
        "rid",
        BigInteger,
        primary_key=True,
        # The identity sequence of `resource.rid`, by name: looking it up per row
        # (pg_get_serial_sequence) cost 6 µs an event (migration 0020).
        server_default=text("nextval('resource_rid_seq'::regclass)"),
    ),
    Column("id", Text, nullable=False, unique=True),
    Column("last_updated", TS, nullable=False),
    Column("recorded", TS),
    Column("patient_id", Text),
    Column("terms", ARRAY(Text), nullable=False),
    # JSON text as the server built it (migration 0021): parsed by the rare read that
    # uses them (store/audit_queries.py), not checked again by every insert.
    Column("idx", Text, nullable=False),
    Column("content", Text, nullable=False),
    # Several events of one requestor and kind (migration 0022): what each has of its own,
    # a JSON array in order; NULL for a row that is one event (store/audit_queries.py
    # expands it).
    Column("events", Text),
    # The newest first (`_sort=-date`) without a scan of every event.
    Index("ix_audit_event_recorded_rid", "recorded", "rid"),
    Index(
        "ix_audit_event_terms",
        "terms",
        postgresql_using="gin",
        postgresql_with={"fastupdate": "on"},
    ),
)

# The index families an AuditEvent's records are kept in, with the columns of a record
# (as store/indexing.py's RECORD_COLUMNS, without rid, resource_type and grp).
AUDIT_FAMILIES: dict[str, tuple[str, ...]] = {
    "token": ("param", "system", "code", "text"),
    "string": ("param", "value", "exact"),
    "date": ("param", "low", "high"),
    "number": ("param", "value", "low", "high"),
    "quantity": ("param", "system", "code", "unit", "value", "low", "high"),
    "reference": ("param", "target_type", "target_id", "url"),
    "uri": ("param", "uri"),
}
# The reference parameters whose ids go to `terms`, and the token parameters whose codes
# do (`site`: the request id, to find a request's events).
TERM_PARAMS = frozenset({"patient", "agent", "entity"})
TERM_TOKENS = frozenset({"site"})


def terms_of(index: Mapping[str, Sequence[Sequence[Any]]]) -> list[str]:
    """The `terms` of an event's index records: 'param|id' (or 'param|url') of its
    references under `TERM_PARAMS`, 'param|code' of its tokens under `TERM_TOKENS`."""
    out: dict[str, None] = {}
    for param, _, target_id, url in index.get("reference", ()):
        if param not in TERM_PARAMS:
            continue
        if target_id is not None:
            out[f"{param}|{target_id}"] = None
        elif url is not None:
            out[f"{param}|{url}"] = None
    for param, _, code, *_ in index.get("token", ()):
        if param in TERM_TOKENS and code is not None:
            out[f"{param}|{code}"] = None
    return list(out)


def events(where: str = "TRUE") -> str:
    """The AuditEvents of the rows of `audit_event` (alias `a`) that pass `where`, as rows
    the access predicate reads (it names `resource_type`), `n` their place in their row
    (0 for a row that is one event). A row of several events (`events`, store/
    audit_events.py) gives each as its id `<row id>.<n>`, the shared content with its own
    entities and request id, the shared index records with its own token and reference
    records, its own compartment. The content is `jsonb` (for the predicate's label test)
    and the index records too, made only for the rows a statement reads them of: the
    table keeps both as the text the server wrote."""
    own = "p.e -> 'idx'"
    return (
        "(SELECT a.rid, coalesce(p.n, 0) AS n, a.id AS row_id, "
        "CASE WHEN p.n IS NULL THEN a.id ELSE a.id || '.' || p.n END AS id, "
        "a.last_updated, a.recorded, "
        "CASE WHEN p.n IS NULL THEN a.patient_id ELSE p.e ->> 'patient' END AS patient_id, "
        "a.terms, "
        "CASE WHEN p.n IS NULL THEN a.idx::jsonb ELSE a.idx::jsonb || jsonb_build_object("
        f"'token', coalesce(a.idx::jsonb -> 'token', '[]') || coalesce({own} -> 'token', '[]'), "
        "'reference', coalesce(a.idx::jsonb -> 'reference', '[]') "
        f"|| coalesce({own} -> 'reference', '[]')) END AS idx, "
        "CASE WHEN p.n IS NULL THEN a.content::jsonb ELSE a.content::jsonb || jsonb_strip_nulls("
        "jsonb_build_object('id', a.id || '.' || p.n, 'entity', p.e -> 'entity', "
        "'source', a.content::jsonb -> 'source' || jsonb_strip_nulls("
        "jsonb_build_object('site', p.e -> 'site')))) END AS content, "
        "'AuditEvent'::text AS resource_type "
        "FROM audit_event a "
        "LEFT JOIN LATERAL jsonb_array_elements(a.events::jsonb) WITH ORDINALITY p(e, n) "
        f"ON TRUE WHERE {where})"
    )


def split_id(id: str) -> tuple[str, int]:
    """The row id and place of AuditEvent `id`: `<row id>.<n>` is the `n`th event of a
    row of several (from 1); any other id is a row's own (place 0)."""
    row, dot, place = id.rpartition(".")
    if dot and place.isdigit() and not place.startswith("0") and len(place) < 6:
        return row, int(place)
    return id, 0


class EventRow:
    """One row to store: an AuditEvent's whole content (JSON text), or with `events` what
    several share; stamped `stamped` (`meta.lastUpdated`, to the millisecond)."""

    __slots__ = (
        "content",
        "count",
        "events",
        "id",
        "idx",
        "index",
        "patient_id",
        "recorded",
        "stamped",
        "terms",
    )

    def __init__(
        self,
        id: str,
        content: str,
        patient_id: str | None,
        index: Mapping[str, Sequence[Sequence[Any]]],
        *,
        stamped: datetime,
        terms: list[str] | None = None,
        recorded: datetime | None = None,
        events: list[dict[str, Any]] | None = None,
    ) -> None:
        """`terms` and `recorded`, when the caller knows them, are what `terms_of(index)`
        and the earliest `date` record would give. With `events` the row is several events
        (interactions/audit_rows.py): `content` and `index` are what they share, `terms`
        those of them all, and each of `events` what one has of its own: `entity`,
        `site`, `patient` (its compartment) and `idx` (its token and reference records)."""
        self.id = id
        self.count = 1 if events is None else len(events)
        self.events = None if events is None else orjson.dumps(events).decode()
        self.content = content
        self.stamped = stamped
        self.patient_id = patient_id
        self.index = index
        # orjson writes datetimes as RFC 3339 text, which PostgreSQL reads back exactly.
        self.idx = orjson.dumps({k: rs for k, rs in index.items() if rs}).decode()
        if recorded is None:
            dates = [r[1] for r in index.get("date", ()) if r[0] == "date" and r[1] is not None]
            low = min(dates) if dates else None
            recorded = low if isinstance(low, datetime) else None
        self.recorded = recorded
        self.terms = terms_of(index) if terms is None else terms

    def event_ids(self) -> list[str]:
        """The ids of the AuditEvents the row holds: its own, or `<id>.<n>` for its `n`th
        event (`split_id`)."""
        if self.events is None:
            return [self.id]
        return [f"{self.id}.{n}" for n in range(1, self.count + 1)]


_COLUMNS = ("id", "last_updated", "recorded", "patient_id", "terms", "idx", "content", "events")
_COPY_SLICE = 64  # rows encoded between two yields to the event loop


async def insert_events(driver: Any, rows: Sequence[EventRow]) -> None:
    """Store `rows` on the asyncpg connection `driver` (in its transaction if it has one):
    one binary COPY. COPY costs PostgreSQL a quarter less per row than an INSERT of
    unnested arrays. The rows are handed to the COPY a slice at a time, the event loop
    free between slices: asyncpg encodes a list of rows in one go (a thousand events:
    tens of milliseconds in which no other request of the process would move)."""
    if not rows:
        return

    async def records() -> AsyncIterator[tuple[Any, ...]]:
        for n, r in enumerate(rows):
            if n and not n % _COPY_SLICE:
                await asyncio.sleep(0)
            yield (r.id, r.stamped, r.recorded, r.patient_id, r.terms, r.idx, r.content, r.events)

    await driver.copy_records_to_table("audit_event", records=records(), columns=_COLUMNS)


def refuse_audit_writes(versions: Sequence[Any]) -> None:
    """AuditEvents are recorded by the server's audit trail into their own table, never
    through the generic write path: a client's create, update, patch or delete of one (in
    any interaction or Bundle) is refused (405), nothing written."""
    if any(v.resource_type == "AuditEvent" for v in versions):
        raise MethodNotAllowed(
            "AuditEvents are recorded by the server and cannot be created, changed or "
            "deleted through the API"
        )

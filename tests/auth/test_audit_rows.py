"""The rows the trail writes for its buffered records (interactions/audit_rows.py) against
the generic path: for every kind of event, the same content as `audit_event` gives, the
index rows the generic indexer extracts from that content, and the same compartment; and
the generic path whenever the AuditEvent search parameters are not the ones it knows."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from tests.auth.test_audit_index import KINDS, PROFILES

from cmfhir.app import open_context
from cmfhir.config import Settings
from cmfhir.interactions.audit import AuditRecord, AuditTrail, audit_event
from cmfhir.interactions.audit_rows import GROUPED, AuditRows
from cmfhir.resources.compartment import load_patient_compartment, patient_compartment
from cmfhir.resources.fhirjson import parse_json
from cmfhir.resources.index_values import extract_index
from cmfhir.resources.search_parameters import (
    SearchParameter,
    SearchParameterRegistry,
    load_registry,
)
from cmfhir.store.audit_events import events, split_id, terms_of
from cmfhir.store.audit_log import append_events
from cmfhir.store.indexing import index_records

_REQUESTOR = text(
    "SELECT e->>2 FROM audit_event a, json_array_elements(a.idx::json->'token') e "
    "WHERE a.content::json->'source'->>'site' = :site AND e->>0 = 'requestor'"
)
REGISTRY = load_registry(PROFILES)
COMPARTMENT = load_patient_compartment(PROFILES)
NOW = datetime(2026, 11, 30, 12, 0, 0, 123000, tzinfo=UTC)
STAMP = "2026-11-30T12:00:00.123Z"  # the instant of NOW: events are stamped when built
# Each kind as buffered: with its member among the record's members, and the record alone.
BUFFERED = [(k, replace(r, members=r.members or ((m,) if m else ()))) for k, r, m in KINDS]


def _stored(kind: str, record: tuple[Any, ...]) -> tuple[Any, ...]:
    """An `AuditRow` index record as the store writes it for rid 7 (store/indexing.py)."""
    return (7, "AuditEvent", None, *record, *((None,) if kind == "token" else ()))


def _counted(records: dict[str, list[tuple[Any, ...]]]) -> dict[str, Counter[tuple[Any, ...]]]:
    return {kind: Counter(rows) for kind, rows in records.items() if rows}


_EVENT = text(
    "SELECT r.content::text, r.idx::text, r.patient_id, r.terms, r.last_updated, r.recorded "
    f"FROM {events()} r WHERE r.id = :id"
)


@pytest.mark.parametrize("record", [r for _, r in BUFFERED], ids=[k for k, _ in BUFFERED])
async def test_rows_are_the_generic_content_index_and_compartment(
    settings: Settings, record: AuditRecord
) -> None:
    """Each event of a record, as stored and read back (a row of several events expanded
    by store/audit_queries.py), is the generic path's: its content, the index records the
    generic indexer extracts from it, its compartment and terms."""
    (row,) = AuditRows().rows([record], NOW)
    assert uuid.UUID(row.id).version == 7
    # Time-ordered: the id starts with the milliseconds of the batch's instant.
    assert uuid.UUID(row.id).int >> 80 == int(NOW.timestamp() * 1000)
    assert row.stamped == NOW
    members = record.members or (None,)
    grouped = len(members) > 1
    assert (row.events is not None) == grouped
    ids = [f"{row.id}.{n}" for n in range(1, len(members) + 1)] if grouped else [row.id]
    assert row.event_ids() == ids
    async with open_context(settings) as ctx:
        await append_events(ctx.store.engine, [row])
        async with ctx.store.engine.connect() as conn:
            for n, (id, member) in enumerate(zip(ids, members, strict=True), 1):
                assert split_id(id) == (row.id, n if grouped else 0)
                await _check_event(conn, id, record, member, alone=not grouped)


async def test_a_requestors_events_of_one_kind_share_rows_of_fifty(settings: Settings) -> None:
    """A batch's events of one requestor and kind go in rows of up to `GROUPED`, in the
    order recorded; another kind or requestor has rows of its own; each event reads back
    as the generic path makes it."""
    read = BUFFERED[0][1]  # a practitioner's read
    reads = [
        replace(read, members=(f"m{n}",), resources=(f"Observation/o{n}",), request_id=f"r{n}")
        for n in range(GROUPED + 25)
    ]
    search = BUFFERED[2][1]  # the same practitioner's search, about two members
    other = BUFFERED[1][1]  # a member's read
    records = [*reads[:10], search, other, *reads[10:]]
    rows = AuditRows().rows(records, NOW)
    assert [r.count for r in rows] == [GROUPED, 25, 2, 1]
    assert rows[-1].events is None
    expected = [(r, r.members[0]) for r in reads] + [(search, m) for m in search.members]
    expected.append((other, other.members[0]))
    ids = [id for row in rows for id in row.event_ids()]
    assert len(set(ids)) == len(ids) == len(expected)
    async with open_context(settings) as ctx:
        await append_events(ctx.store.engine, rows)
        async with ctx.store.engine.connect() as conn:
            for id, (record, member) in zip(ids, expected, strict=True):
                await _check_event(conn, id, record, member, alone=id == rows[-1].id)


async def _check_event(
    conn: Any, id: str, record: AuditRecord, member: str | None, *, alone: bool
) -> None:
    """AuditEvent `id` as stored and read back is `record`'s about `member`."""
    found = (await conn.execute(_EVENT, {"id": id})).one()
    content, idx, patient_id, terms, stamped, recorded = found
    served = parse_json(content)
    assert served["id"] == id
    assert served["meta"] == {"versionId": "1", "lastUpdated": STAMP}
    assert served["recorded"] == STAMP
    assert stamped == recorded == NOW
    expected = audit_event(record, member)
    expected.update(id=id, meta=served["meta"], recorded=served["recorded"])
    assert served == expected
    generic = extract_index(served, REGISTRY)
    wanted = index_records(7, "AuditEvent", generic)
    stored = json.loads(idx)
    got = {
        kind: [_stored(kind, tuple(_instant(v) for v in r)) for r in records]
        for kind, records in stored.items()
    }
    assert _counted(got) == _counted(wanted)
    assert wanted["date"] and wanted["token"]  # not vacuous
    # The row's terms hold this event's (a row of several: those of them all).
    assert set(terms_of(stored)) <= set(terms)
    if alone:
        assert terms == terms_of(stored)
    patients = patient_compartment(served, COMPARTMENT, generic)
    assert patient_id == (patients[0] if patients else None)
    if member:
        assert patient_id == member


def _instant(value: Any) -> Any:
    """A date record's bound as stored (RFC 3339 text) back to a datetime."""
    if isinstance(value, str) and len(value) > 19 and value[4:5] == "-" and value[10:11] == "T":
        return datetime.fromisoformat(value)
    return value


def test_parts_kept_for_one_requestor_do_not_leak_into_another() -> None:
    builder = AuditRows()
    first, second = BUFFERED[0][1], BUFFERED[1][1]  # a practitioner's read, a member's
    builder.rows([first], NOW)
    (row,) = builder.rows([second], NOW)
    served = parse_json(row.content)
    assert served["agent"][0]["who"] == {"reference": "Patient/m1"}
    assert ("agent", "Practitioner", "n1") not in {r[:3] for r in row.index["reference"]}


async def test_the_trail_writes_rows_only_for_the_search_parameters_it_knows(
    settings: Settings,
) -> None:
    """With a SearchParameter added on AuditEvent, the trail's buffer goes through the
    generic indexer, which indexes it."""
    extra = SearchParameter(
        url="https://example.org/SearchParameter/audit-requestor",
        code="requestor",
        base=("AuditEvent",),
        type="token",
        expression="AuditEvent.agent.requestor",
    )
    site = uuid.uuid4().hex
    async with open_context(settings) as ctx:
        registry = ctx.registry
        wider = SearchParameterRegistry([*registry.all(), extra], registry.code_systems)
        trail = AuditTrail(replace(ctx, registry=wider), interval=3600)
        trail.record(replace(BUFFERED[0][1], request_id=site))
        assert await trail.flush() == 1
        async with ctx.store.engine.connect() as conn:
            found = await conn.execute(_REQUESTOR, {"site": site})
            assert sorted(row[0] for row in found) == ["false", "true"]  # user, client


async def test_an_event_is_found_by_id_through_the_tables_index(settings: Settings) -> None:
    """Searching events by id (`_id`, `<row id>.<n>` too: store/audit_queries.py narrows
    by the row's id first) probes the unique index on the row's id, not every row; by the
    computed event id alone it could not."""
    async with open_context(settings) as ctx, ctx.store.engine.connect() as conn:
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        plans = {}
        for where in ("r.row_id = ANY(:rows) AND r.id = ANY(:ids)", "r.id = ANY(:ids)"):
            found = await conn.execute(
                text(f"EXPLAIN SELECT r.content FROM {events()} r WHERE {where}"),
                {"rows": ["x"], "ids": ["x.1"]},
            )
            plans[where] = "\n".join(found.scalars())
        narrowed, alone = plans.values()
        assert "audit_event" in narrowed and "Seq Scan" not in narrowed, narrowed
        assert "Seq Scan on audit_event" in alone  # what the narrowing spares

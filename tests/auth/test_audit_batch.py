"""The trail's batch writer (store/audit_log.py, AuditTrail in interactions/audit.py): the
buffered AuditEvents land in their own table (store/audit_events.py), one row each, with
the content built, the database's stamp, the compartment, and the index records the
generic indexer extracts from that content; the writer empties the buffer as soon as a
batch is full, and once more when it stops."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from tests.auth.test_audit_index import KINDS

from cmfhir.app import open_context
from cmfhir.auth.principal import TRUSTED
from cmfhir.config import Settings
from cmfhir.interactions.audit import AuditTrail, _slices
from cmfhir.interactions.audit_store import read_audit_event
from cmfhir.interactions.context import FhirContext, instant
from cmfhir.resources.fhirjson import parse_json
from cmfhir.resources.index_values import extract_index
from cmfhir.store.audit_events import events, split_id
from cmfhir.store.audit_log import EventRow, append_events, event_row
from cmfhir.store.database import async_url
from cmfhir.store.indexing import index_records
from cmfhir.store.reader import reader_for

# The events stored of one request (a row of several holds each).
_COUNT = text(f"SELECT count(*) FROM {events()} r WHERE r.content->'source'->>'site' = :site")
_ROW = text(f"SELECT patient_id, terms, idx::text FROM {events()} r WHERE r.id = :id")
_LAST_STATEMENT = text("SELECT query FROM pg_stat_activity WHERE pid = :pid")
# Nothing of an AuditEvent goes to the generic tables.
_GENERIC = text(
    "SELECT (SELECT count(*) FROM resource WHERE resource_type = 'AuditEvent') "
    "+ (SELECT count(*) FROM resource_history WHERE resource_type = 'AuditEvent') "
    "+ (SELECT count(*) FROM idx_token WHERE resource_type = 'AuditEvent')"
)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _records(families: dict[str, list[Any]]) -> dict[str, Counter[tuple[Any, ...]]]:
    """Records per family, compared without trailing nulls (a token's `text`)."""
    out: dict[str, Counter[tuple[Any, ...]]] = {}
    for kind, records in families.items():
        kept = []
        for record in records:
            values = [_plain(v) for v in record]
            while values and values[-1] is None:
                values.pop()
            kept.append(tuple(values))
        if kept:
            out[kind] = Counter(kept)
    return out


def _ids(rows: list[EventRow]) -> list[str]:
    return [id for row in rows for id in row.event_ids()]


async def _check_stored(ctx: FhirContext, ids: list[str]) -> set[str]:
    """Each event as stored: read back whole, its index records those of the generic
    indexer; the stamps seen."""
    stamps = set()
    async with ctx.store.engine.connect() as conn:
        for id in ids:
            stored = await read_audit_event(ctx.store, TRUSTED, id)
            assert stored is not None and stored.version == 1 and stored.content
            served = parse_json(stored.content)
            assert served["meta"]["lastUpdated"] == instant(stored.last_updated)
            stamps.add(served["meta"]["lastUpdated"])
            generic = index_records(0, "AuditEvent", extract_index(served, ctx.registry))
            patient_id, terms, idx = (await conn.execute(_ROW, {"id": id})).one()
            assert _records(json.loads(idx)) == _records(
                {k: [r[3:] for r in rs] for k, rs in generic.items()}
            )
            patients = {r[5] for r in generic["reference"] if r[3] == "patient"}
            mine = {f"patient|{p}" for p in patients}
            if split_id(id)[1]:  # one of a row's members: the row's terms are all of theirs
                assert mine <= set(terms)
            else:
                assert {t for t in terms if t.startswith("patient|")} == mine
            assert patient_id in patients | {None}
            site = served["source"].get("site")
            assert (f"site|{site}" in terms) == (site is not None)
        assert (await conn.execute(_GENERIC)).scalar_one() == 0
    return stamps


async def test_events_made_as_resources_are_stored_whole(settings: Settings) -> None:
    """The trail's generic path (a registry with other AuditEvent parameters): versions
    made and indexed as any resource, stored with their own stamps."""
    site = uuid.uuid4().hex
    async with open_context(settings) as ctx:
        trail = AuditTrail(ctx, interval=3600)
        records = [replace(record, request_id=site) for _, record, _ in KINDS]
        versions = trail.versions(records)
        assert len(versions) > len(KINDS)  # one per member: the search names two
        await append_events(ctx.store.engine, [event_row(v) for v in versions])
        await _check_stored(ctx, [v.id for v in versions])
        for v in versions:
            stored = await read_audit_event(ctx.store, TRUSTED, v.id)
            assert stored is not None
            assert parse_json(stored.content or "") == parse_json(v.content or "")
        async with ctx.store.engine.connect() as conn:
            assert (await conn.execute(_COUNT, {"site": site})).scalar_one() == len(versions)


async def _written(ctx: FhirContext, site: str) -> int:
    """The stored events of request `site`."""
    async with ctx.store.engine.connect() as conn:
        return int((await conn.execute(_COUNT, {"site": site})).scalar_one())


async def _wait_written(ctx: FhirContext, site: str, count: int) -> int:
    """The stored events of `site` once there are `count` (or after 10 s, what there are):
    the hour-long interval never passes, so only a full batch wakes the writer."""
    for _ in range(200):
        if await _written(ctx, site) == count:
            break
        await asyncio.sleep(0.05)
    return await _written(ctx, site)


@asynccontextmanager
async def _writing(ctx: FhirContext, *, batch: int) -> AsyncIterator[AuditTrail]:
    """A trail whose writer runs with an hour-long interval, stopped (and so emptied) at
    the end of the block."""
    trail = AuditTrail(ctx, interval=3600, batch=batch)
    stop = asyncio.Event()
    task = asyncio.create_task(trail.run(stop))
    try:
        yield trail
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_a_full_batch_is_written_at_once_and_the_rest_at_stop(settings: Settings) -> None:
    site = uuid.uuid4().hex
    record = replace(KINDS[0][1], request_id=site)  # one member: one event each
    async with open_context(settings) as ctx:
        async with _writing(ctx, batch=5) as trail:
            for _ in range(5):
                trail.record(record)
            assert await _wait_written(ctx, site, 5) == 5
            trail.record(record)
            trail.record(record)
            await asyncio.sleep(0.2)
            assert await _written(ctx, site) == 5  # not full, and the interval has not passed
        assert await _written(ctx, site) == 7


async def test_a_batch_counts_events_not_records(settings: Settings) -> None:
    """A search's record is one event per member it found: the batch fills by events."""
    site = uuid.uuid4().hex
    many = replace(KINDS[0][1], request_id=site, members=tuple(f"m-{site}-{n}" for n in range(200)))
    async with open_context(settings) as ctx, _writing(ctx, batch=1000) as trail:
        for _ in range(4):
            trail.record(many)
        await asyncio.sleep(0.2)
        assert await _written(ctx, site) == 0  # 800 events: not a full batch
        trail.record(many)  # 1,000 events: written now, not in an hour
        assert await _wait_written(ctx, site, 1000) == 1000


def test_a_batch_is_built_in_slices_of_events() -> None:
    """Between two slices the writer lets the process's requests run: a slice is about
    `events` events whatever the records' sizes, and every record is in one slice."""
    one = KINDS[0][1]
    sizes = [1, 200, 3, 3, 60, 1, 1, 70, 2]
    records = [replace(one, members=tuple(f"m{n}" for n in range(k))) for k in sizes]
    slices = list(_slices(records, 64))
    assert [r for part in slices for r in part] == records
    assert [sum(len(r.members) for r in part) for part in slices] == [201, 66, 72, 2]
    assert list(_slices([], 64)) == []


async def test_rows_written_in_one_statement_are_whole_events(settings: Settings) -> None:
    """The trail's own rows (interactions/audit_rows.py), stored by `append_events`: the
    content as built, stamped with the batch's one instant, and the index records the
    generic indexer extracts from the stored content."""
    site = uuid.uuid4().hex
    async with open_context(settings) as ctx:
        trail = AuditTrail(ctx, interval=3600)
        records = [replace(record, request_id=site) for _, record, _ in KINDS]
        rows = trail.rows(records)
        # One row per record; a search's events about several members share one.
        assert len(rows) == len(records)
        assert len(_ids(rows)) == sum(len(r.members) or 1 for r in records) > len(records)
        await append_events(ctx.store.engine, rows)
        stamps = await _check_stored(ctx, _ids(rows))
        assert len(stamps) == 1  # one batch, one stamp
        for row in rows:
            for id in row.event_ids():
                stored = await read_audit_event(ctx.store, TRUSTED, id)
                assert stored is not None
                assert stored.last_updated == row.stamped
                if row.events is None:
                    assert parse_json(stored.content or "") == parse_json(row.content)
        async with ctx.store.engine.connect() as conn:
            assert (await conn.execute(_COUNT, {"site": site})).scalar_one() == len(_ids(rows))


async def test_a_batch_goes_through_the_raw_pool_and_without_one_through_the_engine(
    settings: Settings,
) -> None:
    """The trail's batch takes a connection of the process's raw pool (store/reader.py),
    which it leaves idle for the next read; an engine made elsewhere, with no raw pool,
    stores the same rows through one of its own connections."""
    site = uuid.uuid4().hex
    async with open_context(settings) as ctx:
        trail = AuditTrail(ctx, interval=3600)
        records = [replace(record, request_id=site) for _, record, _ in KINDS]
        reader = reader_for(ctx.store.engine)
        assert reader is not None
        await append_events(ctx.store.engine, trail.rows(records[:1]))
        # The COPY ran on the raw pool's connection, now idle again (last in, first out).
        pid = reader._idle[-1].get_server_pid()
        async with ctx.store.engine.connect() as conn:
            last = (await conn.execute(_LAST_STATEMENT, {"pid": pid})).scalar_one()
        assert last.startswith("COPY") and "audit_event" in last
        idle = len(reader._idle)
        await append_events(ctx.store.engine, trail.rows(records[:1]))
        assert len(reader._idle) == idle  # taken back, no new connection opened
        engine = create_async_engine(async_url(settings.database_url or ""))
        try:
            assert reader_for(engine) is None
            rows = trail.rows(records)
            await append_events(engine, rows)
        finally:
            await engine.dispose()
        await _check_stored(ctx, _ids(rows))
        assert await _written(ctx, site) == 2 + len(_ids(rows))

"""The trail's batch writer (store/audit_log.py, AuditTrail in interactions/audit.py): the
buffered AuditEvents land by COPY as complete resources — current row, history, the index
rows the generic indexer would make, outbox event — and the writer empties the buffer as
soon as a batch is full, and once more when it stops."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

from sqlalchemy import text
from tests.auth.test_audit_index import KINDS

from cmfhir.app import open_context
from cmfhir.auth.principal import TRUSTED
from cmfhir.config import Settings
from cmfhir.interactions.audit import AuditTrail
from cmfhir.interactions.context import instant
from cmfhir.resources.fhirjson import parse_json
from cmfhir.resources.index_values import extract_index
from cmfhir.store.audit_log import append_audit_rows, append_new_versions

_COUNT = text(
    "SELECT count(*) FROM resource r JOIN resource_history h ON h.rid = r.rid "
    "JOIN event e ON e.rid = r.rid WHERE r.resource_type = 'AuditEvent' "
    "AND r.content->'source'->>'site' = :site"
)
_RID = text("SELECT rid FROM resource WHERE resource_type = 'AuditEvent' AND id = :id")


async def test_copied_events_are_whole_resources(settings: Settings) -> None:
    site = uuid.uuid4().hex
    async with open_context(settings) as ctx:
        trail = AuditTrail(ctx, interval=3600)
        records = [replace(record, request_id=site) for _, record, _ in KINDS]
        versions = trail.versions(records)
        assert len(versions) > len(KINDS)  # one per member: the search names two
        await append_new_versions(ctx.store.engine, versions)
        async with ctx.store.transaction(principal=TRUSTED) as repo:
            for v in versions:
                stored = await repo.read("AuditEvent", v.id)
                assert stored is not None and stored.version == 1
                assert parse_json(stored.content or "") == parse_json(v.content or "")
                assert stored.last_updated == v.last_updated
            expected = []
            for v in versions:
                assert v.rid is not None
                served = parse_json(v.content or "")
                expected.append((v.rid, "AuditEvent", extract_index(served, ctx.registry)))
            assert await repo.index_differences(expected) == []
            problems = await repo.structural_problems()
            assert not problems, problems
            count = (await repo.conn.execute(_COUNT, {"site": site})).scalar_one()
        assert count == len(versions)


async def test_a_full_batch_is_written_at_once_and_the_rest_at_stop(settings: Settings) -> None:
    site = uuid.uuid4().hex
    record = replace(KINDS[0][1], request_id=site)  # one member: one event each

    async def written() -> int:
        async with ctx.store.engine.connect() as conn:
            return int((await conn.execute(_COUNT, {"site": site})).scalar_one())

    async with open_context(settings) as ctx:
        trail = AuditTrail(ctx, interval=3600, batch=5)
        stop = asyncio.Event()
        task = asyncio.create_task(trail.run(stop))
        for _ in range(5):
            trail.record(record)
        for _ in range(100):  # the hour-long interval never passes: the full batch wakes it
            if await written() == 5:
                break
            await asyncio.sleep(0.1)
        assert await written() == 5
        trail.record(record)
        trail.record(record)
        await asyncio.sleep(0.2)
        assert await written() == 5  # not full, and the interval has not passed
        stop.set()
        await asyncio.wait_for(task, 30)
        assert await written() == 7


async def test_rows_written_in_one_statement_are_whole_resources(settings: Settings) -> None:
    """The trail's own rows (interactions/audit_rows.py), stored by `append_audit_rows`:
    the content built, the stamp and rids the database gave, the index rows the generic
    indexer extracts from the stored content, history, outbox, and `cmfhir check`."""
    site = uuid.uuid4().hex
    async with open_context(settings) as ctx:
        trail = AuditTrail(ctx, interval=3600)
        records = [replace(record, request_id=site) for _, record, _ in KINDS]
        rows = trail.rows(records)
        assert len(rows) == sum(len(r.members) or 1 for r in records) > len(records)
        await append_audit_rows(ctx.store.engine, rows)
        async with ctx.store.transaction(principal=TRUSTED) as repo:
            expected = []
            stamps = set()
            for row in rows:
                stored = await repo.read("AuditEvent", row.id)
                assert stored is not None and stored.version == 1 and stored.content
                served = parse_json(stored.content)
                last_updated = served["meta"]["lastUpdated"]
                assert served == parse_json(row.head + last_updated + row.tail)
                assert instant(stored.last_updated) == last_updated
                stamps.add(last_updated)
                rid = (await repo.conn.execute(_RID, {"id": row.id})).scalar_one()
                expected.append((rid, "AuditEvent", extract_index(served, ctx.registry)))
            assert len(stamps) == 1  # one transaction, one stamp
            assert await repo.index_differences(expected) == []
            problems = await repo.structural_problems()
            assert not problems, problems
            count = (await repo.conn.execute(_COUNT, {"site": site})).scalar_one()
        assert count == len(rows)

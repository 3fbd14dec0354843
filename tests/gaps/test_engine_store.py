"""The engine against the store, in-process: a crash in the middle of a batch loses no gap
and duplicates none, two engines draining one queue write each gap once, and a member whose
evaluation fails is put aside without holding the others back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import text

from cmfhir.app import open_context
from cmfhir.auth.principal import TRUSTED
from cmfhir.config import Settings
from cmfhir.gaps.engine import GapEngine, GapFeed
from cmfhir.gaps.model import Gap, MemberSnapshot
from cmfhir.gaps.ruleset import RuleSet
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.create import create_in
from cmfhir.store import gap_queue
from cmfhir.workers import OutboxConsumer


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing catches it."""


def _one_gap(snapshot: MemberSnapshot, as_of: datetime, config: Any) -> list[Gap]:
    return [Gap("probe", "", "open-gap", "A probe gap")]


PROBE = RuleSet([SimpleNamespace(CODE="probe", evaluate=_one_gap)])  # type: ignore[list-item]


@pytest.fixture
async def ctx(scratch_database: str) -> AsyncIterator[FhirContext]:
    async with open_context(Settings(database_url=scratch_database)) as context:
        yield context


async def _members(ctx: FhirContext, count: int) -> list[str]:
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        ids = [
            (await create_in(ctx, repo, {"resourceType": "Patient"}))[0].id for _ in range(count)
        ]
    await OutboxConsumer(ctx.store, GapFeed()).catch_up()
    return ids


async def _gaps(ctx: FhirContext) -> list[tuple[str, int]]:
    async with ctx.store.transaction(read_only=True, principal=TRUSTED) as repo:
        rows = await repo.conn.execute(
            text(
                "SELECT content->'patient'->>'reference', count(*) FROM resource "
                "WHERE resource_type = 'DetectedIssue' GROUP BY 1 ORDER BY 1"
            )
        )
        return [(r[0], r[1]) for r in rows]


async def test_a_crash_mid_batch_loses_no_gap_and_duplicates_none(ctx: FhirContext) -> None:
    members = await _members(ctx, 30)
    calls = 0

    def crashing(snapshot: MemberSnapshot, as_of: datetime, config: Any) -> list[Gap]:
        nonlocal calls
        calls += 1
        if calls == 15:
            raise Crash
        return _one_gap(snapshot, as_of, config)

    doomed = GapEngine(
        ctx,
        RuleSet([SimpleNamespace(CODE="probe", evaluate=crashing)]),
        batch=10,  # type: ignore[list-item]
    )
    with pytest.raises(Crash):
        await doomed.drain()
    assert len(await _gaps(ctx)) == 10  # the first batch committed, the second did not
    assert await GapEngine(ctx, PROBE, batch=10).drain() == 20
    assert await _gaps(ctx) == sorted((f"Patient/{m}", 1) for m in members)


async def test_two_engines_on_one_queue_write_each_gap_once(ctx: FhirContext) -> None:
    members = await _members(ctx, 60)
    first, second = GapEngine(ctx, PROBE, batch=3), GapEngine(ctx, PROBE, batch=3)
    counts = await asyncio.gather(first.drain(), second.drain())
    assert sum(counts) == 60
    assert all(counts)
    assert await _gaps(ctx) == sorted((f"Patient/{m}", 1) for m in members)
    # Everything queued again (a replay): nothing changes.
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        await repo.conn.execute(text("UPDATE consumer SET xid = 0, seq = 0"))
    await OutboxConsumer(ctx.store, GapFeed()).catch_up()
    await asyncio.gather(first.drain(), second.drain())
    async with ctx.store.transaction(read_only=True, principal=TRUSTED) as repo:
        versions = await repo.conn.execute(
            text("SELECT max(version) FROM resource WHERE resource_type = 'DetectedIssue'")
        )
        assert versions.scalar_one() == 1


async def test_a_failing_member_is_put_aside(ctx: FhirContext) -> None:
    members = await _members(ctx, 5)
    bad = members[2]

    def picky(snapshot: MemberSnapshot, as_of: datetime, config: Any) -> list[Gap]:
        if snapshot.patient_id == bad:
            return [Gap("probe", "", "open-gap", "")]  # an empty detail does not validate
        return _one_gap(snapshot, as_of, config)

    engine = GapEngine(ctx, RuleSet([SimpleNamespace(CODE="probe", evaluate=picky)]))  # type: ignore[list-item]
    await engine.drain()
    assert await _gaps(ctx) == sorted((f"Patient/{m}", 1) for m in members if m != bad)
    async with ctx.store.transaction(read_only=True, principal=TRUSTED) as repo:
        row = (
            await repo.conn.execute(
                text("SELECT patient_id, attempts, due_at > now() FROM gap_member")
            )
        ).one()
    assert tuple(row) == (bad, 1, True)


async def test_a_member_whose_patient_is_gone_is_left_alone(ctx: FhirContext) -> None:
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        await gap_queue.enqueue(repo, ["no-such-patient"], None)
    assert await GapEngine(ctx, PROBE).drain() == 1
    assert await _gaps(ctx) == []
    async with ctx.store.transaction(read_only=True, principal=TRUSTED) as repo:
        assert await gap_queue.queued(repo) == (0, 0)


class _Recording(GapEngine):
    """Notes the isolation level of the evaluation's transaction (where it writes)."""

    levels: list[str]

    async def _write(self, repo: Any, resources: Any) -> None:
        level = await repo.conn.execute(text("SHOW transaction_isolation"))
        self.levels.append(level.scalar_one())
        await super()._write(repo, resources)


async def test_an_evaluation_reads_one_snapshot_begun_as_such(ctx: FhirContext) -> None:
    """REPEATABLE READ comes with the BEGIN (no SET TRANSACTION sent), the pooled connection
    goes back to READ COMMITTED, and the rules run with the cyclic collector paused, which
    is on again after."""
    import gc

    from sqlalchemy import event

    collector: list[bool] = []

    def _noting(snapshot: MemberSnapshot, as_of: datetime, config: Any) -> list[Gap]:
        collector.append(gc.isenabled())
        return _one_gap(snapshot, as_of, config)

    ruleset = RuleSet([SimpleNamespace(CODE="probe", evaluate=_noting)])  # type: ignore[list-item]
    await _members(ctx, 3)
    sent: list[str] = []

    def _statement(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    sync = ctx.store.engine.sync_engine
    event.listen(sync, "before_cursor_execute", _statement)
    try:
        engine = _Recording(ctx, ruleset)
        engine.levels = []
        assert await engine.drain() == 3
    finally:
        event.remove(sync, "before_cursor_execute", _statement)
    assert engine.levels == ["repeatable read"]
    assert not [s for s in sent if "SET TRANSACTION" in s.upper()]
    assert collector == [False, False, False] and gc.isenabled()
    for _ in range(3):  # every pooled connection is back at the default level
        async with ctx.store.transaction(principal=TRUSTED) as repo:
            level = await repo.conn.execute(text("SHOW transaction_isolation"))
            assert level.scalar_one() == "read committed"
    assert sorted(await _gaps(ctx)) == sorted((f"Patient/{p}", 1) for p in await _patients(ctx))


async def _patients(ctx: FhirContext) -> list[str]:
    async with ctx.store.transaction(read_only=True, principal=TRUSTED) as repo:
        rows = await repo.conn.execute(
            text("SELECT id FROM resource WHERE resource_type = 'Patient'")
        )
        return [r[0] for r in rows]

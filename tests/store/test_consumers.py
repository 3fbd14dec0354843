"""The outbox consumer framework (store/consumers.py, workers/outbox.py): NOTIFY wakes a
consumer at commit, consumers sharing a name handle each event once and in order, a worker
can tell its own events, and pruning keeps what a consumer has not passed while `cmfhir
check` tells pruned events from missing ones."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from cmfhir.app import open_context
from cmfhir.auth.principal import TRUSTED
from cmfhir.config import Settings
from cmfhir.interactions.check import check
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.create import create_in
from cmfhir.store import Event, Repository
from cmfhir.store import consumers as positions
from cmfhir.workers import OutboxConsumer, Pruner, Scheduled


@pytest.fixture
async def ctx(scratch_database: str) -> AsyncIterator[FhirContext]:
    async with open_context(Settings(database_url=scratch_database)) as context:
        yield context


def _patient(tag: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "meta": {"tag": [{"system": "urn:test", "code": tag}]}}


async def _write(ctx: FhirContext, count: int = 1, *, origin: str | None = None) -> list[str]:
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        if origin is not None:
            await positions.mark_origin(repo, origin)
        ids = []
        for _ in range(count):
            record, _ = await create_in(ctx, repo, _patient("c"))
            ids.append(record.id)
    return ids


class Collect:
    read_ahead = False

    def __init__(self, name: str, *, from_start: bool = True, pause: float = 0.0) -> None:
        self.name = name
        self.from_start = from_start
        self.seen: list[Event] = []
        self.pause = pause

    async def handle(self, repo: Repository, events: Sequence[Event]) -> None:
        await asyncio.sleep(self.pause)
        self.seen.extend(events)


async def _until(condition: Any, within: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "gave up waiting"
        await asyncio.sleep(0.02)


async def test_a_commit_wakes_the_listener_and_a_rollback_does_not(ctx: FhirContext) -> None:
    listener = positions.Listener(ctx.store.engine)
    wake = listener.subscribe(positions.EVENT_CHANNEL)
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    try:
        await _until(lambda: listener.connected)
        await asyncio.sleep(0.1)
        wake.clear()

        class Abandon(Exception):
            pass

        with pytest.raises(Abandon):
            async with ctx.store.transaction(principal=TRUSTED) as repo:
                await create_in(ctx, repo, _patient("rollback"))
                raise Abandon
        await asyncio.sleep(0.5)
        assert not wake.is_set()
        await _write(ctx)
        await asyncio.wait_for(wake.wait(), 10)
    finally:
        stop.set()
        await task


async def test_two_consumers_of_one_name_handle_each_event_once_in_order(
    ctx: FhirContext,
) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    first, second = Collect(name, pause=0.01), Collect(name, pause=0.01)
    workers = [OutboxConsumer(ctx.store, h, batch=7, poll=0.05) for h in (first, second)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    written: list[str] = []
    for n in range(15):
        written += await _write(ctx, count=1 + n % 4)
    await _until(lambda: {e.id for e in first.seen + second.seen} >= set(written))
    stop.set()
    await asyncio.gather(*tasks)
    events = sorted(first.seen + second.seen, key=lambda e: e.position)
    # Once each, in commit order (the outbox also holds what the server wrote at start).
    assert [e.id for e in events if e.resource_type == "Patient"] == written


async def test_a_new_consumer_starts_at_the_start_or_at_the_end(ctx: FhirContext) -> None:
    before = await _write(ctx, 3)
    from_start = Collect(f"s-{uuid.uuid4().hex[:8]}")
    from_end = Collect(f"e-{uuid.uuid4().hex[:8]}", from_start=False)
    for handler in (from_start, from_end):
        await OutboxConsumer(ctx.store, handler).catch_up()
    after = await _write(ctx, 2)
    for handler in (from_start, from_end):
        await OutboxConsumer(ctx.store, handler).catch_up()
    assert set(before) <= {e.id for e in from_start.seen}
    assert [e.id for e in from_end.seen] == after


async def test_a_worker_tells_its_own_events(ctx: FhirContext) -> None:
    mine = await _write(ctx, 2, origin="gaps")
    theirs = await _write(ctx, 1)
    handler = Collect(f"o-{uuid.uuid4().hex[:8]}")
    # A drain stops behind a transaction still running (another test's, or the session
    # server's workers'); catching up waits them out.
    await OutboxConsumer(ctx.store, handler).catch_up()
    origins = {e.id: e.origin for e in handler.seen}
    assert [origins[i] for i in mine] == ["gaps", "gaps"]
    assert origins[theirs[0]] is None


async def test_pruning_keeps_what_a_consumer_has_not_passed(ctx: FhirContext) -> None:
    old = await _write(ctx, 4)
    handler = Collect("lagging")
    await OutboxConsumer(ctx.store, handler).catch_up()
    later = await _write(ctx, 3)  # written after the consumer's position
    future = datetime.now(UTC) + timedelta(days=1)
    pruner = Pruner(ctx.store, timedelta(days=0), clock=lambda: future)
    assert await pruner.prune() >= 4
    async with ctx.store.transaction(read_only=True, principal=TRUSTED) as repo:
        kept = {r[0] for r in await repo.conn.execute(text("SELECT id FROM event"))}
    assert not kept & set(old)
    assert set(later) <= kept
    await OutboxConsumer(ctx.store, handler).catch_up()
    assert [e.id for e in handler.seen if e.id in later] == later
    # Pruned events are retention, not a loss.
    assert await check(ctx) == {}


async def test_check_still_finds_a_missing_event_after_pruning(ctx: FhirContext) -> None:
    await _write(ctx, 2)
    await Pruner(ctx.store, timedelta(days=1)).prune()  # nothing old enough: a no-op
    [lost] = await _write(ctx, 1)
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        await repo.conn.execute(text("DELETE FROM event WHERE id = :i"), {"i": lost})
    future = datetime.now(UTC) - timedelta(seconds=30)
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        await positions.prune(repo, future, 1000)
    problems = await check(ctx)
    assert problems == {"version without its outbox event": [f"Patient/{lost}/_history/1"]}


async def test_a_scheduled_job_runs_once_per_interval_by_the_clock(ctx: FhirContext) -> None:
    now = datetime(2026, 11, 30, 2, tzinfo=UTC)
    runs: list[datetime] = []

    async def job(repo: Repository, at: datetime) -> None:
        runs.append(at)

    def make() -> Scheduled:
        return Scheduled(ctx.store, "test-sweep", timedelta(days=1), job, clock=lambda: now)

    first, second = make(), make()  # two processes
    assert await first.tick()
    assert not await second.tick()
    now += timedelta(hours=23)
    assert not await second.tick()
    now += timedelta(hours=1)
    assert await asyncio.gather(first.tick(), second.tick()) in ([True, False], [False, True])
    assert runs == [datetime(2026, 11, 30, 2, tzinfo=UTC), datetime(2026, 12, 1, 2, tzinfo=UTC)]


async def _long_write(ctx: FhirContext, release: asyncio.Event) -> asyncio.Task[str]:
    """A write whose transaction stays open until `release` is set; returned once it has
    written (its event exists, uncommitted): the task's result is the resource's id."""
    written = asyncio.Event()

    async def long_writer() -> str:
        async with ctx.store.transaction(principal=TRUSTED) as repo:
            record, _ = await create_in(ctx, repo, _patient("long"))
            written.set()
            await release.wait()
        return record.id

    task = asyncio.create_task(long_writer())
    await written.wait()
    return task


async def test_catching_up_waits_out_an_older_running_transaction(ctx: FhirContext) -> None:
    handler = Collect(f"c-{uuid.uuid4().hex[:8]}")
    consumer = OutboxConsumer(ctx.store, handler)
    await consumer.catch_up()
    release = asyncio.Event()
    slow = await _long_write(ctx, release)
    [quick] = await _write(ctx)
    assert await consumer.drain() == 0  # a drain stops behind the running transaction
    catching_up = asyncio.create_task(consumer.catch_up())
    await asyncio.sleep(0.3)
    assert not catching_up.done()
    release.set()
    slow_id = await slow
    await catching_up
    assert [e.id for e in handler.seen][-2:] == [slow_id, quick]


class Ahead(Collect):
    read_ahead = True


async def test_reading_ahead_handles_committed_events_behind_a_long_transaction_once(
    ctx: FhirContext,
) -> None:
    handler = Ahead(f"a-{uuid.uuid4().hex[:8]}")
    consumer = OutboxConsumer(ctx.store, handler)
    await consumer.drain()
    release = asyncio.Event()
    slow = await _long_write(ctx, release)
    [quick] = await _write(ctx)
    await consumer.step()
    assert quick in [e.id for e in handler.seen]  # handled while the older one runs
    release.set()
    slow_id = await slow
    await consumer.drain()
    ids = [e.id for e in handler.seen]
    assert sorted(ids) == sorted({quick, slow_id} | set(ids))  # none twice
    assert ids.count(quick) == 1 and ids.count(slow_id) == 1

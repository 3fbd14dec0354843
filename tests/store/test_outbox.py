"""The `event` outbox read as consumers will read it (`read_events`): in one order, each
committed event once, none skipped, while transactions that write for a long time (held
open, or large Bundles over HTTP) commit out of the order they started in.

The reader's horizon is the oldest transaction running anywhere in the PostgreSQL cluster
(transaction ids are cluster-wide), so other test processes' databases on the same embedded
server can hold it back for a while: the tests wait for what they expect, never assume it is
readable at once."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from cmfhir.app import open_context
from cmfhir.auth.principal import TRUSTED
from cmfhir.config import Settings
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.create import create_in
from cmfhir.store import START, Event, EventPosition

FHIR = {"Content-Type": "application/fhir+json"}
# How long a transaction of another database in the cluster may hold the horizon back.
PATIENCE_S = 240.0


@pytest.fixture
async def ctx(settings: Settings, base: str) -> AsyncIterator[FhirContext]:
    # `base`: the server has migrated the database.
    async with open_context(settings) as context:
        yield context


async def _drain(ctx: FhirContext, after: EventPosition) -> tuple[list[Event], EventPosition]:
    """Every event readable now after `after`."""
    found: list[Event] = []
    while True:
        async with ctx.store.transaction(principal=TRUSTED, read_only=True) as repo:
            events, after = await repo.read_events(after, 500)
        if not events:
            return found, after
        found += events


async def _drain_until(
    ctx: FhirContext, after: EventPosition, ids: set[str]
) -> tuple[list[Event], EventPosition]:
    """Every event after `after`, read until the events of all of `ids` are among them."""
    found: list[Event] = []
    deadline = time.monotonic() + PATIENCE_S
    while True:
        events, after = await _drain(ctx, after)
        found += events
        if ids <= {e.id for e in found} or time.monotonic() > deadline:
            return found, after
        await asyncio.sleep(0.05)


def _patient(tag: str) -> dict[str, Any]:
    tags = [{"system": "urn:test:outbox", "code": tag}]
    return {"resourceType": "Patient", "meta": {"tag": tags}}


class Abandon(Exception):
    pass


async def _write(
    ctx: FhirContext,
    tag: str,
    hold: float,
    commit: bool = True,
    written: asyncio.Event | None = None,
) -> str:
    """Create a Patient, keep the transaction open `hold` seconds, then commit or roll back;
    `written` is set once it has written."""
    try:
        async with ctx.store.transaction(principal=TRUSTED) as repo:
            record, _ = await create_in(ctx, repo, _patient(tag))
            if written is not None:
                written.set()
            await asyncio.sleep(hold)
            if not commit:
                raise Abandon
    except Abandon:
        pass
    return record.id


async def test_an_open_transaction_holds_the_reader_back(ctx: FhirContext) -> None:
    _, position = await _drain(ctx, START)
    tag = uuid.uuid4().hex
    written = asyncio.Event()
    slow = asyncio.create_task(_write(ctx, tag, hold=1.0, written=written))
    await written.wait()  # the slow one has written its event (and taken its seq)
    quick = await _write(ctx, tag, hold=0)
    before, position_before = await _drain(ctx, position)
    # The quick one committed, but it is behind the slow one, which has not.
    assert quick not in {e.id for e in before}
    assert position_before == position
    slow_id = await slow
    after, _ = await _drain_until(ctx, position, {slow_id, quick})
    assert [e.id for e in after if e.id in (slow_id, quick)] == [slow_id, quick]


async def test_reader_sees_each_event_once_beside_long_writers(ctx: FhirContext, base: str) -> None:
    rng = random.Random(2)
    tag = uuid.uuid4().hex
    _, start = await _drain(ctx, START)
    read: list[Event] = []
    # Set once the writers are done: the last event stored by then, which the reader reads up to.
    last: list[EventPosition] = []

    async def reader() -> None:
        position = start
        deadline = time.monotonic() + PATIENCE_S
        while not (last and position >= last[0]) and time.monotonic() < deadline:
            async with ctx.store.transaction(principal=TRUSTED, read_only=True) as repo:
                events, position = await repo.read_events(position, rng.randint(1, 50))
            read.extend(events)
            if not events:
                await asyncio.sleep(0.01)

    async def bundle(size: int) -> None:
        entries = [
            {"resource": _patient(tag), "request": {"method": "POST", "url": "Patient"}}
            for _ in range(size)
        ]
        body = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            assert (await http.post("", json=body, headers=FHIR)).status_code == 200

    reading = asyncio.create_task(reader())
    await asyncio.gather(
        bundle(1200),
        bundle(400),
        *(_write(ctx, tag, rng.uniform(0, 1.5), commit=n % 5 != 4) for n in range(20)),
    )
    async with ctx.store.transaction(principal=TRUSTED, read_only=True) as repo:
        newest = "SELECT xid, seq FROM event ORDER BY xid DESC, seq DESC LIMIT 1"
        row = (await repo.conn.execute(text(newest))).first()
        assert row is not None
        last.append(EventPosition(row[0], row[1]))
    await reading

    positions = [e.position for e in read]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    async with ctx.store.transaction(principal=TRUSTED, read_only=True) as repo:
        stored = {
            (row[0], row[1])
            for row in await repo.conn.execute(
                text(
                    "SELECT xid, seq FROM event WHERE (xid, seq) > (:x, :s)"
                    " AND (xid, seq) <= (:lx, :ls)"
                ),
                {"x": start.xid, "s": start.seq, "lx": last[0].xid, "ls": last[0].seq},
            )
        }
    assert {(p.xid, p.seq) for p in positions if p <= last[0]} == stored
    assert len(stored) >= 1200 + 400 + 16

"""The `event` outbox as a work queue (docs/architecture.md, "Outbox consumers"): one
position per consumer, claimed FOR UPDATE SKIP LOCKED so that one process at a time
advances it; LISTEN/NOTIFY wake-up (`Listener`); pruning of events every consumer has
passed; and the last run of scheduled jobs.

A consumer reads with `Repository.read_events` (store/outbox.py: `(xid, seq)` order below
the oldest running transaction, so none is skipped) and advances its position in the same
transaction as the work it derives from the events: the work and the position commit
together or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cmfhir.store.outbox import START, Event, EventPosition
from cmfhir.store.outbox import read_ahead as outbox_read_ahead
from cmfhir.store.repository import Repository

__all__ = [
    "EVENT_CHANNEL",
    "Listener",
    "advance",
    "claim",
    "claim_schedule",
    "held_back",
    "mark_origin",
    "newest",
    "notify",
    "positions",
    "prune",
    "pruned_before",
    "read_ahead",
    "record_run",
    "register",
]

log = logging.getLogger(__name__)

# The trigger on `event` (migration 0008) notifies this channel when a writing transaction
# commits.
EVENT_CHANNEL = "cmfhir_event"


async def mark_origin(repo: Repository, origin: str) -> None:
    """Mark the events this transaction writes as written by `origin` (Event.origin), so that
    the consumer `origin` can skip its own writes."""
    await repo.conn.execute(text("SELECT set_config('cmfhir.origin', :o, true)"), {"o": origin})


async def register(repo: Repository, name: str, *, from_start: bool) -> None:
    """Create the consumer `name` if it does not exist: at the start of the outbox (every
    event still kept), or at its end (only events committed from now on)."""
    position = START
    if not from_start:
        row = (
            await repo.conn.execute(
                text(
                    "SELECT xid, seq FROM event "
                    "WHERE xid < (pg_snapshot_xmin(pg_current_snapshot()))::text::bigint "
                    "ORDER BY xid DESC, seq DESC LIMIT 1"
                )
            )
        ).first()
        if row is not None:
            position = EventPosition(row[0], row[1])
    await repo.conn.execute(
        text(
            "INSERT INTO consumer (name, xid, seq) VALUES (:n, :x, :s) "
            "ON CONFLICT (name) DO NOTHING"
        ),
        {"n": name, "x": position.xid, "s": position.seq},
    )


async def claim(repo: Repository, name: str) -> EventPosition | None:
    """The consumer's position, locked until the transaction ends; None when another
    process holds it (it is advancing it now) or the consumer is not registered."""
    row = (
        await repo.conn.execute(
            text("SELECT xid, seq FROM consumer WHERE name = :n FOR UPDATE SKIP LOCKED"),
            {"n": name},
        )
    ).first()
    return None if row is None else EventPosition(row[0], row[1])


async def advance(repo: Repository, name: str, position: EventPosition) -> None:
    await repo.conn.execute(
        text("UPDATE consumer SET xid = :x, seq = :s, updated_at = now() WHERE name = :n"),
        {"n": name, "x": position.xid, "s": position.seq},
    )


async def held_back(repo: Repository, after: EventPosition) -> bool:
    """Whether events after `after` exist that `read_events` does not give yet (their
    transaction, or an older one, is still running): worth reading again soon."""
    found = await repo.conn.execute(
        text("SELECT EXISTS (SELECT 1 FROM event WHERE (xid, seq) > (:x, :s))"),
        {"x": after.xid, "s": after.seq},
    )
    return bool(found.scalar_one())


async def newest(repo: Repository) -> EventPosition | None:
    """The position of the newest event written (committed or not), None while there is none."""
    row = (
        await repo.conn.execute(
            text("SELECT xid, seq FROM event ORDER BY xid DESC, seq DESC LIMIT 1")
        )
    ).first()
    return EventPosition(row[0], row[1]) if row else None


async def read_ahead(
    repo: Repository, after: EventPosition, limit: int, skip: Sequence[int] = ()
) -> list[Event]:
    """Committed events after `after`, past the gap-free horizon too, except those of the
    transactions `skip` (store/outbox.py)."""
    return await outbox_read_ahead(repo.conn, after, limit, skip)


async def positions(repo: Repository) -> dict[str, EventPosition]:
    rows = await repo.conn.execute(text("SELECT name, xid, seq FROM consumer ORDER BY name"))
    return {r[0]: EventPosition(r[1], r[2]) for r in rows}


async def notify(repo: Repository, channel: str) -> None:
    """NOTIFY `channel` when this transaction commits."""
    await repo.conn.execute(text("SELECT pg_notify(:c, '')"), {"c": channel})


# Events every consumer has passed, of versions stamped before :before. With no consumer
# registered every such event is prunable.
_PRUNE = text(
    """
    WITH horizon AS (
        SELECT coalesce((SELECT xid FROM consumer ORDER BY xid, seq LIMIT 1),
                        9223372036854775807) AS xid,
               coalesce((SELECT seq FROM consumer ORDER BY xid, seq LIMIT 1),
                        9223372036854775807) AS seq
    ), doomed AS (
        SELECT e.seq FROM event e
        JOIN resource_history h ON h.rid = e.rid AND h.version = e.version, horizon
        WHERE (e.xid, e.seq) <= (horizon.xid, horizon.seq) AND h.last_updated < :before
        ORDER BY e.xid, e.seq
        LIMIT :limit
    )
    DELETE FROM event WHERE seq IN (SELECT seq FROM doomed)
    """
)


async def prune(repo: Repository, before: datetime, limit: int) -> int:
    """Delete up to `limit` events that every consumer has passed, of versions stamped
    before `before`, and record the run (`cmfhir check` then knows those versions' events
    were pruned, not lost). Returns how many were deleted."""
    deleted = (await repo.conn.execute(_PRUNE, {"before": before, "limit": limit})).rowcount
    if deleted:
        await repo.conn.execute(
            text('INSERT INTO event_pruned ("before", count) VALUES (:b, :c)'),
            {"b": before, "c": deleted},
        )
    return int(deleted)


async def pruned_before(repo: Repository) -> datetime | None:
    """The latest instant before which events may have been pruned (None: never pruned)."""
    found = await repo.conn.execute(text('SELECT max("before") FROM event_pruned'))
    value: datetime | None = found.scalar_one()
    return value


async def claim_schedule(repo: Repository, name: str) -> tuple[bool, datetime | None]:
    """Lock the schedule row of job `name` until the transaction ends: (True, its last run)
    or (False, None) when another process holds it."""
    await repo.conn.execute(
        text("INSERT INTO worker_schedule (name) VALUES (:n) ON CONFLICT (name) DO NOTHING"),
        {"n": name},
    )
    row = (
        await repo.conn.execute(
            text("SELECT last_run FROM worker_schedule WHERE name = :n FOR UPDATE SKIP LOCKED"),
            {"n": name},
        )
    ).first()
    if row is None:
        return False, None
    return True, row[0]


async def record_run(repo: Repository, name: str, at: datetime) -> None:
    await repo.conn.execute(
        text("UPDATE worker_schedule SET last_run = :t WHERE name = :n"), {"n": name, "t": at}
    )


class Listener:
    """One connection LISTENing on the channels waiters ask for; each notification sets the
    waiters' events. When the connection is lost every waiter is woken (they then poll) and
    the listener connects again."""

    def __init__(self, engine: AsyncEngine, *, retry_after: float = 2.0) -> None:
        self._engine = engine
        self._retry_after = retry_after
        self._waiters: dict[str, list[asyncio.Event]] = {}
        self._connected = asyncio.Event()
        self.name = "outbox-listener"

    def subscribe(self, channel: str) -> asyncio.Event:
        """An event set whenever `channel` is notified (clear it before reading the work)."""
        wake = asyncio.Event()
        self._waiters.setdefault(channel, []).append(wake)
        return wake

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _wake(self, channel: str | None) -> None:
        for name, waiters in self._waiters.items():
            if channel is None or name == channel:
                for wake in waiters:
                    wake.set()

    async def _connect(self) -> Any:
        args, params = self._engine.dialect.create_connect_args(self._engine.url)
        return await asyncpg.connect(
            *args, **params, timeout=5, server_settings={"application_name": "cmfhir-listen"}
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Hold the listening connection until `stop` is set (a worker of workers/)."""
        while not stop.is_set():
            lost = asyncio.Event()
            conn: Any = None
            try:
                conn = await self._connect()
                conn.add_termination_listener(_setter(lost))

                def notified(_conn: Any, _pid: int, channel: str, _payload: str) -> None:
                    self._wake(channel)

                for channel in list(self._waiters):
                    await conn.add_listener(channel, notified)
                self._connected.set()
                # Whatever was notified while no one listened is read now.
                self._wake(None)
                await _first(stop.wait(), lost.wait())
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
                log.warning("outbox listener: %s; polling meanwhile", type(error).__name__)
            finally:
                self._connected.clear()
                self._wake(None)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 5)
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._retry_after)


def _setter(event: asyncio.Event) -> Any:
    return lambda _conn: event.set()


async def _first(*waits: Any) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

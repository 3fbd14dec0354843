"""A worker following the `event` outbox for one consumer (store/consumers.py): it claims
the consumer's position, reads the next events in gap-free order, hands them to the
consumer's handler and advances the position, all in one transaction; then waits for a
NOTIFY, polling as a fallback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from cmfhir.auth.principal import TRUSTED
from cmfhir.errors import FhirError
from cmfhir.store import Event, EventPosition, Repository, Store
from cmfhir.store import consumers as positions
from cmfhir.waiting import either
from cmfhir.workers.runtime import pause

__all__ = ["EventHandler", "OutboxConsumer"]

log = logging.getLogger(__name__)


class EventHandler(Protocol):
    """What a consumer does with events. `handle` runs in the transaction that advances the
    consumer's position: what it writes commits with the position, or neither does."""

    name: str  # the consumer's name (its row in `consumer`)
    from_start: bool  # a new consumer starts at the outbox's start (else at its end)
    # Also handle committed events past the gap-free horizon as soon as they are seen (they
    # are handled again when the position reaches them, unless this process saw them
    # first): for idempotent handlers that want low latency beside long transactions.
    read_ahead: bool

    async def handle(self, repo: Repository, events: Sequence[Event]) -> None: ...

    # Optionally, `advanced(position)`: called after `handle` with the position the
    # transaction will store (events read ahead lie past it).


class OutboxConsumer:
    """The worker that feeds one `EventHandler`. Several processes may run it: one at a time
    holds the position (SKIP LOCKED), the others find it taken and wait."""

    def __init__(
        self,
        store: Store,
        handler: EventHandler,
        wake: asyncio.Event | None = None,
        *,
        batch: int = 1000,
        poll: float = 1.0,
        retry: float = 0.05,
    ) -> None:
        self.store = store
        self.handler = handler
        self.name = f"outbox:{handler.name}"
        self._wake = wake or asyncio.Event()
        self._batch = batch
        self._poll = poll
        self._retry = retry
        self._registered = False
        # Events past the position this process has handled early (read_ahead).
        self._ahead: set[EventPosition] = set()
        # Transactions whose events were all handled early: not read ahead again.
        self._ahead_xids: set[int] = set()

    async def step(self) -> tuple[int, bool]:
        """Handle one batch: (events handled, whether more may be readable soon)."""
        name = self.handler.name
        async with self.store.transaction(principal=TRUSTED) as repo:
            if not self._registered:
                await positions.register(repo, name, from_start=self.handler.from_start)
                self._registered = True
            position = await positions.claim(repo, name)
            if position is None:
                return 0, False
            events, after = await repo.read_events(position, self._batch)
            full = len(events) == self._batch
            fresh = [e for e in events if e.position not in self._ahead]
            early: list[Event] = []
            done_xids: set[int] = set()
            if self.handler.read_ahead and not full:
                ahead = await positions.read_ahead(
                    repo, after, self._batch, sorted(self._ahead_xids)
                )
                early = [e for e in ahead if e.position not in self._ahead]
                done_xids = {e.position.xid for e in ahead}
                if len(ahead) == self._batch:  # its last transaction may go on past the limit
                    done_xids.discard(ahead[-1].position.xid)
            if fresh or early:
                await self.handler.handle(repo, [*fresh, *early])
            advanced = getattr(self.handler, "advanced", None)
            if callable(advanced) and (events or early):
                advanced(after)
            if events:
                await positions.advance(repo, name, after)
            elif not early:
                # Held back behind a running transaction: worth reading again soon, unless
                # this handler reads ahead (what that transaction commits notifies it, and
                # what others committed meanwhile it has handled already).
                if self.handler.read_ahead:
                    return 0, False
                return 0, await positions.held_back(repo, position)
        # Committed: remember what was handled early, forget what the position passed.
        self._ahead = {p for p in self._ahead if p > after} | {e.position for e in early}
        if early:
            self._ahead_xids |= done_xids
        self._ahead_xids = {x for x in self._ahead_xids if x >= after.xid}
        if not events:
            return len(early), True  # still held back: look again soon
        return len(events), full

    async def drain(self) -> int:
        """Handle every event readable now (tests, `cmfhir gaps sweep`)."""
        total = 0
        while True:
            count, _ = await self.step()
            if count == 0:
                return total
            total += count

    async def catch_up(self, *, retry: float = 0.02, within: float = 30.0) -> int:
        """Handle every event written before the call, waiting out the older transactions
        that hold the gap-free horizon back (a `drain` stops at them): tests, tools."""
        async with self.store.transaction(principal=TRUSTED) as repo:
            target = await positions.newest(repo)
        total = await self.drain()
        async with asyncio.timeout(within):
            while target is not None:
                async with self.store.transaction(principal=TRUSTED) as repo:
                    reached = (await positions.positions(repo)).get(self.handler.name)
                if reached is not None and reached >= target:
                    break
                await asyncio.sleep(retry)
                total += await self.drain()
        return total

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                count, more = await self.step()
            except FhirError as error:  # 409 (a race) or 503 (the database is away)
                log.warning("%s: %s; retrying", self.name, type(error).__name__)
                count, more = 0, False
                if await pause(stop, self._poll):
                    return
            if count and more:
                continue
            if more:  # held back behind a running transaction: look again soon
                await pause(stop, self._retry)
                continue
            if count:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(either(self._wake, stop), self._poll)

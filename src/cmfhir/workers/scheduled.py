"""Jobs run at an interval by whichever process gets there first: the last run is kept in
`worker_schedule` and claimed FOR UPDATE SKIP LOCKED, so several processes run a job once
per interval between them. The clock is passed in (tests move it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar, overload

from cmfhir.auth.principal import TRUSTED
from cmfhir.errors import FhirError
from cmfhir.store import Repository, Store
from cmfhir.store import consumers as schedule
from cmfhir.workers.runtime import pause

__all__ = ["Clock", "PruneStep", "Pruner", "Scheduled", "prune_events", "system_clock"]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Rows deleted by one pruning step: one count, or one per table it prunes.
Counts = TypeVar("Counts", int, tuple[int, ...])
PruneStep = Callable[[Repository, datetime, int], Awaitable[Counts]]


def system_clock() -> datetime:
    return datetime.now(UTC)


class Scheduled:
    """Run `job(repo, now)` every `interval`, in the transaction that records the run."""

    def __init__(
        self,
        store: Store,
        name: str,
        interval: timedelta,
        job: Callable[[Repository, datetime], Awaitable[None]],
        *,
        clock: Clock = system_clock,
        check_every: float = 60.0,
    ) -> None:
        self.store = store
        self.name = name
        self.interval = interval
        self.job = job
        self.clock = clock
        self.check_every = check_every

    async def tick(self) -> bool:
        """Run the job if it is due and no other process holds it; True if it ran."""
        async with self.store.transaction(principal=TRUSTED) as repo:
            mine, last_run = await schedule.claim_schedule(repo, self.name)
            now = self.clock()
            if not mine or (last_run is not None and now - last_run < self.interval):
                return False
            await self.job(repo, now)
            await schedule.record_run(repo, self.name, now)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except FhirError as error:
                log.warning("%s: %s; retrying", self.name, type(error).__name__)
            if await pause(stop, self.check_every):
                return


async def prune_events(repo: Repository, before: datetime, limit: int) -> int:
    """The outbox pruner's step: up to `limit` events every consumer has passed."""
    return await schedule.prune(repo, before, limit)


def _most(counts: int | tuple[int, ...]) -> int:
    return counts if isinstance(counts, int) else max(counts, default=0)


def _plus(total: Counts, counts: Counts) -> Counts:
    if isinstance(total, int) and isinstance(counts, int):
        return total + counts
    assert isinstance(total, tuple) and isinstance(counts, tuple)
    return tuple(a + b for a, b in zip(total, counts, strict=True))


class Pruner(Generic[Counts]):
    """Deletes, every `every` seconds, what is older than `retention`: `step(repo, before,
    limit)` deletes up to `limit` rows (of each of its tables) and says how many went (one
    count, or one per table); steps run in transactions of their own until one deletes
    fewer than `limit` of each. By default the outbox's events every consumer has passed
    (`outbox-pruner`); subscriptions prune their delivered notifications with it too."""

    @overload
    def __init__(
        self: Pruner[int],
        store: Store,
        retention: timedelta,
        *,
        clock: Clock = ...,
        every: float = ...,
        batch: int = ...,
    ) -> None: ...

    @overload
    def __init__(
        self,
        store: Store,
        retention: timedelta,
        step: PruneStep[Counts],
        *,
        name: str,
        clock: Clock = ...,
        every: float = ...,
        batch: int = ...,
    ) -> None: ...

    def __init__(
        self,
        store: Store,
        retention: timedelta,
        step: Any = prune_events,
        *,
        name: str = "outbox-pruner",
        clock: Clock = system_clock,
        every: float = 3600.0,
        batch: int = 10_000,
    ) -> None:
        self.store = store
        self.retention = retention
        self.step: PruneStep[Counts] = step
        self.name = name
        self.clock = clock
        self.every = every
        self.batch = batch

    async def prune(self, stop: asyncio.Event | None = None) -> Counts:
        """One pruning pass, in batches, until one comes back short (or `stop` is set: the
        rest waits for the next pass); how many rows went (per table, as `step` counts)."""
        total: Counts | None = None
        while True:
            async with self.store.transaction(principal=TRUSTED) as repo:
                counts = await self.step(repo, self.clock() - self.retention, self.batch)
            total = counts if total is None else _plus(total, counts)
            if _most(counts) < self.batch or (stop is not None and stop.is_set()):
                return total

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.prune(stop)
            except FhirError as error:
                log.warning("%s: %s; retrying", self.name, type(error).__name__)
            if await pause(stop, self.every):
                return

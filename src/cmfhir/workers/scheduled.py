"""Jobs run at an interval by whichever process gets there first: the last run is kept in
`worker_schedule` and claimed FOR UPDATE SKIP LOCKED, so several processes run a job once
per interval between them. The clock is passed in (tests move it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from cmfhir.auth.principal import TRUSTED
from cmfhir.errors import FhirError
from cmfhir.store import Repository, Store
from cmfhir.store import consumers as schedule
from cmfhir.workers.runtime import pause

__all__ = ["Clock", "Pruner", "Scheduled", "system_clock"]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


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


class Pruner:
    """Prunes outbox events every consumer has passed, once older than `retention`."""

    def __init__(
        self,
        store: Store,
        retention: timedelta,
        *,
        clock: Clock = system_clock,
        every: float = 3600.0,
        batch: int = 10_000,
    ) -> None:
        self.store = store
        self.retention = retention
        self.clock = clock
        self.every = every
        self.batch = batch
        self.name = "outbox-pruner"

    async def prune(self) -> int:
        """One pruning pass, in batches; returns how many events went."""
        total = 0
        while True:
            async with self.store.transaction(principal=TRUSTED) as repo:
                count = await schedule.prune(repo, self.clock() - self.retention, self.batch)
            total += count
            if count < self.batch:
                return total

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.prune()
            except FhirError as error:
                log.warning("%s: %s; retrying", self.name, type(error).__name__)
            if await pause(stop, self.every):
                return

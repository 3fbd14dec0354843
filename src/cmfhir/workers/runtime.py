"""Running background workers: each one an object with `name` and
`async run(stop: asyncio.Event)`, supervised (restarted after a failure, never taking the
process down) until `stop` is set. `cmfhir serve` runs them in-process, `cmfhir worker`
runs them apart (docs/architecture.md, "Workers")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

__all__ = ["Running", "Worker", "pause", "run_workers", "start_workers"]

log = logging.getLogger(__name__)


class Worker(Protocol):
    name: str

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then return promptly."""


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`, or less if `stop` is set; True when `stop` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def _supervise(worker: Worker, stop: asyncio.Event, restart_after: float) -> None:
    while not stop.is_set():
        try:
            await worker.run(stop)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # The type only: a message may quote data.
            log.warning(
                "worker %s failed (%s); restarting in %.0f s",
                worker.name,
                type(error).__name__,
                restart_after,
            )
            await pause(stop, restart_after)
        else:
            return


async def run_workers(
    workers: Sequence[Worker], stop: asyncio.Event, *, restart_after: float = 2.0
) -> None:
    """Run every worker until `stop` is set."""
    await asyncio.gather(*(_supervise(w, stop, restart_after) for w in workers))


class Running:
    """Workers started in the background of a running event loop (the server's)."""

    def __init__(self, workers: Sequence[Worker]) -> None:
        self.stop = asyncio.Event()
        self.workers = list(workers)
        self._task = asyncio.create_task(run_workers(self.workers, self.stop))

    async def close(self, grace: float = 10.0) -> None:
        """Ask the workers to stop and wait for them (cancelled after `grace` seconds)."""
        self.stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def start_workers(workers: Sequence[Worker]) -> Running:
    return Running(workers)

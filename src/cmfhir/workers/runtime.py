"""Running background workers: each one an object with `name` and
`async run(stop: asyncio.Event)`, supervised (restarted after a failure, never taking the
process down) until `stop` is set. `cmfhir serve` runs them in-process, `cmfhir worker`
runs them apart (docs/architecture.md, "Workers")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Protocol

__all__ = ["Running", "Worker", "pause", "run_workers", "start_workers"]

log = logging.getLogger(__name__)

# How long a worker has, once asked to stop, to return on its own before it is cancelled.
PROMPT_S = 1.0


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
    workers: Sequence[Worker],
    stop: asyncio.Event,
    *,
    restart_after: float = 2.0,
    prompt: float = PROMPT_S,
) -> None:
    """Run every worker until `stop` is set; then give them `prompt` seconds to return and
    cancel those still busy (in a long query or send: its transaction rolls back, and what
    it had leased is taken up again when the lease runs out, or at once when it gives it
    back). Logs which workers stopped, and which had to be cancelled."""
    tasks = {
        asyncio.create_task(_supervise(w, stop, restart_after), name=f"worker:{w.name}"): w.name
        for w in workers
    }
    try:
        await stop.wait()
        started = time.monotonic()
        _, busy = await asyncio.wait(tasks, timeout=prompt) if tasks else ((), set())
        for task in busy:
            log.warning(
                "worker %s still busy %.1f s after the stop; cancelled", tasks[task], prompt
            )
            task.cancel()
        await asyncio.gather(*busy, return_exceptions=True)
        cancelled = {tasks[t] for t in busy}
        log.info(
            "workers stopped in %.1f s: %s",
            time.monotonic() - started,
            ", ".join(
                f"{name} (cancelled)" if name in cancelled else name for name in tasks.values()
            ),
        )
    finally:
        # Cancelled from outside (a grace run out): take every worker down with it.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Running:
    """Workers started in the background of a running event loop (the server's)."""

    def __init__(self, workers: Sequence[Worker], *, prompt: float = PROMPT_S) -> None:
        self.stop = asyncio.Event()
        self.workers = list(workers)
        self._task = asyncio.create_task(run_workers(self.workers, self.stop, prompt=prompt))

    async def close(self, grace: float = 10.0) -> None:
        """Ask the workers to stop and wait for them (each is cancelled when still busy
        after `prompt` seconds; all of them after `grace`)."""
        self.stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            log.warning("workers did not stop within the %.0f s grace; cancelled", grace)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def start_workers(workers: Sequence[Worker], *, prompt: float = PROMPT_S) -> Running:
    return Running(workers, prompt=prompt)

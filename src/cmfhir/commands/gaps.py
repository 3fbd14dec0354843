"""`cmfhir gaps sweep [--as-of INSTANT] [--processes N]`: evaluate every member's care gaps
now (or as of another instant), as the daily sweep does, and wait until it is done.

The command queues every member, then evaluates them in N processes at once (itself and
N - 1 it starts), each leasing batches from the queue as a server's evaluators do (FOR
UPDATE SKIP LOCKED: no member is evaluated by two at once); a running server's
evaluators share the work too. The rules are CPU work in Python, so one process holds one
core at most: by default the command takes every core it may use, but one process per
whole 1,000 members queued at most (a process's start-up costs about 2 s of CPU, as much as
evaluating about a thousand members)."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cmfhir.config import Settings

if TYPE_CHECKING:
    from cmfhir.interactions import FhirContext

__all__ = ["add_commands", "sweep_processes"]

WithContext = Callable[[Callable[["FhirContext"], Awaitable[Any]]], Any]

# Members queued per process the command starts by default (--processes 0).
MEMBERS_PER_PROCESS = 1000


def _as_of(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"'{value}' is not a date or instant (2026-12-01 or 2026-12-01T08:00:00Z)"
        ) from error
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _processes(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise argparse.ArgumentTypeError(
            f"'{value}' is not a number of processes (0: one per core the command may use)"
        )
    return count


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def sweep_processes(asked: int, queued: int) -> int:
    """How many processes evaluate a sweep: as asked, or (0) one per core, but no more than
    one per whole MEMBERS_PER_PROCESS members queued (1,999 members: one process)."""
    if asked > 0:
        return asked
    return max(1, min(_cores(), queued // MEMBERS_PER_PROCESS))


async def _drain(ctx: FhirContext) -> int:
    """Evaluate queued members until none is due (two batches at a time: one's rules run
    while the other waits for the database)."""
    from dataclasses import replace

    from cmfhir.auth.principal import TRUSTED
    from cmfhir.gaps.engine import GapEngine
    from cmfhir.gaps.ruleset import load_ruleset
    from cmfhir.workers import settle_heap

    settings = Settings()
    settle_heap(ctx)
    engine = GapEngine(
        replace(ctx, principal=TRUSTED), load_ruleset(settings.profiles_dir, settings.gap_rules)
    )
    return await engine.drain(concurrency=2)


def _drain_apart(with_context: WithContext, database_url: str) -> int:
    """In a process the sweep started: evaluate queued members until none is due."""
    os.environ["CMFHIR_DATABASE_URL"] = database_url  # the database the sweep opened
    count: int = with_context(_drain)
    return count


def _sweep(args: argparse.Namespace, with_context: WithContext) -> int:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from cmfhir.auth.principal import TRUSTED
    from cmfhir.store import consumers, gap_queue

    async def work(ctx: FhirContext) -> tuple[int, int, int]:
        async with ctx.store.transaction(principal=TRUSTED) as repo:
            queued = await gap_queue.enqueue_all(repo, args.as_of)
            # Wake a running server's evaluators: they share the sweep at once.
            await consumers.notify(repo, gap_queue.GAP_CHANNEL)
        processes = sweep_processes(args.processes, queued)
        if processes == 1:
            return queued, await _drain(ctx), 1
        url = ctx.store.engine.url.render_as_string(hide_password=False)
        loop = asyncio.get_running_loop()
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(processes - 1, mp_context=spawn) as pool:
            apart = [
                loop.run_in_executor(pool, _drain_apart, with_context, url)
                for _ in range(processes - 1)
            ]
            try:
                here = await _drain(ctx)
            finally:
                elsewhere = await asyncio.gather(*apart)
        return queued, here + sum(elsewhere), processes

    queued, evaluated, processes = with_context(work)
    when = args.as_of.isoformat() if args.as_of else "now"
    print(
        f"care-gap sweep as of {when}: {queued} members queued, {evaluated} evaluated here "
        f"({processes} process{'es' if processes != 1 else ''})"
    )
    return 0


def add_commands(commands: Any, with_context: WithContext) -> None:
    summary = "care-gap engine commands"
    p_gaps = commands.add_parser("gaps", help=summary, description=summary)
    actions = p_gaps.add_subparsers(dest="action", required=True)
    sweep_summary = "evaluate every member's care gaps now and wait until done"
    p_sweep = actions.add_parser("sweep", help=sweep_summary, description=sweep_summary)
    p_sweep.add_argument(
        "--as-of",
        type=_as_of,
        default=None,
        metavar="INSTANT",
        help="evaluate as of this date or instant, for gaps that open by the passing of time "
        "(default: now)",
    )
    p_sweep.add_argument(
        "--processes",
        type=_processes,
        default=0,
        metavar="N",
        help="evaluate in N processes at once, this one included (default 0: one per core "
        f"this command may use, at most one per whole {MEMBERS_PER_PROCESS:,} members queued)",
    )
    p_sweep.set_defaults(func=lambda args: _sweep(args, with_context))

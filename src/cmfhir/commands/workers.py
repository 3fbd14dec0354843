"""`cmfhir worker`: the background workers (gap engine, outbox pruning) in a process of
their own, beside `cmfhir serve --no-workers` (docs/architecture.md, "Workers")."""

from __future__ import annotations

import argparse
import asyncio
import logging.config
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from cmfhir.config import Settings

if TYPE_CHECKING:
    from cmfhir.interactions import FhirContext

__all__ = ["add_commands"]

T = TypeVar("T")
# cli.py's runner: `work` run with the server's context (database migrated, definitions
# loaded). Passed in, as commands/ sits below app.py, which opens the context.
WithContext = Callable[[Callable[["FhirContext"], Awaitable[Any]]], Any]


def _worker(args: argparse.Namespace, with_context: WithContext) -> int:
    from cmfhir.logs import logging_config
    from cmfhir.workers import run_workers, settle_heap, standard_workers

    settings = Settings()
    logging.config.dictConfig(
        logging_config(
            settings.log_level,
            settings.log_format,
            repeat_limit=settings.log_repeat_limit,
            repeat_interval=settings.log_repeat_interval_s,
        )
    )
    log = logging.getLogger("cmfhir")

    async def work(ctx: FhirContext) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        workers = (
            standard_workers(ctx, settings)
            if args.only is None
            else standard_workers(ctx, settings, groups=args.only)
        )
        settle_heap(ctx)
        log.info("running workers: %s", ", ".join(w.name for w in workers))
        await run_workers(workers, stop)
        log.info("workers stopped")

    with_context(work)
    return 0


def _groups(value: str) -> frozenset[str]:
    from cmfhir.workers.standard import WORKER_GROUPS

    names = frozenset(name.strip() for name in value.split(",") if name.strip())
    unknown = sorted(names - set(WORKER_GROUPS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown worker group {', '.join(unknown) or repr(value)}: "
            f"choose from {', '.join(WORKER_GROUPS)}"
        )
    return names


def add_commands(commands: Any, with_context: WithContext) -> None:
    summary = "run the background workers (gap engine, subscriptions, exchange, pruning)"
    p_worker = commands.add_parser("worker", help=summary, description=summary)
    p_worker.add_argument(
        "--only",
        type=_groups,
        default=None,
        metavar="GROUP[,GROUP]",
        help="run only these groups of workers (gaps, subscriptions, exchange, housekeeping; "
        "default all), e.g. the gap engine and the subscription workers in processes of "
        "their own",
    )
    p_worker.set_defaults(func=lambda args: _worker(args, with_context))

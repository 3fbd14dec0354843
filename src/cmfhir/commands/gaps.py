"""`cmfhir gaps sweep [--as-of INSTANT]`: evaluate every member's care gaps now (or as of
another instant), as the daily sweep does, and wait until it is done."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cmfhir.config import Settings

if TYPE_CHECKING:
    from cmfhir.interactions import FhirContext

__all__ = ["add_commands"]

WithContext = Callable[[Callable[["FhirContext"], Awaitable[Any]]], Any]


def _as_of(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"'{value}' is not a date or instant (2026-12-01 or 2026-12-01T08:00:00Z)"
        ) from error
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _sweep(args: argparse.Namespace, with_context: WithContext) -> int:
    from dataclasses import replace

    from cmfhir.auth.principal import TRUSTED
    from cmfhir.gaps.engine import GapEngine
    from cmfhir.gaps.ruleset import load_ruleset
    from cmfhir.store import consumers, gap_queue
    from cmfhir.workers import settle_heap

    settings = Settings()

    async def work(ctx: FhirContext) -> tuple[int, int]:
        settle_heap(ctx)
        async with ctx.store.transaction(principal=TRUSTED) as repo:
            queued = await gap_queue.enqueue_all(repo, args.as_of)
            # Wake a running server's evaluators: they share the sweep at once.
            await consumers.notify(repo, gap_queue.GAP_CHANNEL)
        engine = GapEngine(
            replace(ctx, principal=TRUSTED), load_ruleset(settings.profiles_dir, settings.gap_rules)
        )
        return queued, await engine.drain(concurrency=2)

    queued, evaluated = with_context(work)
    when = args.as_of.isoformat() if args.as_of else "now"
    print(f"care-gap sweep as of {when}: {queued} members queued, {evaluated} evaluated here")
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
    p_sweep.set_defaults(func=lambda args: _sweep(args, with_context))

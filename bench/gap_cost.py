"""`python -m bench.gap_cost`: what a care-gap sweep costs per member, in one process, the
variants interleaved (A, B, A, B ...) so that the machine's load falls on both alike.

It loads `--members` members of the caseload (in-process transactions, no HTTP) into a
database of the worktree's embedded PostgreSQL (or `--database-url`), then sweeps them
`--rounds` times with each variant: every member queued, then evaluated by one engine with
`--concurrency` batches at a time, `--sweep-batch` members a batch. Per sweep: this
process's CPU (`time.process_time`), PostgreSQL's (its backends' CPU from /proc), wall
time, members evaluated, and the statements and transactions sent per member (counted).

Variants: `after` (the engine as it is: a batch's members taken off the queue in the
transaction that leases the next batch) and `before` (each batch in three transactions:
lease, evaluate, take off the queue), as `main` ran it at 9d5f583.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

from sqlalchemy import event

from bench.caseload import make_staff, member_bundles, staff_bundle
from bench.scratch import admin_url, create_database, drop_database, postgres_cpu
from cmfhir.app import open_context
from cmfhir.auth.principal import TRUSTED
from cmfhir.config import Settings
from cmfhir.gaps.engine import GapEngine
from cmfhir.gaps.ruleset import RuleSet, load_ruleset
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.transaction import process_bundle
from cmfhir.store import gap_queue


class _Counter:
    """Statements and commits sent through the store's engine."""

    def __init__(self, ctx: FhirContext) -> None:
        self.statements = 0
        self.commits = 0
        sync = ctx.store.engine.sync_engine
        event.listen(sync, "before_cursor_execute", self._statement)
        event.listen(sync, "commit", self._commit)

    def _statement(self, *_: Any) -> None:
        self.statements += 1

    def _commit(self, *_: Any) -> None:
        self.commits += 1


async def _drain_before(engine: GapEngine, concurrency: int) -> int:
    """GapEngine.drain as it was: every batch taken off the queue in its own transaction."""

    async def loop() -> int:
        total = 0
        while True:
            count = await engine.evaluate_due()
            total += count
            if count:
                continue
            async with engine.ctx.store.transaction(
                read_only=True, principal=engine.ctx.principal
            ) as repo:
                _, due = await gap_queue.queued(repo)
            if not due:
                return total
            await asyncio.sleep(0.05)

    return sum(await asyncio.gather(*(loop() for _ in range(max(concurrency, 1)))))


async def _load(ctx: FhirContext, members: int) -> None:
    staff = make_staff(members)
    await process_bundle(ctx, staff_bundle(staff), base="http://bench/fhir")
    for bundle in member_bundles(1, members, staff):
        await process_bundle(ctx, bundle, base="http://bench/fhir", representation=False)


async def _sweep(
    ctx: FhirContext,
    ruleset: RuleSet,
    args: argparse.Namespace,
    counter: _Counter,
    *,
    before: bool = False,
) -> dict[str, float]:
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        await gap_queue.enqueue_all(repo, None)
    engine = GapEngine(ctx, ruleset, sweep_batch=args.sweep_batch)
    statements, commits = counter.statements, counter.commits
    pg0, cpu0, wall0 = postgres_cpu(admin_url()), time.process_time(), time.perf_counter()
    if before:
        evaluated = await _drain_before(engine, args.concurrency)
    else:
        evaluated = await engine.drain(concurrency=args.concurrency)
    pg1, cpu1, wall1 = postgres_cpu(admin_url()), time.process_time(), time.perf_counter()
    each = max(evaluated, 1)
    return {
        "members": evaluated,
        "python_ms_per_member": (cpu1 - cpu0) * 1000 / each,
        "postgres_ms_per_member": (pg1 - pg0) * 1000 / each,
        "statements_per_member": (counter.statements - statements) / each,
        "transactions_per_member": (counter.commits - commits) / each,
        "members_per_s": evaluated / (wall1 - wall0),
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    admin = admin_url()  # started (or joined) also when reusing a database of it
    url = args.database_url
    made = None
    if url is None:
        url = made = await create_database(admin, "cmfhir_gapcost")
    try:
        settings = Settings(database_url=url)
        async with open_context(settings) as opened:
            ctx = replace(opened, principal=TRUSTED)
            if made is not None:
                await _load(ctx, args.members)
            ruleset = load_ruleset(settings.profiles_dir, args.rules)
            counter = _Counter(ctx)
            for _ in range(2):  # warm-up: gaps written, then what cites them
                await _sweep(ctx, ruleset, args, counter)
            runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
            for _ in range(args.rounds):
                for name in runs:
                    found = await _sweep(ctx, ruleset, args, counter, before=name == "before")
                    runs[name].append(found)
                    print(name, json.dumps(found), file=sys.stderr)
            return {
                name: {key: round(statistics.median(r[key] for r in found), 2) for key in found[0]}
                for name, found in runs.items()
            }
    finally:
        if made is not None and not args.keep:
            await drop_database(admin_url(), made)
        elif made is not None:
            print(f"kept: {url}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gap_cost", description=__doc__)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--sweep-batch", type=int, default=100)
    parser.add_argument("--rules", default=os.environ.get("BENCH_GAP_RULES", "cmfhir.gaps.rules"))
    parser.add_argument("--database-url", default=None, help="a loaded database to reuse")
    parser.add_argument("--keep", action="store_true", help="keep the database made")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(_run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

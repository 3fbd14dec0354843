"""`python -m bench.gap_cost`: what a care-gap sweep costs per member, in one process, the
variants interleaved (A, B, A, B ...) so that the machine's load falls on both alike.

It loads `--members` members of the caseload (in-process transactions, no HTTP) into a
database of the worktree's embedded PostgreSQL (or `--database-url`), then sweeps them
`--rounds` times with each variant: every member queued, then evaluated by one engine with
`--concurrency` batches at a time, `--sweep-batch` members a batch. Per sweep: this
process's CPU (`time.process_time`), PostgreSQL's (its backends' CPU from /proc), wall
time, members evaluated, and the statements and transactions sent per member (counted).

With `--database-url` it sweeps a loaded database instead (the one a `python -m bench
--keep-data` run kept: `--data-dir` names its data dir, for PostgreSQL's CPU), only the
first `--members` members if given, as of `--as-of` (fixed, so that after the warm-up a
sweep finds nothing to write and the rounds compare like with like).

Variants: `after` (the engine as it is: each member's resources parsed and evaluated one
member at a time with the cyclic garbage collector paused, a member's qualifying contacts
found once for the three rules that read them) and `before` (as `main` ran it at 82deccd:
the batch's snapshots all parsed first, the collector on, the contacts found by each rule).
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
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from bench.caseload import make_staff, member_bundles, staff_bundle
from bench.scratch import admin_url, create_database, drop_database, postgres_cpu
from cmfhir.app import open_context
from cmfhir.auth.principal import TRUSTED
from cmfhir.config import Settings
from cmfhir.gaps import engine as gap_engine
from cmfhir.gaps.engine import GapEngine, evaluate_member
from cmfhir.gaps.rules import _common, contact_requirement, missed_appointment, transition_follow_up
from cmfhir.gaps.ruleset import RuleSet, load_ruleset
from cmfhir.gaps.snapshot import read_snapshots
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.transaction import process_bundle
from cmfhir.store import gap_queue
from cmfhir.store.database import embedded_url


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


class _EngineBefore(GapEngine):
    """GapEngine._evaluate as it was: every snapshot of the batch parsed first, then the
    rules run with the collector on."""

    async def _evaluate(self, members: Any) -> None:
        async with self.ctx.store.transaction(principal=self.ctx.principal) as repo:
            await gap_queue.begin_repeatable_read(repo)
            await gap_engine.outbox.mark_origin(repo, gap_engine.ORIGIN)
            snapshots = await read_snapshots(
                repo,
                [m[0] for m in members],
                self.ruleset.compartment_types,
                self.ruleset.shared_types,
            )
            now = self.clock()
            writes: list[dict[str, Any]] = []
            for patient_id, as_of, _ in members:
                writes.extend(evaluate_member(snapshots[patient_id], as_of or now, self.ruleset))
                await asyncio.sleep(0)
            self.evaluations += len(members)
            await self._write(repo, writes)


_RULES_WITH_CONTACTS = (contact_requirement, missed_appointment, transition_follow_up)


def _contacts_per_rule(before: bool) -> None:
    """The rules find the contacts each time (before) or once per snapshot (after)."""
    found = _common._qualifying_contacts if before else _common.qualifying_contacts
    for module in _RULES_WITH_CONTACTS:
        module.qualifying_contacts = found  # type: ignore[attr-defined]


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
        await repo.conn.execute(
            text(
                "INSERT INTO gap_member (patient_id, as_of, sweep) "
                "SELECT id, CAST(:as_of AS timestamptz), true FROM resource "
                "WHERE resource_type = 'Patient' AND NOT deleted ORDER BY id LIMIT :n "
                "ON CONFLICT (patient_id) DO NOTHING"
            ),
            {"as_of": args.as_of, "n": args.limit},
        )
    kind = _EngineBefore if before else GapEngine
    engine = kind(ctx, ruleset, sweep_batch=args.sweep_batch)
    _contacts_per_rule(before)
    statements, commits = counter.statements, counter.commits
    cluster = args.cluster or admin_url()
    pg0, cpu0, wall0 = postgres_cpu(cluster), time.process_time(), time.perf_counter()
    evaluated = await engine.drain(concurrency=args.concurrency)
    pg1, cpu1, wall1 = postgres_cpu(cluster), time.process_time(), time.perf_counter()
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
    admin = args.cluster or admin_url()  # started (or joined) also when reusing a database
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
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="the kept run's data dir (its pg/ started)"
    )
    parser.add_argument("--limit", type=int, default=None, help="sweep only this many members")
    parser.add_argument("--as-of", type=datetime.fromisoformat, default=None)
    args = parser.parse_args(argv)
    args.cluster = None
    if args.data_dir is not None:
        args.cluster = embedded_url(args.data_dir.resolve())
        args.database_url = args.database_url or args.cluster
    print(json.dumps(asyncio.run(_run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

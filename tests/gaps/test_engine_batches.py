"""Evaluating batch after batch: a batch's members leave the queue in the transaction that
leases the next batch (two transactions a batch, not three), and an evaluator that stops
takes what it evaluated off the queue before it ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import event, text

from cmfhir.app import open_context
from cmfhir.auth.principal import TRUSTED
from cmfhir.config import Settings
from cmfhir.gaps.engine import GapEngine, GapEvaluator
from cmfhir.gaps.model import Gap, MemberSnapshot
from cmfhir.gaps.ruleset import RuleSet
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.create import create_in
from cmfhir.store import gap_queue


def _one_gap(snapshot: MemberSnapshot, as_of: datetime, config: Any) -> list[Gap]:
    return [Gap("probe", "", "open-gap", "A probe gap")]


PROBE = RuleSet([SimpleNamespace(CODE="probe", evaluate=_one_gap)])  # type: ignore[list-item]


@pytest.fixture
async def ctx(scratch_database: str) -> AsyncIterator[FhirContext]:
    async with open_context(Settings(database_url=scratch_database)) as context:
        yield replace(context, principal=TRUSTED)


async def _queue_members(ctx: FhirContext, count: int) -> list[str]:
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        ids = [
            (await create_in(ctx, repo, {"resourceType": "Patient"}))[0].id for _ in range(count)
        ]
        await gap_queue.enqueue(repo, ids, None)
    return ids


async def _counts(ctx: FhirContext) -> tuple[int, int]:
    """(members still queued, DetectedIssues)."""
    async with ctx.store.transaction(read_only=True, principal=TRUSTED) as repo:
        row = (
            await repo.conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM gap_member), (SELECT count(*) FROM resource "
                    "WHERE resource_type = 'DetectedIssue')"
                )
            )
        ).one()
    return int(row[0]), int(row[1])


async def test_a_batch_leaves_the_queue_with_the_next_lease(ctx: FhirContext) -> None:
    await _queue_members(ctx, 9)
    commits = 0

    def counted(*_: Any) -> None:
        nonlocal commits
        commits += 1

    sync = ctx.store.engine.sync_engine
    event.listen(sync, "commit", counted)
    try:
        assert await GapEngine(ctx, PROBE, batch=3).drain() == 9
    finally:
        event.remove(sync, "commit", counted)
    # Three batches: each leased (with the previous one's members taken off the queue) and
    # evaluated; then one more lease finds none and takes the last batch off.
    assert commits == 3 * 2 + 1
    assert await _counts(ctx) == (0, 9)


async def test_a_stopped_evaluator_takes_its_last_batch_off_the_queue(ctx: FhirContext) -> None:
    stop, wake = asyncio.Event(), asyncio.Event()

    def stopping(snapshot: MemberSnapshot, as_of: datetime, config: Any) -> list[Gap]:
        stop.set()  # asked to stop while evaluating: no next lease will take them off
        return _one_gap(snapshot, as_of, config)

    rules = RuleSet([SimpleNamespace(CODE="probe", evaluate=stopping)])  # type: ignore[list-item]
    engine = GapEngine(ctx, rules, batch=5)
    await _queue_members(ctx, 4)
    wake.set()
    await asyncio.wait_for(GapEvaluator(engine, wake, poll=60).run(stop), 30)
    assert engine.evaluations == 4
    assert await _counts(ctx) == (0, 4)

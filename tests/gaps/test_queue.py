"""The gap engine's member queue: queueing a member never waits for its evaluation, a
member queued again while it is evaluated is evaluated again, and members a change queued
go before a sweep's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from cmfhir.app import open_context
from cmfhir.auth.principal import TRUSTED
from cmfhir.config import Settings
from cmfhir.interactions.context import FhirContext
from cmfhir.store import gap_queue

LEASE = timedelta(minutes=1)


@pytest.fixture
async def ctx(scratch_database: str) -> AsyncIterator[FhirContext]:
    async with open_context(Settings(database_url=scratch_database)) as context:
        yield context


async def test_queueing_again_during_an_evaluation_keeps_the_member_queued(
    ctx: FhirContext,
) -> None:
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        await gap_queue.enqueue(repo, ["a", "b"], None)
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        leased = await gap_queue.claim(repo, 10, LEASE)
    assert [m[0] for m in leased] == ["a", "b"]
    # Evaluating: a change to "a" is queued meanwhile, without waiting for the evaluation.
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        await asyncio.wait_for(gap_queue.enqueue(repo, ["a"], None), 5)
        assert await gap_queue.claim(repo, 10, LEASE) == []  # both still leased
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        await gap_queue.done(repo, leased)
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        again = await gap_queue.claim(repo, 10, LEASE)
    assert [m[0] for m in again] == ["a"]


async def test_a_change_goes_before_the_sweep(ctx: FhirContext) -> None:
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        for n in range(3):
            await repo.conn.exec_driver_sql(
                "INSERT INTO resource (resource_type, id, version, last_updated, content) "
                f"VALUES ('Patient', 'swept-{n}', 1, now(), '{{}}')"
            )
        await gap_queue.enqueue_all(repo, None)
        await gap_queue.enqueue(repo, ["changed", "swept-2"], None)
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        first = await gap_queue.claim(repo, 2, LEASE, sweep=False)
        rest = await gap_queue.claim(repo, 10, LEASE, sweep=True)
    assert [m[0] for m in first] == ["changed", "swept-2"]
    assert sorted(m[0] for m in rest) == ["swept-0", "swept-1"]

"""The care-gap engine: members are queued (`gap_member`) by the outbox feed (`GapFeed`, a
consumer of the `event` outbox) and by the sweep; evaluators claim them FOR UPDATE SKIP
LOCKED, read their snapshots in one REPEATABLE READ transaction, run every rule, and write
the reconciled DetectedIssues in that same transaction through the store path every client
write takes (validated, versioned, indexed, in the outbox). A DetectedIssue's id is derived
from its gap's identifier, so replays, restarts and racing workers make no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cmfhir.errors import Conflict, FhirError, ServiceUnavailable
from cmfhir.gaps.detected_issue import gap_identifier
from cmfhir.gaps.model import Gap, MemberSnapshot
from cmfhir.gaps.reconcile import reconcile
from cmfhir.gaps.ruleset import RuleSet
from cmfhir.gaps.snapshot import care_manager, read_snapshots
from cmfhir.interactions.context import FhirContext, utcnow
from cmfhir.interactions.versions import to_version
from cmfhir.resources.version_validation import validate_for_version
from cmfhir.store import Event, NewVersion, Repository, gap_queue
from cmfhir.store import consumers as outbox
from cmfhir.waiting import either

__all__ = ["ORIGIN", "GapEngine", "GapEvaluator", "GapFeed", "evaluate_member", "sweep_job"]

log = logging.getLogger(__name__)

# The engine's name in the outbox: its consumer position, and the origin of its own writes.
ORIGIN = "gaps"

Clock = Callable[[], datetime]


def _system_clock() -> datetime:
    return datetime.now(UTC)


def evaluate_member(
    snapshot: MemberSnapshot, as_of: datetime, ruleset: RuleSet
) -> list[dict[str, Any]]:
    """The DetectedIssues to write for one member: every rule run on the snapshot, the gaps
    reconciled with those stored. A rule that fails leaves its stored gaps as they are. A
    member whose Patient is gone (deleted) is left alone."""
    if not snapshot.of("Patient"):
        return []
    computed: list[Gap] = []
    evaluated: set[str] = set()
    for rule in ruleset.rules:
        try:
            computed.extend(rule.evaluate(snapshot, as_of, ruleset.config))
        except Exception as error:  # one rule's bug must not stop the others
            log.warning("care-gap rule %s failed (%s)", rule.CODE, type(error).__name__)
            continue
        evaluated.add(rule.CODE)
    stored = [dict(r) for r in snapshot.of("DetectedIssue") if gap_identifier(dict(r))]
    return reconcile(
        snapshot.patient_id,
        computed,
        stored,
        as_of=as_of,
        care_manager=care_manager(snapshot, as_of),
        evaluated_rules=evaluated,
    )


_NOT_CLINICAL = frozenset({"AuditEvent", "Provenance"})


class GapFeed:
    """The outbox consumer `gaps`: queues the members each event concerns (the member the
    resource is in, and the one it left), skipping the engine's own DetectedIssues."""

    name = ORIGIN
    from_start = True
    # Queueing a member twice is harmless: act on committed events at once, not only once
    # every older transaction has ended (a long ingest would hold the gaps back).
    read_ahead = True

    async def handle(self, repo: Repository, events: Sequence[Event]) -> None:
        members: set[str] = set()
        for event in events:
            # The audit trail records who looked at a member: no gap rule reads it.
            if event.origin == ORIGIN or event.resource_type in _NOT_CLINICAL:
                continue
            if event.patient_id is not None:
                members.add(event.patient_id)
            if event.previous_patient_id is not None:
                members.add(event.previous_patient_id)
        if members:
            await gap_queue.enqueue(repo, sorted(members), None)
            await outbox.notify(repo, gap_queue.GAP_CHANNEL)


async def sweep_job(repo: Repository, now: datetime) -> None:
    """The scheduled sweep: every member queued (gaps that open by the passing of time)."""
    count = await gap_queue.enqueue_all(repo, None)
    await outbox.notify(repo, gap_queue.GAP_CHANNEL)
    log.info("care-gap sweep: %d members queued", count)


class GapEngine:
    """Evaluates queued members, `batch` of them per transaction."""

    def __init__(
        self,
        ctx: FhirContext,
        ruleset: RuleSet,
        *,
        clock: Clock = _system_clock,
        batch: int = 20,
        retry_after: timedelta = timedelta(seconds=30),
    ) -> None:
        self.ctx = ctx
        self.ruleset = ruleset
        self.clock = clock
        self.batch = batch
        self.retry_after = retry_after
        # After a batch failed for other reasons than a race, members go one at a time
        # for a while, so the one that fails is found and put aside.
        self._isolating = 0

    async def evaluate_due(self) -> int:
        """Evaluate one batch of due members; how many (0: none due, or a race to retry)."""
        size = 1 if self._isolating else self.batch
        claimed: list[str] = []
        try:
            for attempt in range(3):
                try:
                    count = await self._evaluate(size, claimed)
                    break
                except Conflict:
                    # A concurrent write to the same rows (40001): the members stay queued.
                    claimed.clear()
                    await asyncio.sleep(0.02 * (attempt + 1))
            else:
                return 0
        except ServiceUnavailable:
            raise
        except Exception as error:
            if size > 1:
                log.warning(
                    "care-gap evaluation of %d members failed (%s); retrying them one by one",
                    len(claimed),
                    type(error).__name__,
                )
                self._isolating = size
                return 0
            log.warning(
                "care-gap evaluation of a member failed (%s); retried later",
                type(error).__name__,
            )
            if claimed:
                async with self.ctx.store.transaction(principal=self.ctx.principal) as repo:
                    await gap_queue.postpone(repo, claimed[0], self.retry_after)
            self._isolating = max(self._isolating - 1, 0)
            return 0
        if size == 1 and self._isolating:
            self._isolating -= 1
        return count

    async def _evaluate(self, size: int, claimed: list[str]) -> int:
        async with self.ctx.store.transaction(principal=self.ctx.principal) as repo:
            await gap_queue.begin_repeatable_read(repo)
            members = await gap_queue.claim(repo, size)
            if not members:
                return 0
            claimed.extend(p for p, _ in members)
            await outbox.mark_origin(repo, ORIGIN)
            snapshots = await read_snapshots(repo, claimed)
            now = self.clock()
            writes: list[dict[str, Any]] = []
            for patient_id, as_of in members:
                writes.extend(evaluate_member(snapshots[patient_id], as_of or now, self.ruleset))
            await self._write(repo, writes)
            await gap_queue.done(repo, claimed)
        return len(members)

    async def _write(self, repo: Repository, resources: Sequence[dict[str, Any]]) -> None:
        """Write DetectedIssues as a client's update would: validated, then versioned on
        top of the current version (created when there is none), indexed, in the outbox."""
        if not resources:
            return
        for resource in resources:
            validate_for_version(resource, self.ctx.fhir_version, expected_type="DetectedIssue")
        keys = [("DetectedIssue", r["id"]) for r in resources]
        current = await repo.lock_or_claim(keys)
        now = utcnow()
        records: list[NewVersion] = []
        for resource, key in zip(resources, keys, strict=True):
            found = current.get(key)
            if found is None:
                version, rid, created = 1, None, True
            else:
                version, rid, created = found.version + 1, found.rid, found.deleted
            record, _ = to_version(
                self.ctx,
                resource,
                id=key[1],
                version=version,
                now=now,
                method="create" if created else "update",
                rid=rid,
            )
            records.append(record)
        await repo.write(records)

    async def drain(self) -> int:
        """Evaluate queued members until none is due (`cmfhir gaps sweep`, tests)."""
        total = 0
        while True:
            count = await self.evaluate_due()
            total += count
            if count:
                continue
            async with self.ctx.store.transaction(
                read_only=True, principal=self.ctx.principal
            ) as repo:
                _, due = await gap_queue.queued(repo)
            if not due:
                return total
            await asyncio.sleep(0.05)  # claimed by another worker, or a race retried


class GapEvaluator:
    """A worker evaluating queued members as they come (woken by NOTIFY, polling as a
    fallback)."""

    def __init__(
        self, engine: GapEngine, wake: asyncio.Event, *, index: int = 0, poll: float = 1.0
    ) -> None:
        self.engine = engine
        self.name = f"gaps:evaluate-{index}"
        self._wake = wake
        self._poll = poll

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                if await self.engine.evaluate_due():
                    continue
            except FhirError as error:
                log.warning("%s: %s; retrying", self.name, type(error).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(either(self._wake, stop), self._poll)

"""The care-gap engine: members are queued (`gap_member`) by the outbox feed (`GapFeed`, a
consumer of the `event` outbox) and by the sweep; evaluators lease them (store/gap_queue.py:
members a change queued first, in small batches; then a sweep's, in large ones), read their
snapshots in one REPEATABLE READ transaction, run every rule, and write the reconciled
DetectedIssues in that same transaction through the store path every client write takes
(validated, versioned, indexed, in the outbox). A DetectedIssue's id is derived
from its gap's identifier, so replays, restarts and racing workers make no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cmfhir.errors import Conflict, FhirError, ServiceUnavailable
from cmfhir.gaps import detected_issue
from cmfhir.gaps.detected_issue import gap_identifier
from cmfhir.gaps.model import Gap, MemberSnapshot
from cmfhir.gaps.reconcile import reconcile
from cmfhir.gaps.ruleset import RuleSet
from cmfhir.gaps.snapshot import care_manager, read_members
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

# How long `GapEngine.drain` waits before looking again for members it may take, when the
# due ones are all leased: first, then doubling up to the last.
_IDLE_FIRST = 0.05
_IDLE_LAST = 0.5


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
    # As parsed (dicts already): reconcile copies what it changes.
    stored = [
        found
        for found in (r if isinstance(r, dict) else dict(r) for r in snapshot.of("DetectedIssue"))
        if gap_identifier(found)
    ]
    return reconcile(
        snapshot.patient_id,
        computed,
        stored,
        as_of=as_of,
        care_manager=care_manager(snapshot, as_of),
        evaluated_rules=evaluated,
    )


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a block that makes and drops many objects
    and never awaits (parsing a member's resources and running the rules: thousands of
    dicts and lists, none in a cycle, freed by reference counting as soon as the member is
    done). With the collector on, those objects set off collections that traverse them, and
    every full one the whole heap: about a third of an evaluation's CPU in `cmfhir gaps
    sweep` and `cmfhir worker`, whose start-up heap is not frozen (bench/README.md)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


_NOT_CLINICAL = frozenset({"AuditEvent", "Provenance"})


class GapFeed:
    """The outbox consumer `gaps`: queues the members each event concerns (the member the
    resource is in, and the one it left), skipping the engine's own DetectedIssues and
    changes to types no rule reads (given the rule set: its rules' `READS`)."""

    name = ORIGIN
    from_start = True
    # Queueing a member twice is harmless: act on committed events at once, not only once
    # every older transaction has ended (a long ingest would hold the gaps back).
    read_ahead = True

    def __init__(self, ruleset: RuleSet | None = None) -> None:
        self.ruleset = ruleset

    def concerns(self, event: Event) -> bool:
        """Whether the event can change a member's gaps."""
        if event.origin == ORIGIN or event.resource_type in _NOT_CLINICAL:
            return False
        return self.ruleset is None or self.ruleset.triggered_by(event.resource_type)

    async def handle(self, repo: Repository, events: Sequence[Event]) -> None:
        members: set[str] = set()
        for event in events:
            if not self.concerns(event):
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
    """Evaluates queued members: up to `batch` of those a change queued per transaction
    (small, so that a change shows soon), else up to `sweep_batch` of those a sweep queued
    (large: one set of queries for many members)."""

    def __init__(
        self,
        ctx: FhirContext,
        ruleset: RuleSet,
        *,
        clock: Clock = _system_clock,
        batch: int = 20,
        sweep_batch: int = 100,
        retry_after: timedelta = timedelta(seconds=30),
        lease: timedelta = timedelta(seconds=30),
    ) -> None:
        self.ctx = ctx
        self.ruleset = ruleset
        self.clock = clock
        self.batch = batch
        self.sweep_batch = sweep_batch
        self.retry_after = retry_after
        # How long an evaluator keeps the members it took; after a crash they are
        # evaluated again once it has run out.
        self.lease = lease
        # After a batch failed for other reasons than a race, members go one at a time
        # for a while, so the one that fails is found and put aside.
        self._isolating = 0
        # Members evaluated (an evaluation retried after a race counts again).
        self.evaluations = 0
        self._warm = False

    def warm_up(self) -> None:
        """Do now, once, what the first DetectedIssue written would otherwise do while a
        change waits for its gap: build, validate and make ready to store one (as `_write`
        does, nothing written). Validating the first resource of a type loads its model (the
        FHIR model classes are imported and compiled lazily): about 60 ms of CPU, and several
        hundred milliseconds of lag for the first change evaluated on a loaded machine
        (bench/README.md, "gaps5")."""
        if self._warm:
            return
        self._warm = True
        gap = Gap("warm-up", "", "open-gap", "warm-up", ("Encounter/warm-up",))
        sample = detected_issue.build(
            "warm-up", gap, identified=_system_clock(), care_manager="Practitioner/warm-up"
        )
        validate_for_version(sample, self.ctx.fhir_version, expected_type="DetectedIssue")
        to_version(
            self.ctx,
            sample,
            id=sample["id"],
            version=1,
            now=utcnow(),
            method="create",
            rid=None,
        )

    async def evaluate_due(self, finished: list[gap_queue.Claimed] | None = None) -> int:
        """Evaluate one batch of due members; how many (0: none due, or a race to retry).

        Three transactions: the members are leased (committed at once, so that queueing
        them again never waits for this evaluation), evaluated and their DetectedIssues
        written in one REPEATABLE READ transaction, then taken off the queue (unless queued
        again meanwhile). A crash between the last two evaluates them again when the lease
        runs out: evaluating twice writes nothing new.

        A caller that evaluates batch after batch passes `finished`, its own list: the
        members this call evaluates are left in it, and the next call takes them off the
        queue in the transaction that leases its batch (two transactions a batch instead of
        three). A caller that stops with members left in it gives them to `finish`."""
        size = 1 if self._isolating else self.batch
        store, principal = self.ctx.store, self.ctx.principal
        async with store.transaction(principal=principal) as repo:
            if finished:
                await gap_queue.done(repo, finished)
            members = await gap_queue.claim(repo, size, self.lease, sweep=False)
            if not members:
                wanted = self.sweep_batch if size > 1 else 1
                members = await gap_queue.claim(repo, wanted, self.lease, sweep=True)
        if finished:
            finished.clear()  # committed with the lease
        if not members:
            return 0
        ids = [m[0] for m in members]
        try:
            try:
                for attempt in range(3):
                    try:
                        await self._evaluate(members)
                        break
                    except Conflict:
                        # A concurrent write to the same rows (40001): evaluated again.
                        await asyncio.sleep(0.02 * (attempt + 1))
                else:
                    await self._release(ids)
                    return 0
            except ServiceUnavailable:
                raise  # given back below if the database lets us
            except Exception as error:
                if len(members) > 1:
                    log.warning(
                        "care-gap evaluation of %d members failed (%s); retrying them one by one",
                        len(members),
                        type(error).__name__,
                    )
                    self._isolating = len(members)
                    await self._release(ids)
                    return 0
                log.warning(
                    "care-gap evaluation of a member failed (%s); retried later",
                    type(error).__name__,
                )
                async with store.transaction(principal=principal) as repo:
                    await gap_queue.postpone(repo, ids[0], self.retry_after)
                self._isolating = max(self._isolating - 1, 0)
                return 0
        except BaseException:
            # Stopped or failing past the handling above: give the members back at once
            # rather than when the lease runs out (a process killed outright cannot).
            with contextlib.suppress(Exception):
                await self._release(ids)
            raise
        if finished is None:
            await self.finish(members)
        else:
            finished.extend(members)
        if size == 1 and self._isolating:
            self._isolating -= 1
        return len(members)

    async def finish(self, members: Sequence[gap_queue.Claimed]) -> None:
        """Take evaluated members off the queue (unless queued again since they were
        leased)."""
        if members:
            async with self.ctx.store.transaction(principal=self.ctx.principal) as repo:
                await gap_queue.done(repo, members)

    async def _release(self, ids: Sequence[str]) -> None:
        async with self.ctx.store.transaction(principal=self.ctx.principal) as repo:
            await gap_queue.release(repo, ids)

    async def _evaluate(self, members: Sequence[gap_queue.Claimed]) -> None:
        # REPEATABLE READ (in the BEGIN): every read sees one snapshot, and a row changed by
        # another transaction since then cannot be updated (40001, retried).
        async with self.ctx.store.transaction(
            principal=self.ctx.principal, repeatable_read=True
        ) as repo:
            await outbox.mark_origin(repo, ORIGIN)
            read = await read_members(
                repo,
                [m[0] for m in members],
                self.ruleset.compartment_types,
                self.ruleset.shared_types,
            )
            now = self.clock()
            writes: list[dict[str, Any]] = []
            for patient_id, as_of, _ in members:
                # One member parsed at a time, dropped once evaluated.
                with collector_paused():
                    snapshot = read.snapshot(patient_id)
                    writes.extend(evaluate_member(snapshot, as_of or now, self.ruleset))
                    del snapshot
                # The rules are CPU work: let the process's other tasks (the gap feed,
                # another evaluator, requests when in `cmfhir serve`) run between members.
                await asyncio.sleep(0)
            self.evaluations += len(members)
            await self._write(repo, writes)

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

    async def drain(self, concurrency: int = 1) -> int:
        """Evaluate queued members until none is due (`cmfhir gaps sweep`, tests), with
        `concurrency` batches at a time (one's rules run while another waits for the
        database)."""
        self.warm_up()

        async def loop() -> int:
            total = 0
            finished: list[gap_queue.Claimed] = []
            idle = _IDLE_FIRST
            while True:
                try:
                    count = await self.evaluate_due(finished)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await self.finish(finished)
                    raise
                total += count
                if count:
                    idle = _IDLE_FIRST
                    continue
                async with self.ctx.store.transaction(
                    read_only=True, principal=self.ctx.principal
                ) as repo:
                    _, due = await gap_queue.queued(repo)
                if not due:
                    return total
                # Leased by another evaluator (another process of the sweep, a server's),
                # or a race to retry: look again soon, then less and less often, so that
                # waiting for another process's last batches costs next to no CPU.
                await asyncio.sleep(idle)
                idle = min(idle * 2, _IDLE_LAST)

        return sum(await asyncio.gather(*(loop() for _ in range(max(concurrency, 1)))))


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
        # Members evaluated, taken off the queue with the next lease (GapEngine.evaluate_due).
        finished: list[gap_queue.Claimed] = []
        self.engine.warm_up()
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    if await self.engine.evaluate_due(finished):
                        continue
                except FhirError as error:
                    log.warning("%s: %s; retrying", self.name, type(error).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(either(self._wake, stop), self._poll)
        finally:
            # Stopping: what is left goes off the queue now (else evaluated again when its
            # lease runs out, which writes nothing new).
            with contextlib.suppress(Exception):
                await self.engine.finish(finished)

"""The audit trail: an `AuditEvent` (https://hl7.org/fhir/R4/auditevent.html) for every
interaction that touches a member's data, one per member concerned, so each member finds
the events about their own record with `AuditEvent?patient=` under their own token.

Writes are audited in their own database transaction (`audited`): the AuditEvents of what a
transaction writes commit with it or not at all, so a crash never loses who made a committed
change. Reads cost a request nothing but an append to an in-memory buffer (`AuditTrail`),
written every `interval` seconds (and when the server stops) in one transaction, as the
server itself: a crash (kill -9, power loss) loses the read events of the last `interval`
seconds that were not yet written; a clean stop loses none (docs/security.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cmfhir.auth.principal import TRUSTED, Principal
from cmfhir.interactions.audit_index import audit_version, registry_known
from cmfhir.interactions.audit_rows import AuditRows
from cmfhir.interactions.audit_shape import (
    ENTITIES_PER_EVENT,
    SUBTYPES,
    AuditRecord,
    audit_event,
)
from cmfhir.interactions.context import FhirContext, instant, utcnow
from cmfhir.interactions.versions import new_id, to_version
from cmfhir.resources.fhir_versions import DEFAULT_VERSION
from cmfhir.store import NewVersion, Repository
from cmfhir.store.audit_log import EventRow, append_events, append_events_in, event_row

__all__ = [
    "SINGLE_WRITES",
    "SUBTYPES",
    "AuditRecord",
    "AuditRequest",
    "AuditSubject",
    "AuditTrail",
    "audit_event",
    "audited",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AuditSubject:
    """What an authorization-server endpoint learned that its AuditEvent names: the user
    and the patient in context of the login, launch or token concerned, and its client."""

    fhir_user: str | None = None
    patient: str | None = None
    client_id: str | None = None


# The interactions that write one resource: their AuditEvent is the one their transaction
# writes, and no other is made for them.
SINGLE_WRITES = frozenset(
    {"create", "update", "update-conditional", "patch", "delete", "delete-conditional"}
)
_VERSION_ACTIONS = {"create": "create", "update": "update", "delete": "delete"}
# AuditEvents built between two yields to the event loop when the buffer is written
# (through the generic indexer; as rows): a search's record gives one per member, up to
# 200, so the slices count events, not records.
_SLICE = 32
_ROWS_SLICE = 64


@dataclass(slots=True)
class AuditRequest:
    """What routes/ knows of a request that may write, passed down to the interactions:
    the interaction it asks for, the query, where it came from, its request id, and the
    X-Provenance to store with what it writes. `written` counts the AuditEvents written in
    the request's transactions (committed, unless the request failed)."""

    interaction: str
    query: str | None = None
    address: str | None = None
    request_id: str | None = None
    provenance: dict[str, Any] | None = None
    written: int = 0


def audited(ctx: FhirContext, request: AuditRequest) -> FhirContext:
    """`ctx` whose write transactions each record, before they commit, the AuditEvents of
    what they wrote (one per member and action) and the request's X-Provenance."""
    server = replace(ctx, principal=TRUSTED, fhir_version=DEFAULT_VERSION)

    async def record(repo: Repository) -> None:
        events, provenance = _write_events(server, ctx.principal, request, repo.journal)
        await append_events_in(repo, [event_row(v) for v in events])
        await repo.write(provenance, as_server=True)
        request.written += len(events) + len(provenance)

    return replace(ctx, store=ctx.store.with_before_commit(record))


def _write_events(
    ctx: FhirContext, principal: Principal, request: AuditRequest, journal: list[NewVersion]
) -> tuple[list[NewVersion], list[NewVersion]]:
    """The AuditEvents of what a transaction wrote, and the Provenance of its X-Provenance
    (none without one)."""
    single = request.interaction in SINGLE_WRITES
    groups: dict[tuple[str | None, str], list[str]] = {}
    for v in journal:
        interaction = request.interaction if single else _VERSION_ACTIONS.get(v.method, "update")
        target = f"{v.resource_type}/{v.id}/_history/{v.version}"
        groups.setdefault((v.patient_id, interaction), []).append(target)
    now = utcnow()
    versions: list[NewVersion] = []
    for (member, interaction), targets in groups.items():
        for start in range(0, len(targets), ENTITIES_PER_EVENT):
            record = AuditRecord(
                interaction=interaction,
                status=200,
                principal=principal,
                resources=tuple(targets[start : start + ENTITIES_PER_EVENT]),
                query=request.query,
                address=request.address,
                request_id=request.request_id,
                within=None if single else request.interaction,
            )
            versions.append(
                audit_version(
                    ctx.registry, ctx.compartment, audit_event(record, member), id=new_id(), now=now
                )
            )
    if request.provenance is None or not single:
        return versions, []
    targets = [f"{v.resource_type}/{v.id}/_history/{v.version}" for v in journal]
    provenance = {
        "recorded": instant(now),
        **request.provenance,
        "target": [{"reference": t} for t in targets],
    }
    made = to_version(ctx, provenance, id=new_id(), version=1, now=now, method="create", rid=None)
    return versions, [made[0]]


@dataclass(slots=True)
class AuditTrail:
    """The buffer and the writer that empties it (a worker: `run(stop)`): every `interval`
    seconds, or as soon as `batch` events wait, whichever comes first, and once more when
    it stops. Events, not records, are counted: a search's record is one event per member
    it found (up to 200), and a batch is written while the process serves requests."""

    context: FhirContext
    interval: float = 1.0
    max_buffer: int = 100_000
    batch: int = 1000
    name: str = "audit"
    _buffer: list[AuditRecord] = field(default_factory=list)
    _events: int = 0  # the events the buffer's records give
    _dropped: int = 0
    _full: asyncio.Event = field(default_factory=asyncio.Event)
    _rows: AuditRows = field(default_factory=AuditRows)

    def record(self, record: AuditRecord) -> None:
        if self._events >= self.max_buffer:
            # The database is not keeping up (or is down): say so rather than grow without
            # bound. Never expected in normal operation.
            self._dropped += 1
            if self._dropped % 1000 == 1:
                log.error("audit buffer full: %d audit records dropped", self._dropped)
            return
        self._buffer.append(record)
        self._events += len(record.members) or 1
        if self._events >= self.batch:
            self._full.set()

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                full = asyncio.ensure_future(self._full.wait())
                await asyncio.wait(
                    {stopping, full}, timeout=self.interval, return_when="FIRST_COMPLETED"
                )
                full.cancel()
                self._full.clear()
                await self.flush()
        finally:
            stopping.cancel()

    async def flush(self) -> int:
        records, self._buffer = self._buffer, []
        events, self._events = self._events, 0
        if not records:
            return 0
        try:
            await self._write(records)
        except Exception:
            # Kept for the next round: a database outage delays the trail, it does not lose it.
            log.exception("audit events could not be written; retrying")
            self._buffer[:0] = records
            self._events += events
            return 0
        return len(records)

    def versions(self, records: Iterable[AuditRecord]) -> list[NewVersion]:
        """The AuditEvents of `records`, one per member concerned, ready to store."""
        ctx = self.context
        now = utcnow()
        return [
            audit_version(
                ctx.registry, ctx.compartment, audit_event(record, member), id=new_id(), now=now
            )
            for record in records
            for member in record.members or (None,)
        ]

    def rows(self, records: Sequence[AuditRecord]) -> list[EventRow]:
        """The AuditEvents of `records` as `versions` makes them, built as rows straight
        from the records (interactions/audit_rows.py)."""
        return self._rows.rows(records, utcnow())

    async def _write(self, records: Sequence[AuditRecord]) -> None:
        # Built a slice at a time, letting the requests this process serves run between
        # slices: a whole batch at once would stall every request waiting on this event
        # loop for as long (1,000 events: ~25 ms as rows, ~100 ms through the generic
        # indexer). Written in one statement (store/audit_log.py): no access or reference
        # checks (the trail names what was read, which may be deleted since).
        engine = self.context.store.engine
        now = utcnow()
        rows: list[EventRow] = []
        if registry_known(self.context.registry):
            for part in _slices(records, _ROWS_SLICE):
                rows += self._rows.rows(part, now)
                await asyncio.sleep(0)
        else:
            for part in _slices(records, _SLICE):
                rows += [event_row(v) for v in self.versions(part)]
                await asyncio.sleep(0)
        await append_events(engine, rows)


def _slices(records: Sequence[AuditRecord], events: int) -> Iterable[Sequence[AuditRecord]]:
    """`records` in runs of about `events` events (a record with more stands alone)."""
    start = count = 0
    for n, record in enumerate(records):
        count += len(record.members) or 1
        if count >= events:
            yield records[start : n + 1]
            start, count = n + 1, 0
    if start < len(records):
        yield records[start:]

"""Reading the `event` outbox in a gap-free order, for the consumers that follow it (the
care-gap engine, subscriptions, exports).

Each event carries the id of the transaction that wrote it (`xid`). Events are read in
`(xid, seq)` order and only below the oldest transaction id still running
(`pg_snapshot_xmin(pg_current_snapshot())`): every transaction below it has ended, and
every transaction still to write gets a larger id, so nothing can ever appear behind a
position a consumer has passed. A long transaction holds the reader back until it ends,
never makes it skip. Transaction ids are the cluster's, not the database's: a long
transaction in another database of the same PostgreSQL server holds the reader back too
(give cmfhir its own server, or keep other databases' transactions short). A `seq` order
alone would skip: a transaction that took its `seq` early and commits late lands behind
consumers that already moved on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["START", "Event", "EventPosition", "read_ahead", "read_events"]


@dataclass(frozen=True, slots=True, order=True)
class EventPosition:
    """Where a consumer stands: after the event with this transaction id and sequence."""

    xid: int
    seq: int


START = EventPosition(0, 0)


@dataclass(frozen=True, slots=True)
class Event:
    position: EventPosition
    rid: int
    resource_type: str
    id: str
    version: int
    method: str
    # The member the change concerns (for a delete: the one the resource left), and the
    # previous version's member when the change moved the resource away from it.
    patient_id: str | None
    previous_patient_id: str | None
    created_at: datetime
    # The worker that wrote it (store/consumers.py `mark_origin`); None for clients.
    origin: str | None = None


_READ = text(
    """
    SELECT xid, seq, rid, resource_type, id, version, method, patient_id,
           previous_patient_id, created_at, origin
    FROM event
    WHERE (xid, seq) > (:xid, :seq)
      AND xid < (pg_snapshot_xmin(pg_current_snapshot()))::text::bigint
    ORDER BY xid, seq
    LIMIT :limit
    """
)


# Committed events past the gap-free horizon too (a plain READ COMMITTED read sees only
# committed rows): what a consumer may act on early, if acting twice is harmless.
_READ_AHEAD = text(
    """
    SELECT xid, seq, rid, resource_type, id, version, method, patient_id,
           previous_patient_id, created_at, origin
    FROM event
    WHERE (xid, seq) > (:xid, :seq) AND xid <> ALL(CAST(:skip AS bigint[]))
    ORDER BY xid, seq
    LIMIT :limit
    """
)


async def read_ahead(
    conn: AsyncConnection, after: EventPosition, limit: int, skip: Sequence[int] = ()
) -> list[Event]:
    """Committed events after `after`, including those past the gap-free horizon (an older
    transaction still running may yet add events before them), except those of the
    transactions `skip`: for acting early, never for advancing a position."""
    rows = await conn.execute(
        _READ_AHEAD, {"xid": after.xid, "seq": after.seq, "limit": limit, "skip": list(skip)}
    )
    return _events(rows)


def _events(rows: Any) -> list[Event]:
    return [
        Event(
            position=EventPosition(r[0], r[1]),
            rid=r[2],
            resource_type=r[3],
            id=r[4],
            version=r[5],
            method=r[6],
            patient_id=r[7],
            previous_patient_id=r[8],
            created_at=r[9],
            origin=r[10],
        )
        for r in rows
    ]


async def read_events(
    conn: AsyncConnection, after: EventPosition, limit: int
) -> tuple[list[Event], EventPosition]:
    """The next `limit` events after `after`, and the position after the last of them
    (`after` itself when there is none yet). Call it again with that position."""
    rows = await conn.execute(_READ, {"xid": after.xid, "seq": after.seq, "limit": limit})
    events = _events(rows)
    return events, (events[-1].position if events else after)

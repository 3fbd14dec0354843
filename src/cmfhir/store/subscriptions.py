"""Data access for subscription delivery (tables in store/subscription_tables.py), bound to one
open connection like `Repository`: the caller's transaction decides what commits together.

A notification's number is taken from its Subscription's counter in the same transaction
that moves the matcher past the event, so a crash leaves either both or neither: the numbers
of each Subscription stay contiguous through restarts.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    and_,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from cmfhir.store.subscription_tables import (
    subscription_attempt,
    subscription_counter,
    subscription_key,
    subscription_notification,
    subscription_state,
)

__all__ = [
    "Attempt",
    "Claimed",
    "DeliveryState",
    "NewNotification",
    "Notification",
    "Outcome",
    "SubscriptionRows",
]

_STATE_COLUMNS = (
    subscription_state.c.subscription_id,
    subscription_state.c.topic,
    subscription_state.c.channel,
    subscription_state.c.status,
    subscription_state.c.heartbeat_s,
    func.coalesce(subscription_counter.c.events_since_start, 0),
    subscription_state.c.delivered_through,
    subscription_state.c.next_attempt_at,
    subscription_state.c.failing_since,
    subscription_state.c.failures,
    subscription_state.c.last_error,
    subscription_state.c.last_sent_at,
)
_STATE = subscription_state.outerjoin(
    subscription_counter,
    subscription_counter.c.subscription_id == subscription_state.c.subscription_id,
)


@dataclass(frozen=True, slots=True)
class DeliveryState:
    subscription_id: str
    topic: str
    channel: str
    status: str
    heartbeat_s: int | None
    events_since_start: int
    delivered_through: int
    next_attempt_at: datetime | None
    failing_since: datetime | None
    failures: int
    last_error: str | None
    last_sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class Notification:
    event_number: int
    focus_type: str
    focus_id: str
    focus_version: int
    method: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class NewNotification:
    subscription_id: str
    focus_type: str
    focus_id: str
    focus_version: int
    method: str
    occurred_at: datetime


# Numbers the new notifications in one statement: those whose (Subscription, version) has one
# already are left out (a change seen again), each Subscription's counter moves on by as many
# as it gets, and they are numbered after its last number in the order given; the senders are
# NOTIFYed when there is any.
_NUMBER = text(
    """
    WITH made AS (
        SELECT * FROM unnest(
            CAST(:ids AS text[]), CAST(:types AS text[]), CAST(:focus_ids AS text[]),
            CAST(:versions AS integer[]), CAST(:methods AS text[]),
            CAST(:occurred AS timestamptz[])
        ) WITH ORDINALITY
            AS m(subscription_id, focus_type, focus_id, focus_version, method, occurred_at, ord)
    ), fresh AS (
        SELECT m.* FROM made m
        WHERE NOT EXISTS (
            SELECT 1 FROM subscription_notification n
            WHERE n.subscription_id = m.subscription_id AND n.focus_type = m.focus_type
              AND n.focus_id = m.focus_id AND n.focus_version = m.focus_version
        )
    ), counts AS (
        SELECT subscription_id, count(*) AS n FROM fresh GROUP BY subscription_id
    ), counted AS (
        UPDATE subscription_counter c SET events_since_start = c.events_since_start + counts.n
        FROM counts
        WHERE c.subscription_id = counts.subscription_id
        RETURNING c.subscription_id, c.events_since_start - counts.n AS before
    ), added AS (
        INSERT INTO subscription_notification
            (subscription_id, event_number, focus_type, focus_id, focus_version, method,
             occurred_at)
        SELECT f.subscription_id,
               counted.before + row_number() OVER (PARTITION BY f.subscription_id ORDER BY f.ord),
               f.focus_type, f.focus_id, f.focus_version, f.method, f.occurred_at
        FROM fresh f JOIN counted ON counted.subscription_id = f.subscription_id
        RETURNING 1
    ), notified AS (
        SELECT pg_notify(:channel, '') FROM (SELECT 1 FROM added LIMIT 1) AS any_added
    )
    SELECT (SELECT count(*) FROM added), (SELECT count(*) FROM notified)
    """
)

# Leases up to :n Subscriptions with something to send now (`claim`), and returns each one's
# delivery state, its Subscription resource as stored (version and JSON text; none when
# deleted) and its next notifications (at most its limit, in number order).
_CLAIM = text(
    """
    WITH chosen AS (
        SELECT s.subscription_id
        FROM subscription_state s
        LEFT JOIN subscription_counter c ON c.subscription_id = s.subscription_id
        WHERE s.status IN ('requested', 'active')
          AND (s.leased_until IS NULL OR s.leased_until <= :now)
          AND (s.next_attempt_at <= :now
               OR (s.channel = 'rest-hook' AND s.failures = 0
                   AND coalesce(c.events_since_start, 0) > s.delivered_through))
        -- Longest waiting first: since its retry, handshake or heartbeat came due, or,
        -- with notifications waiting, since its last send.
        ORDER BY least(
            s.next_attempt_at,
            CASE WHEN s.channel = 'rest-hook' AND s.failures = 0
                      AND coalesce(c.events_since_start, 0) > s.delivered_through
                 THEN coalesce(s.last_sent_at, '-infinity') END
        ) NULLS FIRST
        LIMIT :n
        FOR UPDATE OF s SKIP LOCKED
    ), leased AS (
        UPDATE subscription_state s SET leased_until = :until
        FROM chosen
        WHERE s.subscription_id = chosen.subscription_id
        RETURNING s.*
    )
    SELECT l.subscription_id, l.topic, l.channel, l.status, l.heartbeat_s,
           coalesce(c.events_since_start, 0), l.delivered_through, l.next_attempt_at,
           l.failing_since, l.failures, l.last_error, l.last_sent_at,
           r.version, CAST(r.content AS text),
           notes.numbers, notes.types, notes.ids, notes.versions, notes.methods, notes.occurred
    FROM leased l
    LEFT JOIN subscription_counter c ON c.subscription_id = l.subscription_id
    LEFT JOIN resource r
        ON r.resource_type = 'Subscription' AND r.id = l.subscription_id AND NOT r.deleted
    LEFT JOIN LATERAL (
        SELECT array_agg(n.event_number ORDER BY n.event_number) AS numbers,
               array_agg(n.focus_type ORDER BY n.event_number) AS types,
               array_agg(n.focus_id ORDER BY n.event_number) AS ids,
               array_agg(n.focus_version ORDER BY n.event_number) AS versions,
               array_agg(n.method ORDER BY n.event_number) AS methods,
               array_agg(n.occurred_at ORDER BY n.event_number) AS occurred
        FROM (
            SELECT * FROM subscription_notification n
            WHERE l.channel = 'rest-hook'
              AND n.subscription_id = l.subscription_id
              AND n.event_number > l.delivered_through
            ORDER BY n.event_number
            LIMIT coalesce(
                (SELECT k.n FROM unnest(CAST(:limit_ids AS text[]), CAST(:limits AS integer[]))
                     AS k(id, n)
                 WHERE k.id = l.subscription_id),
                :per
            )
        ) n
    ) notes ON true
    ORDER BY l.subscription_id
    """
)

# Records the outcome of each step of a round (`record`): the delivery state (unless the
# Subscription's own write changed its status meanwhile: then only what was delivered), the
# lease freed, and an attempt row for each send.
_RECORD = text(
    """
    WITH v AS (
        SELECT * FROM unnest(
            CAST(:ids AS text[]), CAST(:claimed AS text[]), CAST(:statuses AS text[]),
            CAST(:through AS bigint[]), CAST(:next_at AS timestamptz[]),
            CAST(:failing_since AS timestamptz[]), CAST(:failures AS integer[]),
            CAST(:last_errors AS text[]), CAST(:last_sent AS timestamptz[]),
            CAST(:kinds AS text[]), CAST(:attempted_at AS timestamptz[]),
            CAST(:firsts AS bigint[]), CAST(:lasts AS bigint[]), CAST(:outcomes AS text[]),
            CAST(:codes AS integer[]), CAST(:errors AS text[])
        ) WITH ORDINALITY AS v(
            id, claimed, status, through, next_at, failing_since, failures, last_error,
            last_sent, kind, attempted_at, first_event, last_event, outcome, http_status,
            error, ord
        )
    ), recorded AS (
        UPDATE subscription_state s SET
            status = CASE WHEN s.status = coalesce(v.claimed, s.status)
                          THEN v.status ELSE s.status END,
            delivered_through = greatest(s.delivered_through, v.through),
            next_attempt_at = CASE WHEN s.status = coalesce(v.claimed, s.status)
                                   THEN v.next_at ELSE s.next_attempt_at END,
            failing_since = CASE WHEN s.status = coalesce(v.claimed, s.status)
                                 THEN v.failing_since ELSE s.failing_since END,
            failures = CASE WHEN s.status = coalesce(v.claimed, s.status)
                            THEN v.failures ELSE s.failures END,
            last_error = CASE WHEN s.status = coalesce(v.claimed, s.status)
                              THEN v.last_error ELSE s.last_error END,
            last_sent_at = v.last_sent,
            leased_until = NULL
        FROM v
        WHERE s.subscription_id = v.id
    )
    INSERT INTO subscription_attempt
        (subscription_id, attempted_at, kind, first_event, last_event, outcome, http_status,
         error)
    SELECT v.id, v.attempted_at, v.kind, v.first_event, v.last_event, v.outcome,
           v.http_status, v.error
    FROM v
    WHERE v.kind IS NOT NULL
    ORDER BY v.ord
    """
)

_PRUNE_NOTIFICATIONS = text(
    """
    DELETE FROM subscription_notification
    WHERE (subscription_id, event_number) IN (
        SELECT n.subscription_id, n.event_number
        FROM subscription_notification n
        LEFT JOIN subscription_state s ON s.subscription_id = n.subscription_id
        WHERE n.occurred_at < :b
          AND (s.subscription_id IS NULL OR s.status = 'off'
               OR n.event_number <= s.delivered_through)
        LIMIT :n
    )
    """
)
_PRUNE_ATTEMPTS = text(
    """
    DELETE FROM subscription_attempt
    WHERE id IN (SELECT id FROM subscription_attempt WHERE attempted_at < :b LIMIT :n)
    """
)


@dataclass(frozen=True, slots=True)
class Attempt:
    attempted_at: datetime
    kind: str
    first_event: int | None
    last_event: int | None
    outcome: str
    http_status: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class Claimed:
    """A Subscription leased by `claim`: its delivery state, its resource as stored (None
    once deleted) and its next notifications."""

    state: DeliveryState
    version: int | None
    content: str | None
    notifications: list[Notification]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a step of the sender leaves behind (`record`): the delivery state to keep and,
    when something was sent, the attempt."""

    subscription_id: str
    status: str
    delivered_through: int
    next_attempt_at: datetime | None
    failing_since: datetime | None
    failures: int
    last_error: str | None
    last_sent_at: datetime | None
    # The status when the step began; None: the outcome stands whatever the status is now.
    claimed_status: str | None
    attempt: Attempt | None = None


_CONTENTS = text(
    """
    SELECT h.rid, h.version, CAST(h.content AS text)
    FROM resource_history h
    JOIN unnest(CAST(:rids AS bigint[]), CAST(:versions AS integer[])) AS k(rid, version)
        ON h.rid = k.rid AND h.version = k.version
    WHERE h.content IS NOT NULL
    """
)
_LEASE = text(
    """
    UPDATE subscription_state SET leased_until = :until
    WHERE subscription_id = ANY(CAST(:ids AS text[]))
    """
)
_VERSIONS = text(
    """
    SELECT h.resource_type, h.id, h.version, CAST(h.content AS text)
    FROM resource_history h
    JOIN unnest(CAST(:types AS text[]), CAST(:ids AS text[]), CAST(:versions AS integer[]))
        AS k(resource_type, id, version)
        ON h.resource_type = k.resource_type AND h.id = k.id AND h.version = k.version
    WHERE h.content IS NOT NULL
    """
)


def _state(row: Any) -> DeliveryState:
    return DeliveryState(*row)


class SubscriptionRows:
    """The subscription tables, read and written on one connection."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    # -- the sealing key ----------------------------------------------------------------------

    async def sealing_key(self) -> bytes:
        """The key stored in the database, made on first use (racing makers agree on one)."""
        made = base64.urlsafe_b64encode(os.urandom(32)).decode()
        await self.conn.execute(
            pg_insert(subscription_key).values(id=1, key=made).on_conflict_do_nothing()
        )
        stored = (
            await self.conn.execute(
                select(subscription_key.c.key).where(subscription_key.c.id == 1)
            )
        ).scalar_one()
        return str(stored).encode()

    # -- delivery state -----------------------------------------------------------------------

    async def states(self) -> list[DeliveryState]:
        rows = await self.conn.execute(select(*_STATE_COLUMNS).select_from(_STATE))
        return [_state(r) for r in rows]

    async def state(self, subscription_id: str, *, lock: bool = False) -> DeliveryState | None:
        query = (
            select(*_STATE_COLUMNS)
            .select_from(_STATE)
            .where(subscription_state.c.subscription_id == subscription_id)
        )
        if lock:
            query = query.with_for_update(of=subscription_state)
        row = (await self.conn.execute(query)).first()
        return None if row is None else _state(row)

    async def sync(
        self,
        subscription_id: str,
        *,
        topic: str,
        channel: str,
        status: str,
        heartbeat_s: int | None,
        now: datetime,
    ) -> None:
        """The state row made or brought in line with the Subscription as stored. A status
        of `requested` makes the sender's next step due now (a handshake)."""
        due = now if status == "requested" else None
        statement = pg_insert(subscription_state).values(
            subscription_id=subscription_id,
            topic=topic,
            channel=channel,
            status=status,
            heartbeat_s=heartbeat_s,
            next_attempt_at=due,
        )
        excluded = statement.excluded
        changed = subscription_state.c.status != excluded.status
        await self.conn.execute(
            statement.on_conflict_do_update(
                index_elements=[subscription_state.c.subscription_id],
                set_={
                    "topic": excluded.topic,
                    "channel": excluded.channel,
                    "heartbeat_s": excluded.heartbeat_s,
                    "status": excluded.status,
                    # A new request starts the retries afresh.
                    "next_attempt_at": func.coalesce(
                        excluded.next_attempt_at, subscription_state.c.next_attempt_at
                    ),
                    "failures": text(
                        "CASE WHEN excluded.status = 'requested' THEN 0 "
                        "ELSE subscription_state.failures END"
                    ),
                    "failing_since": text(
                        "CASE WHEN excluded.status = 'requested' THEN NULL "
                        "ELSE subscription_state.failing_since END"
                    ),
                },
                where=changed | (excluded.status == "requested"),
            )
        )
        await self.conn.execute(
            pg_insert(subscription_counter)
            .values(subscription_id=subscription_id)
            .on_conflict_do_nothing()
        )
        # Unchanged status: only the settings that are not delivery state follow the resource.
        await self.conn.execute(
            update(subscription_state)
            .where(subscription_state.c.subscription_id == subscription_id)
            .values(topic=topic, channel=channel, heartbeat_s=heartbeat_s)
        )

    async def set_status(self, subscription_id: str, status: str) -> None:
        await self.conn.execute(
            update(subscription_state)
            .where(subscription_state.c.subscription_id == subscription_id)
            .values(status=status)
        )

    async def add_notifications(self, made: Sequence[NewNotification], channel: str) -> int:
        """Number the new notifications in one statement, each Subscription's in the order
        given, after its last number, leaving out any whose (Subscription, version) has a
        number already (a change seen again: read ahead, or before a restart) and those of
        Subscriptions gone; NOTIFY `channel` when any was numbered. How many were."""
        if not made:
            return 0
        row = (
            await self.conn.execute(
                _NUMBER,
                {
                    "ids": [m.subscription_id for m in made],
                    "types": [m.focus_type for m in made],
                    "focus_ids": [m.focus_id for m in made],
                    "versions": [m.focus_version for m in made],
                    "methods": [m.method for m in made],
                    "occurred": [m.occurred_at for m in made],
                    "channel": channel,
                },
            )
        ).one()
        return int(row[0])

    async def contents(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], str]:
        """Versions' content (JSON text) by (rid, version), deleted ones left out."""
        wanted = sorted(set(keys))
        rows = await self.conn.execute(
            _CONTENTS, {"rids": [k[0] for k in wanted], "versions": [k[1] for k in wanted]}
        )
        return {(r[0], r[1]): r[2] for r in rows}

    async def claim(
        self,
        now: datetime,
        lease_until: datetime,
        limit: int,
        *,
        per_subscription: int,
        limits: Mapping[str, int] | None = None,
    ) -> list[Claimed]:
        """Lease up to `limit` Subscriptions with something to send now, until `lease_until`
        (or until `record` frees them), in one statement: other senders skip them, so a
        Subscription's notifications go out one batch at a time and in order, and the lease
        commits with the caller's (short) transaction, so none stays open across the sends.
        A sender that dies leaves its leases to run out. Due: a handshake, retry or
        heartbeat whose time has come, or (rest-hook, unless failing) notifications past
        those delivered; with each, its next notifications (at most `limits[id]`, else
        `per_subscription`). For the server itself (it reads the Subscription resources)."""
        chosen = sorted((limits or {}).items())
        rows = await self.conn.execute(
            _CLAIM,
            {
                "now": now,
                "until": lease_until,
                "n": limit,
                "per": per_subscription,
                "limit_ids": [k for k, _ in chosen],
                "limits": [v for _, v in chosen],
            },
        )
        out = []
        for row in rows:
            numbers = row[14] or []
            notes = (
                [
                    Notification(*fields)
                    for fields in zip(
                        numbers, row[15], row[16], row[17], row[18], row[19], strict=True
                    )
                ]
                if numbers
                else []
            )
            out.append(Claimed(_state(row[:12]), row[12], row[13], notes))
        return out

    async def lease(self, subscription_ids: Sequence[str], until: datetime) -> None:
        """Move the lease `claim` took to `until`: later for a send allowed to take longer,
        now to give it back (a send abandoned)."""
        await self.conn.execute(_LEASE, {"ids": sorted(subscription_ids), "until": until})

    async def record(self, outcomes: Sequence[Outcome]) -> None:
        """Record the outcomes of a round of steps in one statement and free their leases.
        With `claimed_status` (the status when the step began): if the Subscription's own
        write changed the status meanwhile (the matcher follows those), only what was
        delivered is recorded, so that the owner's change decides what happens next."""
        if not outcomes:
            return
        assert len({o.subscription_id for o in outcomes}) == len(outcomes), "one per lease"

        def attempt(field: str) -> list[Any]:
            return [getattr(o.attempt, field) if o.attempt else None for o in outcomes]

        await self.conn.execute(
            _RECORD,
            {
                "ids": [o.subscription_id for o in outcomes],
                "claimed": [o.claimed_status for o in outcomes],
                "statuses": [o.status for o in outcomes],
                "through": [o.delivered_through for o in outcomes],
                "next_at": [o.next_attempt_at for o in outcomes],
                "failing_since": [o.failing_since for o in outcomes],
                "failures": [o.failures for o in outcomes],
                "last_errors": [o.last_error for o in outcomes],
                "last_sent": [o.last_sent_at for o in outcomes],
                "kinds": attempt("kind"),
                "attempted_at": attempt("attempted_at"),
                "firsts": attempt("first_event"),
                "lasts": attempt("last_event"),
                "outcomes": attempt("outcome"),
                "codes": attempt("http_status"),
                "errors": attempt("error"),
            },
        )

    # -- notifications and attempts -----------------------------------------------------------

    async def notifications(
        self, subscription_id: str, first: int, last: int | None, limit: int
    ) -> list[Notification]:
        """The Subscription's notifications numbered `first`..`last` (inclusive), in order."""
        conditions = [
            subscription_notification.c.subscription_id == subscription_id,
            subscription_notification.c.event_number >= first,
        ]
        if last is not None:
            conditions.append(subscription_notification.c.event_number <= last)
        rows = await self.conn.execute(
            select(
                subscription_notification.c.event_number,
                subscription_notification.c.focus_type,
                subscription_notification.c.focus_id,
                subscription_notification.c.focus_version,
                subscription_notification.c.method,
                subscription_notification.c.occurred_at,
            )
            .where(and_(*conditions))
            .order_by(subscription_notification.c.event_number)
            .limit(limit)
        )
        return [Notification(*r) for r in rows]

    async def version_contents(
        self, keys: Sequence[tuple[str, str, int]]
    ) -> dict[tuple[str, str, int], str]:
        """Versions' content (JSON text) by (type, id, version), deleted ones left out: one
        query for all."""
        if not keys:
            return {}
        wanted = sorted(set(keys))
        rows = await self.conn.execute(
            _VERSIONS,
            {
                "types": [k[0] for k in wanted],
                "ids": [k[1] for k in wanted],
                "versions": [k[2] for k in wanted],
            },
        )
        return {(r[0], r[1], r[2]): r[3] for r in rows}

    async def attempts(self, subscription_id: str) -> list[Attempt]:
        rows = await self.conn.execute(
            select(
                subscription_attempt.c.attempted_at,
                subscription_attempt.c.kind,
                subscription_attempt.c.first_event,
                subscription_attempt.c.last_event,
                subscription_attempt.c.outcome,
                subscription_attempt.c.http_status,
                subscription_attempt.c.error,
            )
            .where(subscription_attempt.c.subscription_id == subscription_id)
            .order_by(subscription_attempt.c.id)
        )
        return [Attempt(*r) for r in rows]

    async def prune(self, before: datetime, limit: int) -> tuple[int, int]:
        """Delete up to `limit` notifications from before `before` that were delivered (or
        whose Subscription is off or gone), and up to `limit` attempts from before it; how
        many of each. Numbers are not reused: a Subscription's counter stays."""
        notifications = await self.conn.execute(_PRUNE_NOTIFICATIONS, {"b": before, "n": limit})
        attempts = await self.conn.execute(_PRUNE_ATTEMPTS, {"b": before, "n": limit})
        return int(notifications.rowcount), int(attempts.rowcount)

    async def mark_sent(self, subscription_id: str, through: int, now: datetime) -> None:
        """What a websocket connection sent: delivered through `through`."""
        await self.conn.execute(
            update(subscription_state)
            .where(subscription_state.c.subscription_id == subscription_id)
            .values(
                delivered_through=func.greatest(subscription_state.c.delivered_through, through),
                last_sent_at=now,
            )
        )

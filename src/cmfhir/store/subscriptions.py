"""Data access for subscription delivery (tables in store/subscription_tables.py), bound to one
open connection like `Repository`: the caller's transaction decides what commits together.

A notification's number is taken from its Subscription's counter in the same transaction
that moves the matcher past the event, so a crash leaves either both or neither: the numbers
of each Subscription stay contiguous through restarts.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Text,
    and_,
    case,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from cmfhir.store.schema import resource_history
from cmfhir.store.subscription_tables import (
    subscription_attempt,
    subscription_counter,
    subscription_key,
    subscription_notification,
    subscription_state,
)

__all__ = ["Attempt", "DeliveryState", "NewNotification", "Notification", "SubscriptionRows"]

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


_COUNT = text(
    """
    UPDATE subscription_counter AS c
    SET events_since_start = c.events_since_start + v.n
    FROM unnest(CAST(:ids AS text[]), CAST(:ns AS bigint[])) AS v(id, n)
    WHERE c.subscription_id = v.id
    RETURNING c.subscription_id, c.events_since_start
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

    async def add_notifications(self, made: Sequence[NewNotification]) -> None:
        """Number the new notifications, each Subscription's in the order given, after its
        last number: one statement for the counters, one for the rows."""
        counts: dict[str, int] = {}
        for item in made:
            counts[item.subscription_id] = counts.get(item.subscription_id, 0) + 1
        ids = sorted(counts)
        counted = await self.conn.execute(_COUNT, {"ids": ids, "ns": [counts[i] for i in ids]})
        lasts: dict[str, int] = {str(r[0]): int(r[1]) for r in counted}
        next_number = {i: lasts[i] - counts[i] + 1 for i in ids if i in lasts}
        values = []
        for item in made:
            if item.subscription_id not in next_number:
                continue  # its Subscription is gone
            number = next_number[item.subscription_id]
            next_number[item.subscription_id] = number + 1
            values.append(
                {
                    "subscription_id": item.subscription_id,
                    "event_number": number,
                    "focus_type": item.focus_type,
                    "focus_id": item.focus_id,
                    "focus_version": item.focus_version,
                    "method": item.method,
                    "occurred_at": item.occurred_at,
                }
            )
        if values:
            await self.conn.execute(insert(subscription_notification).values(values))

    async def numbered(self, made: Sequence[NewNotification]) -> set[tuple[str, str, str, int]]:
        """Which of these (Subscription, focus version) pairs already have a notification:
        a change the matcher saw before (read ahead, or before a restart)."""
        if not made:
            return set()
        n = subscription_notification.c
        keys = sorted(
            {(m.subscription_id, m.focus_type, m.focus_id, m.focus_version) for m in made}
        )
        rows = await self.conn.execute(
            select(n.subscription_id, n.focus_type, n.focus_id, n.focus_version).where(
                tuple_(n.subscription_id, n.focus_type, n.focus_id, n.focus_version).in_(keys)
            )
        )
        return {(r[0], r[1], r[2], r[3]) for r in rows}

    async def contents(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], str]:
        """Versions' content (JSON text) by (rid, version), deleted ones left out."""
        rows = await self.conn.execute(
            select(
                resource_history.c.rid,
                resource_history.c.version,
                cast(resource_history.c.content, Text),
            ).where(
                tuple_(resource_history.c.rid, resource_history.c.version).in_(list(set(keys))),
                resource_history.c.content.is_not(None),
            )
        )
        return {(r[0], r[1]): r[2] for r in rows}

    async def claim_due(
        self, now: datetime, channel: str, lease_until: datetime
    ) -> DeliveryState | None:
        """Lease one Subscription with something to send now until `lease_until` (or until
        `after_attempt` frees it): other senders skip it, so its notifications go out one
        batch at a time and in order, and the lease commits at once, so no transaction
        stays open across the send. A sender that dies leaves its lease to run out. Due: a
        handshake, retry or heartbeat whose time has come, or (unless failing)
        notifications past those delivered."""
        state = subscription_state.c
        pending = subscription_counter.c.events_since_start > state.delivered_through
        chosen = (
            select(state.subscription_id)
            .select_from(_STATE)
            .where(
                state.channel == channel,
                state.status.in_(("requested", "active")),
                or_(state.leased_until.is_(None), state.leased_until <= now),
                or_(state.next_attempt_at <= now, and_(state.failures == 0, pending)),
            )
            .order_by(state.next_attempt_at.nulls_first())
            .limit(1)
            .with_for_update(of=subscription_state, skip_locked=True)
            .scalar_subquery()
        )
        leased = (
            await self.conn.execute(
                update(subscription_state)
                .where(state.subscription_id == chosen)
                .values(leased_until=lease_until)
                .returning(state.subscription_id)
            )
        ).first()
        if leased is None:
            return None
        return await self.state(str(leased[0]))

    async def lease(self, subscription_id: str, until: datetime) -> None:
        """Extend the lease `claim_due` took (a send allowed to take longer)."""
        await self.conn.execute(
            update(subscription_state)
            .where(subscription_state.c.subscription_id == subscription_id)
            .values(leased_until=until)
        )

    async def after_attempt(
        self,
        subscription_id: str,
        *,
        status: str,
        delivered_through: int,
        next_attempt_at: datetime | None,
        failing_since: datetime | None,
        failures: int,
        last_error: str | None,
        last_sent_at: datetime | None,
        claimed_status: str | None = None,
    ) -> None:
        """Record a step's outcome and free the lease. With `claimed_status` (the status
        when the step began): if the Subscription's own write changed the status meanwhile
        (the matcher follows those), only what was delivered is recorded, so that the
        owner's change decides what happens next."""
        c = subscription_state.c
        same = c.status == (claimed_status or c.status)

        def unless_changed(value: Any, column: Any) -> Any:
            return case((same, literal(value, column.type)), else_=column)

        await self.conn.execute(
            update(subscription_state)
            .where(c.subscription_id == subscription_id)
            .values(
                status=unless_changed(status, c.status),
                delivered_through=func.greatest(c.delivered_through, delivered_through),
                next_attempt_at=unless_changed(next_attempt_at, c.next_attempt_at),
                failing_since=unless_changed(failing_since, c.failing_since),
                failures=unless_changed(failures, c.failures),
                last_error=unless_changed(last_error, c.last_error),
                last_sent_at=last_sent_at,
                leased_until=None,
            )
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

    async def record_attempt(
        self,
        subscription_id: str,
        *,
        attempted_at: datetime,
        kind: str,
        first_event: int | None,
        last_event: int | None,
        outcome: str,
        http_status: int | None,
        error: str | None,
    ) -> None:
        await self.conn.execute(
            insert(subscription_attempt).values(
                subscription_id=subscription_id,
                attempted_at=attempted_at,
                kind=kind,
                first_event=first_event,
                last_event=last_event,
                outcome=outcome,
                http_status=http_status,
                error=error,
            )
        )

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

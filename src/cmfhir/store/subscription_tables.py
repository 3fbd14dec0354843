"""The tables of topic-based subscription delivery (subscriptions/, docs/subscriptions.md):
each Subscription's delivery state, its numbered notifications, every delivery attempt, and
the key that seals channel headers (the matcher's position is a consumer's: store/consumers.py)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    PrimaryKeyConstraint,
    Table,
    Text,
    text,
)

from cmfhir.store.schema import metadata

__all__ = [
    "subscription_attempt",
    "subscription_counter",
    "subscription_key",
    "subscription_notification",
    "subscription_state",
]

TS = DateTime(timezone=True)

# One row per Subscription the matcher has seen, the sender's: a sender holds it locked
# (FOR UPDATE) while it sends, so a Subscription's batches go out one at a time and in order,
# and a sender that dies frees it with its connection. `delivered_through` is the last
# notification its endpoint acknowledged; `next_attempt_at` when a handshake, retry or
# heartbeat is due (notifications past `delivered_through` are due at once unless failing).
subscription_state = Table(
    "subscription_state",
    metadata,
    Column("subscription_id", Text, primary_key=True),
    Column("topic", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("heartbeat_s", Integer),
    Column("delivered_through", BigInteger, nullable=False, server_default=text("0")),
    Column("next_attempt_at", TS),
    Column("failing_since", TS),
    Column("failures", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
    Column("last_sent_at", TS),
    Column("created_at", TS, nullable=False, server_default=text("now()")),
    # Until when a sender has it (a send in progress); expired, another sender may take it.
    Column("leased_until", TS),
    Index(None, "next_attempt_at"),
)

# The matcher's: the number of the last notification made for each Subscription (apart
# from subscription_state, so numbering never waits for a send in progress).
subscription_counter = Table(
    "subscription_counter",
    metadata,
    Column("subscription_id", Text, primary_key=True),
    Column("events_since_start", BigInteger, nullable=False, server_default=text("0")),
)

# The notifications of each Subscription, numbered without gaps from 1.
subscription_notification = Table(
    "subscription_notification",
    metadata,
    Column("subscription_id", Text, nullable=False),
    Column("event_number", BigInteger, nullable=False),
    Column("focus_type", Text, nullable=False),
    Column("focus_id", Text, nullable=False),
    Column("focus_version", Integer, nullable=False),
    Column("method", Text, nullable=False),
    Column("occurred_at", TS, nullable=False),
    PrimaryKeyConstraint("subscription_id", "event_number"),
    # A change numbered once per Subscription, however often the matcher sees it.
    Index(
        "ix_subscription_notification_focus",
        "subscription_id",
        "focus_type",
        "focus_id",
        "focus_version",
    ),
)

# Every attempt to send something to a rest-hook endpoint, delivered or not.
subscription_attempt = Table(
    "subscription_attempt",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("subscription_id", Text, nullable=False),
    Column("attempted_at", TS, nullable=False),
    Column("kind", Text, nullable=False),
    Column("first_event", BigInteger),
    Column("last_event", BigInteger),
    Column("outcome", Text, nullable=False),
    Column("http_status", Integer),
    Column("error", Text),
    Index(None, "subscription_id", "id"),
    Index(None, "attempted_at"),
)

# The key sealing channel headers when no CMFHIR_SUBSCRIPTION_KEY is set (one row).
subscription_key = Table(
    "subscription_key",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", Text, nullable=False),
)

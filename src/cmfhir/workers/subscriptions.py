"""The subscription workers (subscriptions/): the matcher, an outbox consumer woken by every
commit; the sender, woken when the matcher numbered notifications; and the pruner of old
delivered notifications and attempts."""

from __future__ import annotations

from datetime import datetime, timedelta

from cmfhir.interactions.context import FhirContext
from cmfhir.store import Repository, Store, SubscriptionRows, consumers
from cmfhir.subscriptions import SUBSCRIPTION_CHANNEL, SubscriptionMatcher, SubscriptionSender
from cmfhir.subscriptions.matcher import Clock, system_clock
from cmfhir.workers.outbox import OutboxConsumer
from cmfhir.workers.runtime import Worker
from cmfhir.workers.scheduled import Pruner

__all__ = ["notification_pruner", "prune_notifications", "subscription_workers"]


async def prune_notifications(repo: Repository, before: datetime, limit: int) -> tuple[int, int]:
    """The subscription pruner's step: up to `limit` notifications from before `before`
    that were delivered (or whose Subscription is off or gone), and up to `limit` delivery
    attempts from before it (docs/subscriptions.md, "Tables")."""
    return await SubscriptionRows(repo.conn).prune(before, limit)


def notification_pruner(
    store: Store,
    retention: timedelta,
    *,
    clock: Clock = system_clock,
    every: float = 3600.0,
    batch: int = 10_000,
) -> Pruner[tuple[int, ...]]:
    """The `subscriptions:pruner` worker: counts are (notifications, attempts)."""
    return Pruner(
        store,
        retention,
        prune_notifications,
        name="subscriptions:pruner",
        clock=clock,
        every=every,
        batch=batch,
    )


def subscription_workers(
    ctx: FhirContext,
    listener: consumers.Listener,
    *,
    clock: Clock = system_clock,
    retention: timedelta = timedelta(days=30),
) -> list[Worker]:
    if ctx.subscriptions is None:
        return []
    matcher = SubscriptionMatcher(ctx, ctx.subscriptions, clock=clock)
    return [
        OutboxConsumer(ctx.store, matcher, listener.subscribe(consumers.EVENT_CHANNEL), poll=0.5),
        SubscriptionSender(
            ctx, ctx.subscriptions, listener.subscribe(SUBSCRIPTION_CHANNEL), clock=clock
        ),
        notification_pruner(ctx.store, retention, clock=clock),
    ]

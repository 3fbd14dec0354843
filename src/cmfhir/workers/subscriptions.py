"""The subscription workers (subscriptions/): the matcher, an outbox consumer woken by every
commit; the sender, woken when the matcher numbered notifications; and the pruner of old
delivered notifications and attempts."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from cmfhir.auth.principal import TRUSTED
from cmfhir.errors import FhirError
from cmfhir.interactions.context import FhirContext
from cmfhir.store import Store, SubscriptionRows, consumers
from cmfhir.subscriptions import SUBSCRIPTION_CHANNEL, SubscriptionMatcher, SubscriptionSender
from cmfhir.subscriptions.matcher import Clock, system_clock
from cmfhir.workers.outbox import OutboxConsumer
from cmfhir.workers.runtime import Worker, pause

__all__ = ["NotificationPruner", "subscription_workers"]

log = logging.getLogger(__name__)


class NotificationPruner:
    """Deletes, every `every` seconds, the notifications older than `retention` that were
    delivered (or whose Subscription is off or gone) and the delivery attempts older than
    it (docs/subscriptions.md, "Tables")."""

    def __init__(
        self,
        store: Store,
        retention: timedelta,
        *,
        clock: Clock = system_clock,
        every: float = 3600.0,
        batch: int = 10_000,
    ) -> None:
        self.store = store
        self.retention = retention
        self.clock = clock
        self.every = every
        self.batch = batch
        self.name = "subscriptions:pruner"

    async def prune(self) -> tuple[int, int]:
        """One pass, in batches: (notifications, attempts) deleted."""
        totals = (0, 0)
        while True:
            async with self.store.transaction(principal=TRUSTED) as repo:
                counts = await SubscriptionRows(repo.conn).prune(
                    self.clock() - self.retention, self.batch
                )
            totals = (totals[0] + counts[0], totals[1] + counts[1])
            if max(counts) < self.batch:
                return totals

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.prune()
            except FhirError as error:
                log.warning("%s: %s; retrying", self.name, type(error).__name__)
            if await pause(stop, self.every):
                return


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
        NotificationPruner(ctx.store, retention, clock=clock),
    ]

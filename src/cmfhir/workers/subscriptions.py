"""The subscription workers (subscriptions/): the matcher, an outbox consumer woken by every
commit, and the sender, woken when the matcher numbered notifications."""

from __future__ import annotations

from cmfhir.interactions.context import FhirContext
from cmfhir.store import consumers
from cmfhir.subscriptions import SUBSCRIPTION_CHANNEL, SubscriptionMatcher, SubscriptionSender
from cmfhir.subscriptions.matcher import Clock, system_clock
from cmfhir.workers.outbox import OutboxConsumer
from cmfhir.workers.runtime import Worker

__all__ = ["subscription_workers"]


def subscription_workers(
    ctx: FhirContext, listener: consumers.Listener, *, clock: Clock = system_clock
) -> list[Worker]:
    if ctx.subscriptions is None:
        return []
    matcher = SubscriptionMatcher(ctx, ctx.subscriptions, clock=clock)
    return [
        OutboxConsumer(ctx.store, matcher, listener.subscribe(consumers.EVENT_CHANNEL), poll=0.5),
        SubscriptionSender(
            ctx, ctx.subscriptions, listener.subscribe(SUBSCRIPTION_CHANNEL), clock=clock
        ),
    ]

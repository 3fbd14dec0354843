"""Topic-based subscriptions (R5 Backport IG): notifications delivered from the outbox."""

from cmfhir.subscriptions.feature import SubscriptionFeature
from cmfhir.subscriptions.matcher import SUBSCRIPTION_CHANNEL, SubscriptionMatcher, system_clock
from cmfhir.subscriptions.sender import SubscriptionSender
from cmfhir.subscriptions.setup import open_subscriptions

__all__ = [
    "SUBSCRIPTION_CHANNEL",
    "SubscriptionFeature",
    "SubscriptionMatcher",
    "SubscriptionSender",
    "open_subscriptions",
    "system_clock",
]

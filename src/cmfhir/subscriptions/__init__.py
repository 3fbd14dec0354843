"""Topic-based subscriptions (R5 Backport IG): notifications delivered from the outbox."""

from cmfhir.subscriptions.delivery import SubscriptionDelivery, system_clock
from cmfhir.subscriptions.feature import SubscriptionFeature
from cmfhir.subscriptions.setup import open_subscriptions

__all__ = ["SubscriptionDelivery", "SubscriptionFeature", "open_subscriptions", "system_clock"]

"""The websocket channel (R5 Backport IG 1.1.0, "Channels: websocket"): a client gets a token
from `$get-ws-binding-token`, connects to the websocket endpoint and sends
`bind-with-token <token>`; it then receives a handshake, the Subscription's notifications
(the same Bundles a rest-hook endpoint receives, from the first not yet sent over a
websocket) and heartbeats. What routes/subscriptions_ws.py drives, without HTTP."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from cmfhir.auth.principal import TRUSTED
from cmfhir.errors import BadRequest
from cmfhir.interactions.context import FhirContext
from cmfhir.store import SubscriptionRows
from cmfhir.subscriptions.events import foci
from cmfhir.subscriptions.feature import Loaded, SubscriptionFeature
from cmfhir.subscriptions.notifications import notification_bundle, status_parameters

__all__ = ["Binding", "WebSocketChannel"]

DEFAULT_HEARTBEAT_S = 60
BATCH = 100


@dataclass(slots=True)
class Binding:
    loaded: Loaded
    sent_through: int
    heartbeat_s: int


class WebSocketChannel:
    def __init__(self, ctx: FhirContext, feature: SubscriptionFeature) -> None:
        self.ctx = replace(ctx, principal=TRUSTED)
        self.feature = feature

    async def bind(self, message: str) -> Binding:
        command, _, token = message.strip().partition(" ")
        if command != "bind-with-token" or not token.strip():
            raise BadRequest("Send 'bind-with-token <token>' first")
        subscription_id = self.feature.sealer.bound_subscription(
            token.strip(), self.feature.token_ttl_s
        )
        if subscription_id is None:
            raise BadRequest("The binding token is not valid or has expired")
        async with self.ctx.store.transaction(read_only=True, principal=TRUSTED) as repo:
            loaded = await self.feature.load(repo, subscription_id)
            state = await SubscriptionRows(repo.conn).state(subscription_id)
        if loaded is None or loaded.config.channel != "websocket" or state is None:
            raise BadRequest("The token's Subscription is not an active websocket Subscription")
        return Binding(
            loaded, state.delivered_through, loaded.config.heartbeat_s or DEFAULT_HEARTBEAT_S
        )

    async def _bundle(self, binding: Binding, kind: str, events: list[Any]) -> dict[str, Any]:
        config = binding.loaded.config
        async with self.ctx.store.transaction(read_only=True, principal=TRUSTED) as repo:
            state = await SubscriptionRows(repo.conn).state(config.id)
        parameters = status_parameters(
            base=self.feature.base,
            subscription_id=config.id,
            topic=config.topic,
            status=state.status if state else config.status,
            kind=kind,
            events_since_start=state.events_since_start if state else 0,
            events=events,
        )
        return notification_bundle(
            parameters,
            base=self.feature.base,
            subscription_id=config.id,
            now=datetime.now(UTC),
            events=events,
            content=config.content,
        )

    async def handshake(self, binding: Binding) -> dict[str, Any]:
        return await self._bundle(binding, "handshake", [])

    async def heartbeat(self, binding: Binding) -> dict[str, Any]:
        return await self._bundle(binding, "heartbeat", [])

    async def next_notification(self, binding: Binding) -> dict[str, Any] | None:
        """The next batch not yet sent, or None."""
        config = binding.loaded.config
        events = await foci(
            self.ctx, binding.loaded, binding.sent_through + 1, None, config.max_count or BATCH
        )
        if not events:
            return None
        bundle = await self._bundle(binding, "event-notification", events)
        binding.sent_through = events[-1].event_number
        return bundle

    async def sent(self, binding: Binding) -> None:
        async with self.ctx.store.transaction(principal=TRUSTED) as repo:
            await SubscriptionRows(repo.conn).mark_sent(
                binding.loaded.config.id, binding.sent_through, datetime.now(UTC)
            )

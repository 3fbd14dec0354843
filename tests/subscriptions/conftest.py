"""Subscription tests: a server of their own (scratch database, loopback endpoints allowed)
whose delivery worker the test drives step by step with a clock it sets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.conftest import RunningServer
from tests.subscriptions.receiver import Receiver

from cmfhir.app import open_context
from cmfhir.config import Settings
from cmfhir.store import SubscriptionRows
from cmfhir.store.subscriptions import Attempt
from cmfhir.subscriptions import SubscriptionMatcher, SubscriptionSender
from cmfhir.workers import OutboxConsumer

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPICS = "https://cmfhir.org/fhir/SubscriptionTopic/"


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def subscription(
    topic: str,
    endpoint: str | None,
    *,
    filters: tuple[str, ...] = (),
    channel: str = "rest-hook",
    content: str = "id-only",
    headers: tuple[str, ...] = (),
    heartbeat_s: int | None = None,
    max_count: int | None = None,
    status: str = "requested",
) -> dict[str, Any]:
    """A Subscription of the backport profile."""
    channel_json: dict[str, Any] = {
        "type": channel,
        "payload": "application/fhir+json",
        "_payload": {
            "extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": content}]
        },
    }
    if endpoint is not None:
        channel_json["endpoint"] = endpoint
    if headers:
        channel_json["header"] = list(headers)
    extensions = []
    if heartbeat_s is not None:
        extensions.append(
            {"url": BACKPORT + "backport-heartbeat-period", "valueUnsignedInt": heartbeat_s}
        )
    if max_count is not None:
        extensions.append({"url": BACKPORT + "backport-max-count", "valuePositiveInt": max_count})
    if extensions:
        channel_json["extension"] = extensions
    out: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"profile": [BACKPORT + "backport-subscription"]},
        "status": status,
        "reason": "test",
        "criteria": TOPICS + topic,
        "channel": channel_json,
    }
    if filters:
        out["_criteria"] = {
            "extension": [
                {"url": BACKPORT + "backport-filter-criteria", "valueString": f} for f in filters
            ]
        }
    return out


@dataclass
class Delivery:
    base: str
    settings: Settings
    matcher: OutboxConsumer
    sender: SubscriptionSender
    clock: FakeClock

    async def attempts(self, subscription_id: str) -> list[Attempt]:
        async with self.sender.ctx.store.transaction(read_only=True) as repo:
            return await SubscriptionRows(repo.conn).attempts(subscription_id)

    async def step(self, rounds: int = 3) -> None:
        """Match and send until nothing more is due (a few rounds)."""
        for _ in range(rounds):
            await self.matcher.drain()
            while await self.sender.send_once():
                pass


@pytest.fixture
def delivery_settings(scratch_database: str) -> Settings:
    return Settings(
        database_url=scratch_database,
        workers=False,
        subscription_allow_loopback=True,
    )


@pytest.fixture
def delivery_base(delivery_settings: Settings) -> Iterator[str]:
    with RunningServer(delivery_settings) as running:
        yield running.base


@pytest.fixture
async def delivery(delivery_settings: Settings, delivery_base: str) -> AsyncIterator[Delivery]:
    clock = FakeClock()
    async with open_context(delivery_settings) as ctx:
        matcher = OutboxConsumer(
            ctx.store, SubscriptionMatcher(ctx, ctx.subscriptions, clock=clock)
        )
        sender = SubscriptionSender(ctx, ctx.subscriptions, clock=clock)
        try:
            yield Delivery(delivery_base, delivery_settings, matcher, sender, clock)
        finally:
            await sender.aclose()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    try:
        yield running
    finally:
        running.stop()

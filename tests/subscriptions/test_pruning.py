"""Retention: delivered notifications and delivery attempts older than the retention period
are pruned; what was not delivered yet is kept, and numbering goes on after a pruning."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import text
from tests.subscriptions.conftest import Delivery, subscription
from tests.subscriptions.fhir import encounter, patient_, subscribe
from tests.subscriptions.receiver import Receiver

from cmfhir.auth.principal import TRUSTED
from cmfhir.workers import notification_pruner


async def _kept(delivery: Delivery, sid: str) -> tuple[list[int], int]:
    async with delivery.sender.ctx.store.transaction(read_only=True, principal=TRUSTED) as repo:
        numbers = await repo.conn.execute(
            text(
                "SELECT event_number FROM subscription_notification "
                "WHERE subscription_id = :s ORDER BY event_number"
            ),
            {"s": sid},
        )
        attempts = await repo.conn.execute(
            text("SELECT count(*) FROM subscription_attempt WHERE subscription_id = :s"),
            {"s": sid},
        )
        return [r[0] for r in numbers], int(attempts.scalar_one())


async def test_old_delivered_notifications_and_attempts_are_pruned(
    delivery: Delivery, receiver: Receiver
) -> None:
    pruner = notification_pruner(
        delivery.sender.ctx.store, timedelta(hours=1), clock=delivery.clock, batch=2
    )
    async with httpx.AsyncClient(base_url=delivery.base) as http:
        patient = await patient_(http)
        sid = await subscribe(http, subscription("encounter-admission-discharge", receiver.url))
        await delivery.step()
        for _ in range(3):
            await encounter(http, patient)
        await delivery.step()
        assert receiver.event_numbers() == [1, 2, 3]
        receiver.stop()
        await encounter(http, patient)  # numbered 4, not delivered: the subscriber is down
        await delivery.step()
        assert await _kept(delivery, sid) == ([1, 2, 3, 4], 3)

        assert await pruner.prune() == (0, 0)  # nothing is older than an hour yet
        delivery.clock.advance(hours=2)
        # Batches of 2: three delivered notifications and three attempts go.
        assert await pruner.prune() == (3, 3)
        assert await _kept(delivery, sid) == ([4], 0)

        receiver.start()
        await delivery.step()
        await encounter(http, patient)
        await delivery.step()
        replay = (await http.get(f"/Subscription/{sid}/$events")).json()
    assert receiver.event_numbers()[-2:] == [4, 5]
    numbers = [
        part["valueString"]
        for p in replay["entry"][0]["resource"]["parameter"]
        if p["name"] == "notification-event"
        for part in p["part"]
        if part["name"] == "event-number"
    ]
    assert numbers == ["4", "5"]  # $events replays what is kept

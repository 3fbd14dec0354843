"""What used to hold notifications back: a change committed beside a long transaction is
numbered at once (the matcher reads ahead), and numbered once however often it is seen
again; the sender holds no transaction open while it sends."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import text
from tests.subscriptions.conftest import Delivery, subscription
from tests.subscriptions.fhir import encounter, patient_, subscribe
from tests.subscriptions.receiver import Receiver

from cmfhir.auth.principal import TRUSTED
from cmfhir.subscriptions import SubscriptionMatcher
from cmfhir.workers import OutboxConsumer


async def test_a_change_beside_a_long_transaction_is_numbered_at_once_and_once(
    delivery: Delivery, receiver: Receiver
) -> None:
    store = delivery.sender.ctx.store
    release = asyncio.Event()
    started = asyncio.Event()

    async def long_transaction() -> None:
        async with store.transaction(principal=TRUSTED) as repo:
            await repo.conn.execute(text("SELECT txid_current()"))  # holds the horizon back
            started.set()
            await release.wait()

    async with httpx.AsyncClient(base_url=delivery.base) as http:
        patient = await patient_(http)
        sid = await subscribe(http, subscription("encounter-admission-discharge", receiver.url))
        await delivery.step()
        holding = asyncio.create_task(long_transaction())
        await started.wait()
        try:
            admitted = await encounter(http, patient)
            await delivery.step()
            # Delivered while the older transaction still runs.
            assert receiver.event_numbers() == [1]
        finally:
            release.set()
            await holding
        await delivery.step()
        # Another process (a matcher of its own) reaching the same change gap-free.
        other = OutboxConsumer(
            store,
            SubscriptionMatcher(delivery.sender.ctx, delivery.sender.feature, clock=delivery.clock),
        )
        await other.drain()
        await delivery.step()
        replay = (await http.get(f"/Subscription/{sid}/$events")).json()
    assert receiver.event_numbers() == [1]
    status = replay["entry"][0]["resource"]["parameter"]
    assert {"name": "events-since-subscription-start", "valueString": "1"} in status
    assert receiver.statuses()[-1]["foci"] == [f"Encounter/{admitted}"]


async def test_no_transaction_stays_open_while_sending(delivery: Delivery) -> None:
    """A slow endpoint: while the sender waits for it, no transaction of the sender's is
    open (one would hold back every outbox reader for as long)."""
    slow = Receiver(delay_s=1.0).start()
    store = delivery.sender.ctx.store
    try:
        async with httpx.AsyncClient(base_url=delivery.base) as http:
            await subscribe(http, subscription("encounter-admission-discharge", slow.url))
            await delivery.matcher.drain()
            sending = asyncio.create_task(delivery.sender.send_once())
            samples: list[int] = []
            while not sending.done() and not slow.bundles:
                async with store.transaction(read_only=True, principal=TRUSTED) as repo:
                    found = await repo.conn.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND backend_xid IS NOT NULL "
                            "AND pid <> pg_backend_pid()"
                        )
                    )
                    samples.append(found.scalar_one())
                await asyncio.sleep(0.05)
            await sending
    finally:
        slow.stop()
    assert [s["type"] for s in slow.statuses()] == ["handshake"]
    # Sampled through the second the endpoint takes: (nearly) always none open. A
    # transaction held across the request would be there in every sample.
    assert len(samples) >= 3 and min(samples) == 0

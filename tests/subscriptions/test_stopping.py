"""The sender asked to stop while an endpoint keeps it waiting: it gives up the send at once
(not when the endpoint answers or the timeout runs out), records no attempt, and gives its
lease back, so that the batch goes out again as soon as a sender runs (at least once)."""

from __future__ import annotations

import asyncio

import httpx
from tests.subscriptions.conftest import Delivery, subscription
from tests.subscriptions.fhir import subscribe
from tests.subscriptions.receiver import Receiver

from cmfhir.store import SubscriptionRows


async def test_a_stopped_sender_abandons_its_send_and_gives_the_lease_back(
    delivery: Delivery, receiver: Receiver
) -> None:
    receiver.hold()
    async with httpx.AsyncClient(base_url=delivery.base) as http:
        sid = await subscribe(http, subscription("encounter-admission-discharge", receiver.url))
    await delivery.matcher.drain()
    stop = asyncio.Event()
    running = asyncio.create_task(delivery.sender.run(stop))
    deadline = asyncio.get_running_loop().time() + 30
    while receiver.arrivals == 0:
        assert asyncio.get_running_loop().time() < deadline, "the handshake never arrived"
        await asyncio.sleep(0.02)

    stop.set()
    # The endpoint still holds the request: only the stop can end the send.
    await asyncio.wait_for(running, 30)
    assert receiver.bundles == []
    assert await delivery.attempts(sid) == []
    async with delivery.sender.ctx.store.transaction(read_only=True) as repo:
        state = await SubscriptionRows(repo.conn).state(sid)
    assert state is not None and state.status == "requested"

    receiver.release()
    await delivery.step()  # the next sender, at once: the lease was given back
    assert [s["type"] for s in receiver.statuses()] == ["handshake"]
    assert receiver.arrivals == 2

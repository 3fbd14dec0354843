"""The sender works in rounds: the database work of a round (one transaction recording the
last sends and leasing the next Subscriptions, with their notifications) is the same for one
notification as for many; an endpoint slow to answer holds back no other Subscription; and a
websocket Subscription that no client is bound to leaves the sender free."""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta
from typing import Any

import httpx
import pytest
from bench.round_trips import round_trips
from tests.subscriptions.conftest import Delivery, subscription
from tests.subscriptions.fhir import encounter, patient_, subscribe
from tests.subscriptions.receiver import Receiver

TOPIC = "encounter-admission-discharge"
MANY = 12


def _admissions(patients: list[str]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Encounter",
                    "status": "in-progress",
                    "class": {"code": "IMP"},
                    "subject": {"reference": f"Patient/{patient}"},
                },
                "request": {"method": "POST", "url": "Encounter"},
            }
            for patient in patients
        ],
    }


async def test_a_round_costs_the_same_round_trips_for_one_notification_or_many(
    delivery: Delivery, receiver: Receiver
) -> None:
    sender = delivery.sender
    sender.round_wait_s = 30  # a round waits for all its sends: one round per batch
    async with httpx.AsyncClient(base_url=delivery.base) as http:
        patients = [await patient_(http) for _ in range(MANY)]
        subscriptions = [
            await subscribe(
                http, subscription(TOPIC, receiver.url, filters=(f"Encounter?patient={p}",))
            )
            for p in patients
        ]
        await delivery.step()
        assert len(receiver.bundles) == MANY  # the handshakes
        trips: dict[int, int] = {}
        for count in (1, MANY):
            answer = await http.post("", json=_admissions(patients[:count]))
            assert answer.status_code == 200, answer.text
            await delivery.matcher.drain()
            async with round_trips(sender.ctx.store.engine) as counted:
                served = await sender.send_once()
            assert served == count
            trips[count] = counted.count
    # Two rounds: the first leases the Subscriptions with their notifications (BEGIN, one
    # statement, COMMIT); the second records every send and finds nothing more due
    # (BEGIN, two statements, COMMIT). Before, it was about ten per notification.
    assert trips[1] == trips[MANY] == 7, trips
    notified = [s for s in receiver.statuses() if s["type"] == "event-notification"]
    assert sorted(n for s in notified for n in s["events"]) == [1] * MANY + [2]
    first = await delivery.attempts(subscriptions[0])
    assert [(a.kind, a.outcome, a.first_event) for a in first] == [
        ("handshake", "delivered", None),
        ("event-notification", "delivered", 1),
        ("event-notification", "delivered", 2),
    ]


async def test_an_endpoint_slow_to_answer_holds_back_no_other_subscription(
    delivery: Delivery, receiver: Receiver
) -> None:
    slow = Receiver().start()
    try:
        async with httpx.AsyncClient(base_url=delivery.base) as http:
            patient = await patient_(http)
            held = await subscribe(http, subscription(TOPIC, slow.url))
            fast = await subscribe(http, subscription(TOPIC, receiver.url))
            await delivery.step()
            slow.hold()
            await encounter(http, patient)
            await delivery.matcher.drain()
            sender = delivery.sender
            sender.round_wait_s = 0.05
            stop = asyncio.Event()
            running = asyncio.create_task(sender.run(stop))
            try:
                deadline = asyncio.get_running_loop().time() + 30
                while [a.kind for a in await delivery.attempts(fast)][-1] != "event-notification":
                    assert asyncio.get_running_loop().time() < deadline, "never recorded"
                    await asyncio.sleep(0.05)
                # Sent and recorded while the other endpoint still holds its request.
                assert slow.arrivals == 2 and len(slow.bundles) == 1
                assert [a.kind for a in await delivery.attempts(held)] == ["handshake"]
            finally:
                stop.set()
                await asyncio.wait_for(running, 30)
            slow.release()
            await delivery.step()  # the abandoned send goes out again
        assert [s["events"] for s in slow.statuses()] == [[], [1]]
        assert [s["events"] for s in receiver.statuses()] == [[], [1]]
    finally:
        slow.stop()


async def test_a_websocket_subscription_with_no_client_leaves_the_sender_free(
    delivery: Delivery, receiver: Receiver
) -> None:
    async with httpx.AsyncClient(base_url=delivery.base) as http:
        patient = await patient_(http)
        await subscribe(http, subscription(TOPIC, None, channel="websocket"))
        await subscribe(http, subscription(TOPIC, receiver.url))
        await delivery.matcher.drain()
        await asyncio.wait_for(delivery.sender.send_once(), 30)
        await encounter(http, patient)
        await delivery.matcher.drain()
        # The websocket Subscription's notification waits for a client to bind: it is not
        # the sender's to send, and does not keep it busy.
        await asyncio.wait_for(delivery.sender.send_once(), 30)
    assert [s["type"] for s in receiver.statuses()] == ["handshake", "event-notification"]


async def test_a_proxy_named_in_the_environment_is_used(
    delivery: Delivery, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender posts straight to its transport, except when the environment names
    proxies: then through a client that applies them (here one that is not there)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nobody = sock.getsockname()[1]
    async with httpx.AsyncClient(base_url=delivery.base) as http:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{nobody}")
        subscribed = await subscribe(http, subscription(TOPIC, receiver.url))
        await delivery.step()
        assert receiver.bundles == []
        assert [(a.kind, a.outcome) for a in await delivery.attempts(subscribed)] == [
            ("handshake", "failed")
        ]
        monkeypatch.delenv("HTTP_PROXY")
        delivery.clock.now += timedelta(seconds=10)  # the retry's time
        await delivery.step()
    assert [s["type"] for s in receiver.statuses()] == ["handshake"]

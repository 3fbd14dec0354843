"""Rest-hook delivery from the outbox, driven step by step with a clock the test sets: the
handshake, notifications after a matching write (and none after a write the filters leave
out), the backlog in order after the subscriber was down for an hour, and `error` after
24 hours of failures, then re-activation."""

from __future__ import annotations

import httpx
from tests.subscriptions.conftest import Delivery, subscription
from tests.subscriptions.fhir import encounter, patient_, subscribe
from tests.subscriptions.receiver import Receiver


async def test_handshake_then_a_notification_after_a_matching_write(
    delivery: Delivery, receiver: Receiver
) -> None:
    async with httpx.AsyncClient(base_url=delivery.base) as http:
        patient, other = await patient_(http), await patient_(http)
        sid = await subscribe(
            http,
            subscription(
                "encounter-admission-discharge",
                receiver.url,
                filters=(f"Encounter?patient=Patient/{patient}",),
                headers=("Authorization: Bearer s3cret",),
            ),
        )
        await delivery.step()
        assert [s["type"] for s in receiver.statuses()] == ["handshake"]
        assert (await http.get(f"/Subscription/{sid}")).json()["status"] == "active"

        await encounter(http, other)  # filtered out: another member
        admitted = await encounter(http, patient)
        await encounter(http, patient, status="planned")  # not an admission
        await delivery.step()

    statuses = receiver.statuses()
    assert [s["type"] for s in statuses] == ["handshake", "event-notification"]
    assert statuses[1]["events"] == [1]
    assert statuses[1]["events-since-subscription-start"] == "1"
    assert statuses[1]["foci"] == [f"Encounter/{admitted}"]
    assert statuses[1]["subscription"] == {"reference": f"Subscription/{sid}"}
    # The sealed header is sent to the endpoint and to nobody else.
    assert receiver.headers[1]["Authorization"] == "Bearer s3cret"


async def test_backlog_in_order_after_the_subscriber_was_down_an_hour(
    delivery: Delivery, receiver: Receiver
) -> None:
    async with httpx.AsyncClient(base_url=delivery.base) as http:
        patient = await patient_(http)
        sid = await subscribe(http, subscription("encounter-admission-discharge", receiver.url))
        await delivery.step()
        receiver.stop()
        encounters = [await encounter(http, patient) for _ in range(5)]
        await delivery.step()
        delivery.clock.advance(hours=1)
        await delivery.step()  # still down: another failure, retried later
        receiver.start()
        delivery.clock.advance(hours=1)
        await delivery.step()
        assert (await http.get(f"/Subscription/{sid}")).json()["status"] == "active"
    # Every attempt is recorded: the handshake, two failures, then the backlog.
    attempts = await delivery.attempts(sid)
    assert [(a.kind, a.outcome) for a in attempts] == [
        ("handshake", "delivered"),
        ("event-notification", "failed"),
        ("event-notification", "failed"),
        ("event-notification", "delivered"),
    ]
    assert (attempts[-1].first_event, attempts[-1].last_event) == (1, 5)
    numbers = receiver.event_numbers()
    assert numbers == [1, 2, 3, 4, 5]
    foci = [f for s in receiver.statuses() for f in s["foci"]]
    assert foci == [f"Encounter/{e}" for e in encounters]


async def test_error_after_a_day_of_failures_then_reactivation(
    delivery: Delivery, receiver: Receiver
) -> None:
    async with httpx.AsyncClient(base_url=delivery.base) as http:
        patient = await patient_(http)
        sid = await subscribe(http, subscription("encounter-admission-discharge", receiver.url))
        await delivery.step()
        receiver.stop()
        await encounter(http, patient)
        await delivery.step()
        delivery.clock.advance(hours=23)
        await delivery.step()
        assert (await http.get(f"/Subscription/{sid}")).json()["status"] == "active"
        delivery.clock.advance(hours=2)
        await delivery.step()
        stored = (await http.get(f"/Subscription/{sid}")).json()
        assert stored["status"] == "error"

        # Re-activation: the owner asks again; handshake, then the backlog.
        receiver.start()
        await encounter(http, patient)
        stored["status"] = "requested"
        assert (await http.put(f"/Subscription/{sid}", json=stored)).status_code == 200
        await delivery.step()
        assert (await http.get(f"/Subscription/{sid}")).json()["status"] == "active"
        status = (await http.get(f"/Subscription/{sid}/$status")).json()
    kinds = [s["type"] for s in receiver.statuses()]
    assert kinds[0] == "handshake" and kinds[-2:] == ["handshake", "event-notification"]
    assert receiver.event_numbers() == [1, 2]
    parameters = status["entry"][0]["resource"]["parameter"]
    assert {"name": "events-since-subscription-start", "valueString": "2"} in parameters


async def test_token_filters_with_and_without_system(
    delivery: Delivery, receiver: Receiver
) -> None:
    act = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    async with httpx.AsyncClient(base_url=delivery.base) as http:
        patient = await patient_(http)
        await subscribe(
            http,
            subscription(
                "encounter-admission-discharge",
                receiver.url,
                filters=(f"Encounter?class={act}|EMER&patient={patient}",),
            ),
        )
        await subscribe(
            http,
            subscription(
                "encounter-admission-discharge",
                receiver.url,
                filters=("Encounter?class=http://example.org/other|EMER",),
            ),
        )
        await encounter(http, patient, class_="IMP")
        emergency = await encounter(http, patient, class_="EMER")
        await delivery.step()
    notified = [s for s in receiver.statuses() if s["type"] == "event-notification"]
    assert [s["foci"] for s in notified] == [[f"Encounter/{emergency}"]]


async def test_heartbeat_after_the_period_without_notifications(
    delivery: Delivery, receiver: Receiver
) -> None:
    async with httpx.AsyncClient(base_url=delivery.base) as http:
        await subscribe(http, subscription("communication-recorded", receiver.url, heartbeat_s=60))
        await delivery.step()
        delivery.clock.advance(seconds=30)
        await delivery.step()
        assert [s["type"] for s in receiver.statuses()] == ["handshake"]
        delivery.clock.advance(seconds=31)
        await delivery.step()
    statuses = receiver.statuses()
    assert [s["type"] for s in statuses] == ["handshake", "heartbeat"]
    assert statuses[1]["status"] == "active"
    assert statuses[1]["events"] == []

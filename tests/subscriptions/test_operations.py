"""`$events` replays a range of event numbers, `$status` reports where delivery stands, and
the websocket channel: a client binds with a `$get-ws-binding-token` token and receives the
handshake and the same notifications."""

from __future__ import annotations

import json
from typing import Any

import httpx
import websockets
from tests.subscriptions.conftest import Delivery, subscription
from tests.subscriptions.fhir import encounter, patient_, subscribe
from tests.subscriptions.receiver import Receiver, status_of


def _parameters(resource: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: p for p in resource["parameter"]}


async def test_events_replays_a_range(delivery: Delivery, receiver: Receiver) -> None:
    async with httpx.AsyncClient(base_url=delivery.base) as http:
        patient = await patient_(http)
        sid = await subscribe(
            http,
            subscription("encounter-admission-discharge", receiver.url, content="full-resource"),
        )
        encounters = [await encounter(http, patient) for _ in range(6)]
        await delivery.step()
        replay = await http.get(
            f"/Subscription/{sid}/$events",
            params={"eventsSinceNumber": "2", "eventsUntilNumber": "4"},
        )
        assert replay.status_code == 200, replay.text
        bundle = replay.json()
        everything = (await http.get(f"/Subscription/{sid}/$events")).json()
        id_only = (
            await http.post(
                f"/Subscription/{sid}/$events",
                json={
                    "resourceType": "Parameters",
                    "parameter": [
                        {"name": "eventsSinceNumber", "valueString": "6"},
                        {"name": "content", "valueCode": "id-only"},
                    ],
                },
            )
        ).json()
        bad = await http.get(f"/Subscription/{sid}/$events", params={"eventsSinceNumber": "x"})
        status = (await http.get(f"/Subscription/{sid}/$status")).json()
    replayed = status_of(bundle)
    assert replayed["type"] == "query-event"
    assert replayed["events"] == [2, 3, 4]
    assert replayed["events-since-subscription-start"] == "6"
    resources = [e["resource"]["id"] for e in bundle["entry"][1:]]
    assert resources == encounters[1:4]
    assert status_of(everything)["events"] == [1, 2, 3, 4, 5, 6]
    assert [e.get("resource") for e in id_only["entry"][1:]] == [None]
    assert status_of(id_only)["foci"] == [f"Encounter/{encounters[5]}"]
    assert bad.status_code == 400
    # The endpoint got the same numbers; $status says where delivery stands.
    assert receiver.event_numbers() == [1, 2, 3, 4, 5, 6]
    assert status["type"] == "searchset" and status["total"] == 1
    reported = _parameters(status["entry"][0]["resource"])
    assert reported["status"]["valueCode"] == "active"
    assert reported["type"]["valueCode"] == "query-status"
    assert reported["events-since-subscription-start"]["valueString"] == "6"


async def test_websocket_client_receives_notifications(delivery: Delivery) -> None:
    async with httpx.AsyncClient(base_url=delivery.base) as http:
        patient = await patient_(http)
        sid = await subscribe(
            http, subscription("encounter-admission-discharge", None, channel="websocket")
        )
        await delivery.step()
        assert (await http.get(f"/Subscription/{sid}")).json()["status"] == "active"
        rest = await http.get(f"/Subscription/{sid}/$get-ws-binding-token")
        assert rest.status_code == 200, rest.text
        answer = _parameters(rest.json())
        assert answer["subscription"]["valueString"] == f"Subscription/{sid}"
        url = delivery.base.replace("http://", "ws://").removesuffix("/fhir")
        url += answer["websocket-url"]["valueUrl"]
        async with websockets.connect(url) as socket:
            await socket.send("bind-with-token " + answer["token"]["valueString"])
            handshake = status_of(json.loads(await socket.recv()))
            assert handshake["type"] == "handshake"
            admitted = await encounter(http, patient)
            await delivery.step()
            notification = status_of(json.loads(await socket.recv()))
        # A token is for that Subscription only, and nothing else binds.
        async with websockets.connect(url) as socket:
            await socket.send("bind-with-token not-a-token")
            refusal = await socket.recv()
    assert notification["type"] == "event-notification"
    assert notification["events"] == [1]
    assert notification["foci"] == [f"Encounter/{admitted}"]
    assert "not valid" in str(refusal)


async def test_binding_token_only_for_websocket_subscriptions(
    delivery: Delivery, receiver: Receiver
) -> None:
    async with httpx.AsyncClient(base_url=delivery.base) as http:
        sid = await subscribe(http, subscription("communication-recorded", receiver.url))
        refused = await http.get(f"/Subscription/{sid}/$get-ws-binding-token")
        missing = await http.get("/Subscription/nope/$events")
    assert refused.status_code == 400
    assert missing.status_code == 404

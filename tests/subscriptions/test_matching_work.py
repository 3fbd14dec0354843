"""The matcher checks an event only against the Subscriptions that can match it: those
filtered to another member are not looked at, and filters that take a search are decided by
one search per batch of events, not one per event and Subscription."""

from __future__ import annotations

from typing import Any

import httpx
from tests.subscriptions.conftest import Delivery, subscription
from tests.subscriptions.fhir import patient_, subscribe

from cmfhir.store import SubscriptionRows
from cmfhir.subscriptions import SubscriptionMatcher

TOPIC = "encounter-admission-discharge"
MEMBERS = 12


def _admissions(patients: list[str]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Encounter",
                    "status": "in-progress",
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "IMP",
                    },
                    "subject": {"reference": f"Patient/{patient}"},
                },
                "request": {"method": "POST", "url": "Encounter"},
            }
            for patient in patients
        ],
    }


async def test_an_event_is_checked_only_against_subscriptions_that_can_match(
    delivery: Delivery,
) -> None:
    endpoint = "http://127.0.0.1:9/unused"  # nothing is sent in this test
    async with httpx.AsyncClient(base_url=delivery.base) as http:
        patients = [await patient_(http) for _ in range(MEMBERS)]
        per_member = {
            patient: await subscribe(
                http,
                subscription(TOPIC, endpoint, filters=(f"Encounter?patient=Patient/{patient}",)),
            )
            for patient in patients
        }
        # An OR list takes a search: two Subscriptions with the same one share it.
        searched = [
            await subscribe(
                http, subscription(TOPIC, endpoint, filters=("Encounter?class=IMP,EMER",))
            )
            for _ in range(2)
        ]
        unfiltered = await subscribe(http, subscription(TOPIC, endpoint))
        await delivery.matcher.drain()
        matcher = delivery.matcher.handler
        assert isinstance(matcher, SubscriptionMatcher)
        matcher.work.clear()

        admitted = [patients[0]] * 3 + [patients[1]] * 3
        answer = await http.post("", json=_admissions(admitted))
        assert answer.status_code == 200, answer.text
        await delivery.matcher.drain()

    events = len(admitted)
    assert matcher.work["events"] == events
    # Each admission: its member's Subscription, the two searched ones and the unfiltered
    # one; none of the other members' Subscriptions.
    assert matcher.work["checked"] == events * 4
    assert matcher.work["searches"] == 1
    async with delivery.sender.ctx.store.transaction(read_only=True) as repo:
        numbered = {
            s.subscription_id: s.events_since_start
            for s in await SubscriptionRows(repo.conn).states()
        }
    assert numbered[per_member[patients[0]]] == 3
    assert numbered[per_member[patients[1]]] == 3
    assert all(numbered[per_member[p]] == 0 for p in patients[2:])
    assert [numbered[s] for s in searched] == [events, events]
    assert numbered[unfiltered] == events

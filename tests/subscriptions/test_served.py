"""Delivery by `cmfhir serve` itself, as run in production: a care gap reaches a rest-hook
subscriber within a second of the write, and a server killed with SIGKILL in the middle of
delivering delivers, after restart, every event with the same numbers: none missing."""

from __future__ import annotations

import signal
import time

import httpx
from tests.serving import private_dir, serve
from tests.subscriptions.conftest import subscription
from tests.subscriptions.receiver import Receiver

ENV = {"CMFHIR_SUBSCRIPTION_ALLOW_LOOPBACK": "true"}
GAP = "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/extension-gapStatus"
GAPS = "http://hl7.org/fhir/us/davinci-deqm/CodeSystem/gaps-status"


def _gap(patient: str, status: str) -> dict[str, object]:
    return {
        "resourceType": "DetectedIssue",
        "modifierExtension": [
            {"url": GAP, "valueCodeableConcept": {"coding": [{"system": GAPS, "code": status}]}}
        ],
        "status": "final",
        "code": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "CAREGAP"}
            ]
        },
        "patient": {"reference": f"Patient/{patient}"},
    }


def _wait_status(http: httpx.Client, sid: str, status: str) -> None:
    deadline = time.monotonic() + 30
    while http.get(f"/Subscription/{sid}").json()["status"] != status:
        assert time.monotonic() < deadline, f"Subscription never became {status}"
        time.sleep(0.05)


def test_a_care_gap_reaches_the_subscriber_within_a_second(scratch_database: str) -> None:
    receiver = Receiver().start()
    try:
        with (
            private_dir() as workdir,
            serve(scratch_database, workdir, env=ENV) as served,
            httpx.Client(base_url=served.base, timeout=30) as http,
        ):
            patient = http.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
            body = subscription(
                "care-gap",
                receiver.url,
                filters=(f"DetectedIssue?patient=Patient/{patient}&gap-status=open-gap",),
            )
            sid = http.post("/Subscription", json=body).json()["id"]
            _wait_status(http, sid, "active")

            created = http.post("/DetectedIssue", json=_gap(patient, "open-gap"))
            written = time.monotonic()
            assert created.status_code == 201, created.text
            receiver.wait_for(1, timeout_s=10)
            lag = time.monotonic() - written
            gap = created.json()
            # The same status again is no event; closing it is one the filter leaves out.
            assert http.put(f"/DetectedIssue/{gap['id']}", json=gap).status_code == 200
            gap["modifierExtension"][0]["valueCodeableConcept"]["coding"][0]["code"] = "closed-gap"
            assert http.put(f"/DetectedIssue/{gap['id']}", json=gap).status_code == 200
            reopened = http.post("/DetectedIssue", json=_gap(patient, "open-gap")).json()
            numbers = receiver.wait_for(2)
            statuses = receiver.statuses()
    finally:
        receiver.stop()
    # From the answer to the write (its commit) to the notification's arrival.
    assert lag < 1.0, f"notified {lag:.3f} s after the write"
    assert numbers == [1, 2]
    assert statuses[-1]["foci"] == [f"DetectedIssue/{reopened['id']}"]


def test_no_event_lost_when_killed_mid_delivery(scratch_database: str) -> None:
    receiver = Receiver(delay_s=0.1).start()
    count = 30
    try:
        with private_dir() as workdir:
            with (
                serve(scratch_database, workdir, env=ENV) as served,
                httpx.Client(base_url=served.base, timeout=30) as http,
            ):
                patient = http.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
                body = subscription("encounter-admission-discharge", receiver.url, max_count=1)
                sid = http.post("/Subscription", json=body).json()["id"]
                _wait_status(http, sid, "active")
                encounters = []
                for _ in range(count):
                    response = http.post(
                        "/Encounter",
                        json={
                            "resourceType": "Encounter",
                            "status": "in-progress",
                            "class": {"code": "IMP"},
                            "subject": {"reference": f"Patient/{patient}"},
                        },
                    )
                    encounters.append(response.json()["id"])
                receiver.wait_for(3)
                served.stop(signal.SIGKILL)
            before = len(set(receiver.event_numbers()))
            assert before < count, "delivery finished before the kill: nothing tested"
            with (
                serve(scratch_database, workdir, env=ENV) as served,
                httpx.Client(base_url=served.base, timeout=30) as http,
            ):
                numbers = receiver.wait_for(count, timeout_s=60)
                replay = http.get(f"/Subscription/{sid}/$events").json()
    finally:
        receiver.stop()
    assert sorted(set(numbers)) == list(range(1, count + 1))
    # In order: each number first arrives after every smaller one.
    first_seen = list(dict.fromkeys(numbers))
    assert first_seen == sorted(first_seen)
    # The same numbers for the same changes: $events tells them in the order written.
    foci = [
        part["valueReference"]["reference"]
        for p in replay["entry"][0]["resource"]["parameter"]
        if p["name"] == "notification-event"
        for part in p["part"]
        if part["name"] == "focus"
    ]
    assert foci == [f"Encounter/{e}" for e in encounters]

"""The AuditEvents of writes, recorded in the write's own transaction: one per write and
member (never a second one from the buffer), each naming the version written; a transaction
Bundle's entries each audited; a refused write audited as refused and nothing else. And the
access log's client and user fields."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import pytest
from tests.auth.conftest import Bearer, Smart


def _sent(bearer: Bearer, method: str, url: str, **kwargs: Any) -> tuple[str, Any]:
    """The request id sent (the AuditEvent's source.site) and the answer."""
    rid = uuid.uuid4().hex
    headers = {"X-Request-Id": rid, **kwargs.pop("headers", {})}
    answer = bearer.request(method, url, headers=headers, **kwargs)
    return rid, answer


def _events(system: Bearer, rid: str) -> list[dict[str, Any]]:
    """The AuditEvents of one request (its request id is their source.site)."""
    answer = system.get(f"/AuditEvent?site={rid}&_count=1000")
    assert answer.status_code == 200, answer.text
    return [e["resource"] for e in answer.json().get("entry", [])]


def _whats(event: dict[str, Any]) -> list[dict[str, Any]]:
    return [x["what"] for x in event.get("entity", []) if "what" in x]


def _buffer_written(system: Bearer) -> None:
    """Returns once the buffer has been written past a read made now: anything buffered
    before that read is in the database (the buffer is written in order, all at once)."""
    rid, answer = _sent(system, "GET", "/Patient?_count=1")
    assert answer.status_code == 200
    deadline = time.monotonic() + 15
    while not _events(system, rid):
        assert time.monotonic() < deadline, "the buffered read event was never written"
        time.sleep(0.2)


def test_each_write_has_one_audit_event_committed_with_it(smart: Smart) -> None:
    system = smart.system()
    rid_create, created = _sent(system, "POST", "/Patient", json={"resourceType": "Patient"})
    assert created.status_code == 201, created.text
    member = created.json()["id"]
    # Committed with the write: there before the response, with no wait for the buffer.
    (event,) = _events(system, rid_create)
    assert event["action"] == "C" and event["outcome"] == "0"
    assert event["subtype"] == [
        {"system": "http://hl7.org/fhir/restful-interaction", "code": "create"}
    ]
    whats = [x["what"]["reference"] for x in event["entity"]]
    assert whats == [f"Patient/{member}", f"Patient/{member}/_history/1"]
    assert event["agent"][1]["who"]["identifier"]["value"] == smart.system_client
    assert event["agent"][0]["network"]["address"] == "127.0.0.1"

    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "audited write"},
        "subject": {"reference": f"Patient/{member}"},
    }
    rid_obs, answer = _sent(system, "POST", "/Observation", json=observation)
    assert answer.status_code == 201, answer.text
    oid = answer.json()["id"]
    rid_put, answer = _sent(
        system, "PUT", f"/Observation/{oid}", json={**observation, "id": oid, "status": "amended"}
    )
    assert answer.status_code == 200, answer.text
    rid_patch, answer = _sent(
        system,
        "PATCH",
        f"/Observation/{oid}",
        json=[{"op": "replace", "path": "/status", "value": "corrected"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert answer.status_code == 200, answer.text
    rid_delete, answer = _sent(system, "DELETE", f"/Observation/{oid}")
    assert answer.status_code in (200, 204), answer.text

    _buffer_written(system)
    expected = [
        (rid_create, "C", f"Patient/{member}/_history/1"),
        (rid_obs, "C", f"Observation/{oid}/_history/1"),
        (rid_put, "U", f"Observation/{oid}/_history/2"),
        (rid_patch, "U", f"Observation/{oid}/_history/3"),
        (rid_delete, "D", f"Observation/{oid}/_history/4"),
    ]
    for rid, action, version in expected:
        found = _events(system, rid)
        assert len(found) == 1, (rid, action, found)  # the buffer added none
        assert found[0]["action"] == action
        assert {"reference": version} in [x["what"] for x in found[0]["entity"]]


def test_transaction_entries_are_audited_per_member(smart: Smart) -> None:
    system = smart.system()
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_url,
                "resource": {"resourceType": "Patient"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "in a transaction"},
                    "subject": {"reference": patient_url},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "resource": {"resourceType": "Practitioner"},
                "request": {"method": "POST", "url": "Practitioner"},
            },
        ],
    }
    rid, answer = _sent(system, "POST", "", json=bundle)
    assert answer.status_code == 200, answer.text
    locations = [e["response"]["location"].split("/fhir/")[-1] for e in answer.json()["entry"]]
    member = locations[0].split("/")[1]
    # Written with the transaction (no wait): one for the member, one for the Practitioner.
    written = [e for e in _events(system, rid) if e["action"] == "C"]
    assert len(written) == 2
    (event,) = [e for e in written if {"reference": f"Patient/{member}"} in _whats(e)]
    codes = [c["code"] for c in event["subtype"]]
    assert codes == ["create", "transaction"]
    whats = {x["reference"] for x in _whats(event)}
    assert {locations[0], locations[1]} <= whats
    assert locations[2] not in whats  # the Practitioner is in no member's compartment


def test_a_refused_write_is_audited_as_refused_and_writes_nothing(smart: Smart) -> None:
    system = smart.system()
    member = system.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    reader = smart.as_token("system/*.rs")
    rid, answer = _sent(
        reader,
        "POST",
        "/Observation",
        json={
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "refused"},
            "subject": {"reference": f"Patient/{member}"},
        },
    )
    assert answer.status_code == 403
    deadline = time.monotonic() + 15
    while not (found := _events(system, rid)):
        assert time.monotonic() < deadline, "the refused write was not audited"
        time.sleep(0.2)
    assert [(e["action"], e["outcome"]) for e in found] == [("C", "4")]
    assert not any(x["reference"].startswith("Observation/") for x in _whats(found[0]))
    assert system.get(f"/Observation?subject=Patient/{member}").json().get("entry") is None


def test_access_log_names_the_client_and_user(
    smart: Smart, caplog: pytest.LogCaptureFixture
) -> None:
    nurse = smart.system().post("/Practitioner", json={"resourceType": "Practitioner"})
    practitioner = nurse.json()["id"]
    user = smart.as_token("user/*.rs", fhir_user=f"Practitioner/{practitioner}")
    member = smart.as_token("patient/*.rs", fhir_user="Patient/mrn-0042", patient="mrn-0042")
    caplog.set_level(logging.INFO, logger="cmfhir.access")
    rids = {}
    for name, bearer in (("user", user), ("member", member)):
        rids[name], _ = _sent(bearer, "GET", "/Observation?_count=1")
    rids["anonymous"], answer = _sent(Bearer(smart.base, "not-a-token"), "GET", "/Patient")
    assert answer.status_code == 401
    deadline = time.monotonic() + 5
    while True:
        lines = {
            r.access["request_id"]: r  # type: ignore[attr-defined]
            for r in caplog.records
            if r.name == "cmfhir.access"
        }
        if set(rids.values()) <= set(lines) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    fields = {name: lines[rid].access for name, rid in rids.items()}  # type: ignore[attr-defined]
    assert (fields["user"]["client"], fields["user"]["user"]) == (
        "test-app",
        f"Practitioner/{practitioner}",
    )
    # A member id a client chose may be their record number: hidden, as in paths.
    assert fields["member"]["user"] == "Patient/{id}"
    assert "mrn-0042" not in lines[rids["member"]].getMessage()
    assert (fields["anonymous"]["client"], fields["anonymous"]["user"]) == (None, None)
    assert (
        lines[rids["user"]]
        .getMessage()
        .endswith(f"client=test-app user=Practitioner/{practitioner}")
    )

"""Transactions that must not write the wrong thing (https://hl7.org/fhir/R4B/http.html#trules):
entries see the entries processed before them, a fullUrl is unique (bdl-7), a `urn:uuid:`
reference resolves or is refused, and conditional writes with the same criteria inside one
Bundle do not make two resources."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx

FHIR = {"Content-Type": "application/fhir+json"}
SYSTEM = "urn:test:txc"


def _bundle(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def _patient(mrn: str, family: str = "Okafor") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": SYSTEM, "value": mrn}],
        "name": [{"family": family}],
    }


def _observation(subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": subject},
    }


def _count(client: httpx.Client, mrn: str) -> int:
    found = client.get("Patient", params={"identifier": f"{SYSTEM}|{mrn}", "_summary": "count"})
    total: int = found.json()["total"]
    return total


def _id(entry: dict[str, Any]) -> str:
    location: str = entry["response"]["location"]
    return location.split("/")[1]


def test_conditional_create_after_delete_of_its_match_creates_a_new_one(
    client: httpx.Client,
) -> None:
    mrn = uuid.uuid4().hex
    old = client.post("Patient", json=_patient(mrn), headers=FHIR).json()["id"]
    new_url = f"urn:uuid:{uuid.uuid4()}"
    bundle = _bundle(
        {"request": {"method": "DELETE", "url": f"Patient/{old}"}},
        {
            "fullUrl": new_url,
            "resource": _patient(mrn, "Reborn"),
            "request": {
                "method": "POST",
                "url": "Patient",
                "ifNoneExist": f"identifier={SYSTEM}|{mrn}",
            },
        },
        {"resource": _observation(new_url), "request": {"method": "POST", "url": "Observation"}},
    )
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert entries[1]["response"]["status"] == "201 Created"
    new = _id(entries[1])
    assert new != old
    observation = client.get(f"Observation/{_id(entries[2])}").json()
    assert observation["subject"]["reference"] == f"Patient/{new}"
    assert client.get(f"Patient/{old}").status_code == 410
    assert _count(client, mrn) == 1


def test_conditional_delete_sees_an_earlier_delete(client: httpx.Client) -> None:
    """The conditional delete runs after the plain one: nothing is left for it to match."""
    mrn = uuid.uuid4().hex
    pid = client.post("Patient", json=_patient(mrn), headers=FHIR).json()["id"]
    bundle = _bundle(
        {"request": {"method": "DELETE", "url": f"Patient/{pid}"}},
        {"request": {"method": "DELETE", "url": f"Patient?identifier={SYSTEM}|{mrn}"}},
    )
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text
    assert [e["response"]["status"] for e in response.json()["entry"]] == ["204 No Content"] * 2
    assert client.get(f"Patient/{pid}").status_code == 410


def test_conditional_create_matches_an_earlier_create_of_the_bundle(
    client: httpx.Client,
) -> None:
    mrn = uuid.uuid4().hex
    first_url, second_url = (f"urn:uuid:{uuid.uuid4()}" for _ in range(2))
    bundle = _bundle(
        {
            "fullUrl": first_url,
            "resource": _patient(mrn),
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "fullUrl": second_url,
            "resource": _patient(mrn, "Second"),
            "request": {
                "method": "POST",
                "url": "Patient",
                "ifNoneExist": f"identifier={SYSTEM}|{mrn}",
            },
        },
        {"resource": _observation(second_url), "request": {"method": "POST", "url": "Observation"}},
    )
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    first = _id(entries[0])
    assert entries[1]["response"]["status"] == "200 OK"
    assert entries[1]["resource"]["id"] == first
    observation = client.get(f"Observation/{_id(entries[2])}").json()
    assert observation["subject"]["reference"] == f"Patient/{first}"
    assert _count(client, mrn) == 1


def test_two_conditional_creates_with_the_same_criteria_make_one(client: httpx.Client) -> None:
    """Spelled differently (`|` and `%7C`, repeated, another order): the same criteria."""
    mrn = uuid.uuid4().hex
    spellings = [
        f"identifier={SYSTEM}|{mrn}",
        f"identifier={SYSTEM}%7C{mrn}",
        f"identifier={SYSTEM}|{mrn}&identifier={SYSTEM}%7C{mrn}",
    ]
    urls = [f"urn:uuid:{uuid.uuid4()}" for _ in spellings]
    bundle = _bundle(
        *(
            {
                "fullUrl": url,
                "resource": _patient(mrn),
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": criteria},
            }
            for url, criteria in zip(urls, spellings, strict=True)
        ),
        *(
            {"resource": _observation(url), "request": {"method": "POST", "url": "Observation"}}
            for url in urls
        ),
    )
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert [e["response"]["status"] for e in entries[:3]] == ["201 Created", "200 OK", "200 OK"]
    pid = _id(entries[0])
    assert {e["resource"]["id"] for e in entries[:3]} == {pid}
    for e in entries[3:]:
        assert client.get(f"Observation/{_id(e)}").json()["subject"]["reference"] == (
            f"Patient/{pid}"
        )
    assert _count(client, mrn) == 1


def _conditional_put(mrn: str, criteria: str, family: str) -> dict[str, Any]:
    return {
        "resource": _patient(mrn, family),
        "request": {"method": "PUT", "url": f"Patient?{criteria}"},
    }


def test_two_conditional_updates_with_the_same_criteria_fail_saying_why(
    client: httpx.Client,
) -> None:
    mrn = uuid.uuid4().hex
    bundle = _bundle(
        _conditional_put(mrn, f"identifier={SYSTEM}|{mrn}", "One"),
        _conditional_put(mrn, f"identifier={SYSTEM}%7C{mrn}", "Two"),
    )
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 400, response.text
    text = response.text
    assert "Bundle.entry[0]" in text and "Bundle.entry[1]" in text
    assert "only once" in text
    assert _count(client, mrn) == 0


def test_conditional_create_then_conditional_update_with_the_same_criteria(
    client: httpx.Client,
) -> None:
    mrn = uuid.uuid4().hex
    bundle = _bundle(
        {
            "resource": _patient(mrn),
            "request": {
                "method": "POST",
                "url": "Patient",
                "ifNoneExist": f"identifier={SYSTEM}|{mrn}",
            },
        },
        _conditional_put(mrn, f"identifier={SYSTEM}|{mrn}", "Updated"),
    )
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 400, response.text
    assert "only once" in response.text
    assert _count(client, mrn) == 0


def test_conditional_update_sees_an_earlier_create_of_the_bundle(client: httpx.Client) -> None:
    """The create is processed first, so the conditional update matches it: one resource
    changed by two entries, which a transaction refuses."""
    mrn = uuid.uuid4().hex
    bundle = _bundle(
        _conditional_put(mrn, f"identifier={SYSTEM}|{mrn}", "Updated"),
        {"resource": _patient(mrn), "request": {"method": "POST", "url": "Patient"}},
    )
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 400, response.text
    assert "Bundle.entry[1]" in response.text and "Bundle.entry[0]" in response.text
    assert _count(client, mrn) == 0


def test_duplicate_full_url_is_refused(client: httpx.Client) -> None:
    mrn = uuid.uuid4().hex
    url = f"urn:uuid:{uuid.uuid4()}"
    bundle = _bundle(
        {
            "fullUrl": url,
            "resource": _patient(mrn, "A"),
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "fullUrl": url,
            "resource": _patient(mrn, "B"),
            "request": {"method": "POST", "url": "Patient"},
        },
        {"resource": _observation(url), "request": {"method": "POST", "url": "Observation"}},
    )
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert url in response.text and "bdl-7" in response.text
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[1].fullUrl"]
    assert _count(client, mrn) == 0


def test_unresolved_urn_reference_is_refused(client: httpx.Client) -> None:
    mrn = uuid.uuid4().hex
    dangling = f"urn:uuid:{uuid.uuid4()}"
    bundle = _bundle(
        {"resource": _patient(mrn), "request": {"method": "POST", "url": "Patient"}},
        {"resource": _observation(dangling), "request": {"method": "POST", "url": "Observation"}},
    )
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 400, response.text
    assert dangling in response.text and "Bundle.entry[1]" in response.text
    assert _count(client, mrn) == 0
    stored = client.get("Observation", params={"subject": dangling})
    assert stored.status_code != 200 or stored.json().get("total", 0) == 0


def test_reference_to_a_conditional_delete_that_matched_nothing(
    client: httpx.Client,
) -> None:
    """A conditional delete that matches nothing has a fullUrl no resource answers to."""
    mrn = uuid.uuid4().hex
    gone = f"urn:uuid:{uuid.uuid4()}"
    bundle = _bundle(
        {
            "fullUrl": gone,
            "request": {"method": "DELETE", "url": f"Patient?identifier={SYSTEM}|{mrn}"},
        },
        {"resource": _observation(gone), "request": {"method": "POST", "url": "Observation"}},
    )
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 400, response.text
    assert gone in response.text


def _patch_entry(pid: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resource": {
            "resourceType": "Binary",
            "contentType": "application/json-patch+json",
            "data": base64.b64encode(json.dumps(ops).encode()).decode(),
        },
        "request": {"method": "PATCH", "url": f"Patient/{pid}"},
    }


def test_patch_entry_that_changes_the_id_gets_the_rest_answer(client: httpx.Client) -> None:
    mrn = uuid.uuid4().hex
    pid = client.post("Patient", json=_patient(mrn), headers=FHIR).json()["id"]
    ops = [{"op": "replace", "path": "/id", "value": f"other-{mrn[:8]}"}]
    rest = client.patch(
        f"Patient/{pid}",
        content=json.dumps(ops),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert rest.status_code == 422
    response = client.post("", json=_bundle(_patch_entry(pid, ops)), headers=FHIR)
    assert response.status_code == 422, response.text
    assert "id" in response.json()["issue"][0]["diagnostics"]
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [_patch_entry(pid, ops)]}
    answer = client.post("", json=batch, headers=FHIR).json()["entry"][0]["response"]
    assert answer["status"] == "422"
    assert client.get(f"Patient/{pid}").json()["meta"]["versionId"] == "1"
    assert client.get(f"Patient/other-{mrn[:8]}").status_code == 404


def test_patch_entry_can_refer_to_a_created_entry(client: httpx.Client) -> None:
    mrn = uuid.uuid4().hex
    pid = client.post("Patient", json=_patient(mrn), headers=FHIR).json()["id"]
    org_url = f"urn:uuid:{uuid.uuid4()}"
    ops = [{"op": "add", "path": "/managingOrganization", "value": {"reference": org_url}}]
    bundle = _bundle(
        _patch_entry(pid, ops),
        {
            "fullUrl": org_url,
            "resource": {"resourceType": "Organization", "name": "Clinic"},
            "request": {"method": "POST", "url": "Organization"},
        },
    )
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text
    org = _id(response.json()["entry"][1])
    patched = client.get(f"Patient/{pid}").json()
    assert patched["managingOrganization"]["reference"] == f"Organization/{org}"


def test_conditional_create_that_matches_then_conditional_update_of_it(
    client: httpx.Client,
) -> None:
    """The create writes nothing (it matched), so the update is the only change."""
    mrn = uuid.uuid4().hex
    pid = client.post("Patient", json=_patient(mrn), headers=FHIR).json()["id"]
    bundle = _bundle(
        {
            "resource": _patient(mrn, "Ignored"),
            "request": {
                "method": "POST",
                "url": "Patient",
                "ifNoneExist": f"identifier={SYSTEM}%7C{mrn}",
            },
        },
        _conditional_put(mrn, f"identifier={SYSTEM}|{mrn}", "Updated"),
    )
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["200 OK", "200 OK"]
    current = client.get(f"Patient/{pid}").json()
    assert current["name"] == [{"family": "Updated"}] and current["meta"]["versionId"] == "2"
    assert _count(client, mrn) == 1

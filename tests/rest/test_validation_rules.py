"""The core validation rules over HTTP: each refused write answers 4xx with an
OperationOutcome naming the rule and the location, and stores nothing."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

FHIR = {"Content-Type": "application/fhir+json"}
SYSTEM = "urn:test:validation-rules"
NS = 'xmlns="http://www.w3.org/1999/xhtml"'


def _marked(resource: dict[str, Any], marker: str) -> dict[str, Any]:
    return {**resource, "identifier": [{"system": SYSTEM, "value": marker}]}


def _count(client: httpx.Client, resource_type: str, marker: str) -> int:
    found = client.get(resource_type, params={"identifier": f"{SYSTEM}|{marker}"})
    assert found.status_code == 200, found.text
    return int(found.json()["total"])


ENCOUNTER = {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}}
ORG = {"resourceType": "Organization", "id": "o", "name": "Clinic"}

# (resource type, body without identifier, location, text in the diagnostics)
CASES = [
    pytest.param(
        "Encounter",
        {**ENCOUNTER, "period": {"start": "2024-02-01", "end": "2024-01-01"}},
        "Encounter.period",
        "per-1: If present, start SHALL have a lower value than end",
        id="invariant-per-1",
    ),
    pytest.param(
        "Patient",
        {"resourceType": "Patient", "contained": [ORG]},
        "Patient.contained[0]",
        "dom-3",
        id="contained-unreferenced",
    ),
    pytest.param(
        "Patient",
        {"resourceType": "Patient", "managingOrganization": {"reference": "#missing"}},
        "Patient.managingOrganization.reference",
        "ref-1",
        id="local-reference-unresolved",
    ),
    pytest.param(
        "Patient",
        {
            "resourceType": "Patient",
            "text": {
                "status": "generated",
                "div": f'<div {NS}><img src="x" onerror="alert(1)"/></div>',
            },
        },
        "Patient.text.div",
        "txt-1: attribute 'onerror' on <img> is not allowed",
        id="narrative-event-handler",
    ),
    pytest.param(
        "Patient",
        {"resourceType": "Patient", "managingOrganization": {"reference": "Patient/1"}},
        "Patient.managingOrganization.reference",
        "a reference to Patient is not allowed here (allowed: Organization)",
        id="reference-target-type",
    ),
    pytest.param(
        "Patient",
        {
            "resourceType": "Patient",
            "extension": [
                {
                    "url": "http://example.org/x",
                    "valueString": "a",
                    "extension": [{"url": "y", "valueString": "b"}],
                }
            ],
        },
        "Patient.extension[0]",
        "ext-1",
        id="extension-value-and-children",
    ),
    pytest.param(
        "Patient",
        {"resourceType": "Patient", "name": [{"family": "   "}]},
        "Patient.name[0].family",
        "whitespace-only strings are not allowed",
        id="whitespace-only-string",
    ),
]


@pytest.mark.parametrize(("resource_type", "body", "location", "text"), CASES)
def test_create_and_update_are_refused(
    client: httpx.Client, resource_type: str, body: dict[str, Any], location: str, text: str
) -> None:
    marker = uuid.uuid4().hex
    created = client.post(resource_type, json=_marked(body, marker), headers=FHIR)
    assert created.status_code == 400, created.text
    outcome = created.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = next(i for i in outcome["issue"] if i.get("expression") == [location])
    assert text in issue["diagnostics"]
    assert _count(client, resource_type, marker) == 0

    updated = client.put(
        f"{resource_type}/{marker}", json=_marked({**body, "id": marker}, marker), headers=FHIR
    )
    assert updated.status_code == 400, updated.text
    assert client.get(f"{resource_type}/{marker}").status_code == 404


def test_the_valid_form_of_each_is_stored(client: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    valid = {
        "resourceType": "Patient",
        "contained": [ORG],
        "managingOrganization": {"reference": "#o"},
        "text": {"status": "generated", "div": f"<div {NS}><p>Ann <b>Smith</b></p></div>"},
        "extension": [{"url": "http://example.org/x", "valueString": "a"}],
        "name": [{"family": "Smith"}],
    }
    created = client.post("Patient", json=_marked(valid, marker), headers=FHIR)
    assert created.status_code == 201, created.text
    assert _count(client, "Patient", marker) == 1


@pytest.mark.parametrize("resource_type", ["Parameters", "OperationOutcome"])
def test_operation_types_are_not_stored(client: httpx.Client, resource_type: str) -> None:
    body: dict[str, Any] = {"resourceType": resource_type}
    if resource_type == "OperationOutcome":
        body["issue"] = [{"severity": "error", "code": "invalid", "diagnostics": "x"}]
    else:
        body["parameter"] = [{"name": "x", "valueString": "y"}]
    created = client.post(resource_type, json=body, headers=FHIR)
    assert created.status_code == 422, created.text
    outcome = created.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "not-supported"
    assert f"{resource_type} is not stored" in outcome["issue"][0]["diagnostics"]
    updated = client.put(f"{resource_type}/p1", json={**body, "id": "p1"}, headers=FHIR)
    assert updated.status_code == 422, updated.text
    assert client.get(f"{resource_type}/p1").status_code == 404


def test_transaction_with_one_invalid_entry_stores_nothing(client: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    good = _marked({"resourceType": "Patient", "name": [{"family": "Good"}]}, marker)
    bad = _marked({**ENCOUNTER, "period": {"start": "2024-02-01", "end": "2024-01-01"}}, marker)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": good, "request": {"method": "POST", "url": "Patient"}},
            {"resource": bad, "request": {"method": "POST", "url": "Encounter"}},
        ],
    }
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 400, response.text
    assert "per-1" in response.text
    assert _count(client, "Patient", marker) == 0
    assert _count(client, "Encounter", marker) == 0

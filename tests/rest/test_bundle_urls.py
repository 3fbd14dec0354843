"""A Bundle entry's method and URL get the answer the same request gets over HTTP
(https://hl7.org/fhir/R4B/http.html#transaction): a URL with extra segments never acts on the
shorter URL it starts with, and in a transaction it fails the whole Bundle."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import pytest

FHIR = {"Content-Type": "application/fhir+json"}

# (method, URL with {id} for an existing Patient, status the REST API answers)
SHAPES = [
    ("DELETE", "Patient/{id}/_history/1", 405),
    ("DELETE", "Patient/{id}/Observation", 405),
    ("DELETE", "Patient/{id}/_history", 405),
    ("DELETE", "Observation/{id}/Patient", 404),
    ("PUT", "Patient/{id}/_history/1", 405),
    ("PUT", "Patient/{id}/extra/segments", 404),
    ("PATCH", "Patient/{id}/$meta-delete", 405),
    ("PATCH", "Patient/{id}/_history/1", 405),
    ("PATCH", "Patient?identifier=urn:test:urls|{id}", 405),
    ("POST", "Patient/{id}", 405),
    ("POST", "Patient/{id}/_history", 405),
    ("GET", "Patient/{id}/_history/1/extra", 404),
]
IDS = [f"{method} {url.replace('{id}', 'X')}" for method, url, _ in SHAPES]


def _patient(pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": "urn:test:urls", "value": pid}],
        "name": [{"family": "Original"}],
    }


def _entry(method: str, url: str, pid: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"request": {"method": method, "url": url}}
    if method in ("PUT", "POST"):
        entry["resource"] = {**_patient(pid), "name": [{"family": "Overwritten"}]}
    elif method == "PATCH":
        ops = [{"op": "replace", "path": "/name/0/family", "value": "Patched"}]
        entry["resource"] = {
            "resourceType": "Binary",
            "contentType": "application/json-patch+json",
            "data": base64.b64encode(json.dumps(ops).encode()).decode(),
        }
    return entry


def _rest(client: httpx.Client, method: str, url: str, pid: str) -> int:
    entry = _entry(method, url, pid)
    if method == "PATCH":
        ops = base64.b64decode(entry["resource"]["data"])
        headers = {"Content-Type": "application/json-patch+json"}
        return client.request(method, url, content=ops, headers=headers).status_code
    if "resource" in entry:
        return client.request(method, url, json=entry["resource"], headers=FHIR).status_code
    return client.request(method, url).status_code


@pytest.fixture
def existing(client: httpx.Client) -> str:
    pid = f"urls-{uuid.uuid4().hex[:12]}"
    response = client.put(f"Patient/{pid}", json=_patient(pid), headers=FHIR)
    assert response.status_code == 201
    return pid


def _unchanged(client: httpx.Client, pid: str) -> None:
    current = client.get(f"Patient/{pid}")
    assert current.status_code == 200
    assert current.json()["meta"]["versionId"] == "1"
    assert current.json()["name"] == [{"family": "Original"}]


@pytest.mark.parametrize(("method", "url", "status"), SHAPES, ids=IDS)
def test_rest_answer_is_as_listed(
    client: httpx.Client, existing: str, method: str, url: str, status: int
) -> None:
    assert _rest(client, method, url.format(id=existing), existing) == status
    _unchanged(client, existing)


@pytest.mark.parametrize(("method", "url", "status"), SHAPES, ids=IDS)
def test_batch_entry_gets_the_rest_answer_and_changes_nothing(
    client: httpx.Client, existing: str, method: str, url: str, status: int
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [_entry(method, url.format(id=existing), existing)],
    }
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text
    answer = response.json()["entry"][0]["response"]
    assert answer["status"] == str(status), answer
    assert answer["outcome"]["resourceType"] == "OperationOutcome"
    _unchanged(client, existing)


@pytest.mark.parametrize(("method", "url", "status"), SHAPES, ids=IDS)
def test_transaction_with_such_an_entry_fails_whole(
    client: httpx.Client, existing: str, method: str, url: str, status: int
) -> None:
    mrn = uuid.uuid4().hex
    other = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:urls-other", "value": mrn}],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": other, "request": {"method": "POST", "url": "Patient"}},
            _entry(method, url.format(id=existing), existing),
        ],
    }
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Bundle.entry[1]" in json.dumps(outcome)
    _unchanged(client, existing)
    found = client.get("Patient", params={"identifier": f"urn:test:urls-other|{mrn}"})
    assert found.json()["total"] == 0


def test_absolute_entry_url_on_another_server_is_refused(
    client: httpx.Client, existing: str
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "request": {
                    "method": "DELETE",
                    "url": f"https://elsewhere.example/Patient/{existing}",
                }
            }
        ],
    }
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 400, response.text
    assert "not a URL on this server" in response.text
    _unchanged(client, existing)


def test_absolute_entry_url_on_this_server_is_the_relative_one(
    client: httpx.Client, base: str, existing: str
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"{base}/Patient/{existing}"}},
            {"request": {"method": "DELETE", "url": f"{base}/Patient/{existing}/_history/1"}},
        ],
    }
    body = client.post("", json=bundle, headers=FHIR).json()
    assert [e["response"]["status"] for e in body["entry"]] == ["200 OK", "405"]
    _unchanged(client, existing)

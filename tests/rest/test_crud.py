"""read, vread, create, update, delete, patch and their headers over real HTTP."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

FHIR = {"Content-Type": "application/fhir+json"}


def patient(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:mrn", "value": uuid.uuid4().hex}],
        "name": [{"family": "Okafor", "given": ["Ada"]}],
        "gender": "female",
        "birthDate": "1980-02-29",
    }
    body.update(extra)
    return body


def test_create_returns_201_with_location_etag_and_meta(client: httpx.Client, base: str) -> None:
    response = client.post("Patient", json=patient(), headers=FHIR)
    assert response.status_code == 201
    body = response.json()
    assert body["resourceType"] == "Patient"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Location"] == f"{base}/Patient/{body['id']}/_history/1"
    assert "Last-Modified" in response.headers
    assert response.headers["Content-Type"].startswith("application/fhir+json")


def test_read_returns_what_was_written_apart_from_id_and_meta(client: httpx.Client) -> None:
    sent = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "valueQuantity": {"value": 1.50, "unit": "kg"},
    }
    raw = b'{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},"valueQuantity":{"value":1.50,"unit":"kg"}}'
    created = client.post("Observation", content=raw, headers=FHIR)
    assert created.status_code == 201, created.text
    read = client.get(f"Observation/{created.json()['id']}")
    assert read.status_code == 200
    assert b'"value":1.50' in read.content.replace(b" ", b"")
    got = json.loads(read.content)
    del got["id"], got["meta"]
    assert got == sent
    assert read.headers["ETag"] == 'W/"1"'


def test_update_versions_and_vread_keeps_every_version(client: httpx.Client) -> None:
    created = client.post("Patient", json=patient(), headers=FHIR).json()
    pid = created["id"]
    changed = {**created, "gender": "male"}
    updated = client.put(f"Patient/{pid}", json=changed, headers=FHIR)
    assert updated.status_code == 200
    assert updated.json()["meta"]["versionId"] == "2"
    assert updated.headers["ETag"] == 'W/"2"'
    assert client.get(f"Patient/{pid}/_history/1").json()["gender"] == "female"
    assert client.get(f"Patient/{pid}/_history/2").json()["gender"] == "male"
    assert client.get(f"Patient/{pid}").json()["gender"] == "male"
    assert client.get(f"Patient/{pid}/_history/3").status_code == 404


def test_update_as_create_with_client_id(client: httpx.Client) -> None:
    pid = f"client-{uuid.uuid4().hex[:12]}"
    response = client.put(f"Patient/{pid}", json=patient(id=pid), headers=FHIR)
    assert response.status_code == 201
    assert response.json()["id"] == pid
    assert client.get(f"Patient/{pid}").status_code == 200


def test_delete_then_gone_and_history_keeps_it(client: httpx.Client) -> None:
    pid = client.post("Patient", json=patient(), headers=FHIR).json()["id"]
    deleted = client.delete(f"Patient/{pid}")
    assert deleted.status_code == 200
    assert deleted.json()["resourceType"] == "OperationOutcome"
    gone = client.get(f"Patient/{pid}")
    assert gone.status_code == 410
    assert gone.json()["resourceType"] == "OperationOutcome"
    history = client.get(f"Patient/{pid}/_history").json()
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"2"', 'W/"1"']
    assert "resource" not in history["entry"][0]
    assert history["entry"][0]["request"]["method"] == "DELETE"
    # Re-creating a deleted resource by update continues its version line.
    again = client.put(f"Patient/{pid}", json=patient(id=pid), headers=FHIR)
    assert again.status_code == 201
    assert again.json()["meta"]["versionId"] == "3"


def test_delete_of_unknown_resource_is_404(client: httpx.Client) -> None:
    assert client.delete("Patient/never-was-here").status_code == 404


def test_if_match_mismatch_is_412_and_changes_nothing(client: httpx.Client) -> None:
    created = client.post("Patient", json=patient(), headers=FHIR).json()
    pid = created["id"]
    stale = client.put(
        f"Patient/{pid}",
        json={**created, "gender": "male"},
        headers={**FHIR, "If-Match": 'W/"7"'},
    )
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"Patient/{pid}").json()["gender"] == "female"
    fresh = client.put(
        f"Patient/{pid}",
        json={**created, "gender": "male"},
        headers={**FHIR, "If-Match": 'W/"1"'},
    )
    assert fresh.status_code == 200


@pytest.mark.parametrize(
    ("prefer", "expect_body"),
    [
        pytest.param("return=minimal", None, id="minimal"),
        pytest.param("return=representation", "Patient", id="representation"),
        pytest.param("return=OperationOutcome", "OperationOutcome", id="outcome"),
    ],
)
def test_prefer_return(client: httpx.Client, prefer: str, expect_body: str | None) -> None:
    response = client.post("Patient", json=patient(), headers={**FHIR, "Prefer": prefer})
    assert response.status_code == 201
    assert "Location" in response.headers
    if expect_body is None:
        assert response.content == b""
    else:
        assert response.json()["resourceType"] == expect_body


def test_json_patch(client: httpx.Client) -> None:
    created = client.post("Patient", json=patient(), headers=FHIR).json()
    pid = created["id"]
    ops = [
        {"op": "replace", "path": "/gender", "value": "other"},
        {"op": "add", "path": "/name/0/given/-", "value": "Grace"},
    ]
    patched = client.patch(
        f"Patient/{pid}", json=ops, headers={"Content-Type": "application/json-patch+json"}
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["gender"] == "other"
    assert body["name"][0]["given"] == ["Ada", "Grace"]
    assert body["meta"]["versionId"] == "2"


@pytest.mark.parametrize(
    ("ops", "status"),
    [
        pytest.param(
            [{"op": "replace", "path": "/gender", "value": "robot"}], 400, id="invalid-code"
        ),
        pytest.param([{"op": "remove", "path": "/nothing"}], 422, id="missing-path"),
        pytest.param({"op": "replace"}, 400, id="not-an-array"),
        pytest.param([{"op": "jump", "path": "/gender"}], 400, id="unknown-op"),
        pytest.param([{"op": "replace", "path": "/id", "value": "other"}], 422, id="changes-id"),
    ],
)
def test_bad_json_patch_changes_nothing(client: httpx.Client, ops: Any, status: int) -> None:
    created = client.post("Patient", json=patient(), headers=FHIR).json()
    pid = created["id"]
    response = client.patch(
        f"Patient/{pid}", json=ops, headers={"Content-Type": "application/json-patch+json"}
    )
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    after = client.get(f"Patient/{pid}").json()
    assert after["meta"]["versionId"] == "1"
    assert after["gender"] == "female"


def test_conditional_create_if_none_exist(client: httpx.Client) -> None:
    mrn = uuid.uuid4().hex
    body = patient(identifier=[{"system": "urn:test:mrn", "value": mrn}])
    header = {**FHIR, "If-None-Exist": f"identifier=urn:test:mrn|{mrn}"}
    first = client.post("Patient", json=body, headers=header)
    second = client.post("Patient", json=body, headers=header)
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    found = client.get("Patient", params={"identifier": f"urn:test:mrn|{mrn}"}).json()
    assert found["total"] == 1


def test_conditional_update_creates_then_updates_then_refuses_ambiguity(
    client: httpx.Client,
) -> None:
    mrn = uuid.uuid4().hex
    query = f"identifier=urn:test:mrn|{mrn}"
    body = patient(identifier=[{"system": "urn:test:mrn", "value": mrn}])
    created = client.put(f"Patient?{query}", json=body, headers=FHIR)
    assert created.status_code == 201
    updated = client.put(f"Patient?{query}", json={**body, "gender": "male"}, headers=FHIR)
    assert updated.status_code == 200
    assert updated.json()["id"] == created.json()["id"]
    assert updated.json()["meta"]["versionId"] == "2"
    client.post("Patient", json=body, headers=FHIR)  # a second match
    ambiguous = client.put(f"Patient?{query}", json=body, headers=FHIR)
    assert ambiguous.status_code == 412


def test_conditional_delete(client: httpx.Client) -> None:
    mrn = uuid.uuid4().hex
    query = f"identifier=urn:test:mrn|{mrn}"
    none = client.delete(f"Patient?{query}")
    assert none.status_code == 200
    body = patient(identifier=[{"system": "urn:test:mrn", "value": mrn}])
    pid = client.post("Patient", json=body, headers=FHIR).json()["id"]
    assert client.delete(f"Patient?{query}").status_code == 200
    assert client.get(f"Patient/{pid}").status_code == 410
    client.post("Patient", json=body, headers=FHIR)
    client.post("Patient", json=body, headers=FHIR)
    assert client.delete(f"Patient?{query}").status_code == 412


def test_history_type_and_system_newest_first_and_paged(client: httpx.Client) -> None:
    client.put("Patient/example", json=patient(id="example"), headers=FHIR)
    ids = [client.post("Goal", json=goal(), headers=FHIR).json()["id"] for _ in range(5)]
    page = client.get("Goal/_history", params={"_count": 2}).json()
    assert page["type"] == "history"
    assert len(page["entry"]) == 2
    seen = [e["resource"]["id"] for e in page["entry"]]
    assert seen == [ids[-1], ids[-2]]
    nxt = next(link["url"] for link in page["link"] if link["relation"] == "next")
    page2 = httpx.get(nxt).json()
    assert [e["resource"]["id"] for e in page2["entry"]] == [ids[-3], ids[-4]]
    system = client.get("_history", params={"_count": 1}).json()
    assert system["entry"][0]["resource"]["id"] == ids[-1]


def goal() -> dict[str, Any]:
    return {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "description": {"text": "Walk to the mailbox and back every day"},
        "subject": {"reference": "Patient/example"},
    }

"""transaction (all or nothing, references resolved, spec order) and batch."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx

FHIR = {"Content-Type": "application/fhir+json"}


def _transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _patient(mrn: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:tx", "value": mrn}],
        "name": [{"family": "Nakamura"}],
    }


def test_transaction_resolves_urn_uuid_references(client: httpx.Client) -> None:
    mrn = uuid.uuid4().hex
    p_url = f"urn:uuid:{uuid.uuid4()}"
    bundle = _transaction(
        {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"code": "EMER"},
                "subject": {"reference": p_url},
            },
            "request": {"method": "POST", "url": "Encounter"},
        },
        {
            "fullUrl": p_url,
            "resource": _patient(mrn),
            "request": {"method": "POST", "url": "Patient"},
        },
    )
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    encounter_loc = body["entry"][0]["response"]["location"]
    patient_id = body["entry"][1]["response"]["location"].split("/")[1]
    encounter = client.get(encounter_loc.rsplit("/_history", 1)[0]).json()
    assert encounter["subject"]["reference"] == f"Patient/{patient_id}"
    # The rewritten reference is indexed: search by it finds the encounter.
    found = client.get("Encounter", params={"subject": f"Patient/{patient_id}"}).json()
    assert found["total"] == 1


def test_transaction_conditional_reference_and_conditional_create(client: httpx.Client) -> None:
    mrn = uuid.uuid4().hex
    pid = client.post("Patient", json=_patient(mrn), headers=FHIR).json()["id"]
    bundle = _transaction(
        {
            "resource": {
                "resourceType": "Condition",
                "subject": {"reference": f"Patient?identifier=urn:test:tx|{mrn}"},
                "code": {"text": "Hypertension"},
            },
            "request": {"method": "POST", "url": "Condition"},
        },
        {
            "fullUrl": "urn:uuid:" + str(uuid.uuid4()),
            "resource": _patient(mrn),
            "request": {
                "method": "POST",
                "url": "Patient",
                "ifNoneExist": f"identifier=urn:test:tx|{mrn}",
            },
        },
    )
    body = client.post("", json=bundle, headers=FHIR).json()
    assert body["entry"][1]["response"]["status"] == "200 OK"
    assert body["entry"][1]["resource"]["id"] == pid
    cid = body["entry"][0]["response"]["location"].split("/")[1]
    assert client.get(f"Condition/{cid}").json()["subject"]["reference"] == f"Patient/{pid}"


def test_transaction_with_one_bad_entry_stores_nothing(client: httpx.Client) -> None:
    mrn = uuid.uuid4().hex
    bundle = _transaction(
        {"resource": _patient(mrn), "request": {"method": "POST", "url": "Patient"}},
        {
            "resource": {"resourceType": "Patient", "gender": "robot"},
            "request": {"method": "POST", "url": "Patient"},
        },
    )
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Bundle.entry[1]" in json.dumps(outcome)
    found = client.get("Patient", params={"identifier": f"urn:test:tx|{mrn}"}).json()
    assert found["total"] == 0


def test_transaction_failing_late_rolls_back_earlier_writes(client: httpx.Client) -> None:
    mrn = uuid.uuid4().hex
    bundle = _transaction(
        {"resource": _patient(mrn), "request": {"method": "POST", "url": "Patient"}},
        {
            "resource": {**_patient(mrn), "id": "tx-late"},
            "request": {"method": "PUT", "url": "Patient/tx-late", "ifMatch": 'W/"9"'},
        },
    )
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 412
    found = client.get("Patient", params={"identifier": f"urn:test:tx|{mrn}"}).json()
    assert found["total"] == 0


def test_transaction_order_delete_post_put_get(client: httpx.Client) -> None:
    mrn = uuid.uuid4().hex
    old = client.post("Patient", json=_patient(mrn), headers=FHIR).json()["id"]
    put_id = f"tx-{uuid.uuid4().hex[:10]}"
    bundle = _transaction(
        {"request": {"method": "GET", "url": f"Patient?identifier=urn:test:tx|{mrn}"}},
        {
            "resource": {**_patient(mrn), "id": put_id},
            "request": {"method": "PUT", "url": f"Patient/{put_id}"},
        },
        {"resource": _patient(mrn), "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "DELETE", "url": f"Patient/{old}"}},
    )
    body = client.post("", json=bundle, headers=FHIR).json()
    # The GET runs last: it sees the two new patients and not the deleted one.
    search = body["entry"][0]["resource"]
    assert search["total"] == 2
    assert old not in {e["resource"]["id"] for e in search["entry"]}
    assert body["entry"][3]["response"]["status"] == "204 No Content"


def test_transaction_patch_entry(client: httpx.Client) -> None:
    pid = client.post("Patient", json=_patient(uuid.uuid4().hex), headers=FHIR).json()["id"]
    ops = [{"op": "add", "path": "/active", "value": True}]
    bundle = _transaction(
        {
            "resource": {
                "resourceType": "Binary",
                "contentType": "application/json-patch+json",
                "data": base64.b64encode(json.dumps(ops).encode()).decode(),
            },
            "request": {"method": "PATCH", "url": f"Patient/{pid}"},
        }
    )
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text
    assert client.get(f"Patient/{pid}").json()["active"] is True


def test_transaction_of_1000_entries(client: httpx.Client) -> None:
    mrn = uuid.uuid4().hex
    entries = []
    for i in range(500):
        p_url = f"urn:uuid:{uuid.uuid4()}"
        entries.append(
            {
                "fullUrl": p_url,
                "resource": _patient(mrn),
                "request": {"method": "POST", "url": "Patient"},
            }
        )
        entries.append(
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": f"step count {i}"},
                    "subject": {"reference": p_url},
                    "valueQuantity": {"value": i, "unit": "steps"},
                },
                "request": {"method": "POST", "url": "Observation"},
            }
        )
    response = client.post(
        "", json=_transaction(*entries), headers={**FHIR, "Prefer": "return=minimal"}
    )
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()["entry"]) == 1000
    found = client.get("Patient", params={"identifier": f"urn:test:tx|{mrn}", "_summary": "count"})
    assert found.json()["total"] == 500


def test_batch_entries_are_independent(client: httpx.Client) -> None:
    mrn = uuid.uuid4().hex
    bundle = _transaction(
        {"resource": _patient(mrn), "request": {"method": "POST", "url": "Patient"}},
        {
            "resource": {"resourceType": "Patient", "gender": "robot"},
            "request": {"method": "POST", "url": "Patient"},
        },
        {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
        kind="batch",
    )
    body = client.post("", json=bundle, headers=FHIR).json()
    assert body["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses[0] == "201 Created"
    assert statuses[1] == "400"
    assert statuses[2] == "404"
    assert body["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    found = client.get("Patient", params={"identifier": f"urn:test:tx|{mrn}"}).json()
    assert found["total"] == 1


def test_bundle_of_wrong_type_is_400(client: httpx.Client) -> None:
    response = client.post("", json={"resourceType": "Bundle", "type": "collection"}, headers=FHIR)
    assert response.status_code == 400
    assert "Bundle.type" in response.text


def test_batch_read_with_parameters_reads_that_resource(client: httpx.Client) -> None:
    pid = client.post("Patient", json=_patient(uuid.uuid4().hex), headers=FHIR).json()["id"]
    bundle = _transaction(
        {"request": {"method": "GET", "url": f"Patient/{pid}?_summary=true"}},
        {"request": {"method": "GET", "url": f"Patient/{pid}/_history/1?_elements=name"}},
        kind="batch",
    )
    body = client.post("", json=bundle, headers=FHIR).json()
    first, second = (e["resource"] for e in body["entry"])
    assert first["resourceType"] == "Patient" and first["id"] == pid
    assert second["resourceType"] == "Patient" and second["name"] == [{"family": "Nakamura"}]
    assert "identifier" not in second

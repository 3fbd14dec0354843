"""Bad input gets a 4xx OperationOutcome that says what and where, and stores nothing."""

from __future__ import annotations

import uuid

import httpx
import pytest

FHIR = {"Content-Type": "application/fhir+json"}


def _count(client: httpx.Client, resource_type: str, marker: str) -> int:
    found = client.get(resource_type, params={"identifier": f"urn:test:bad|{marker}"}).json()
    return int(found["total"])


def _patient(marker: str, **extra: object) -> dict[str, object]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:bad", "value": marker}],
        **extra,
    }


CASES = [
    pytest.param(b'{"resourceType": "Patient",', 400, "", id="truncated-json"),
    pytest.param(b"not json at all", 400, "", id="not-json"),
    pytest.param(b"[]", 400, "", id="array-body"),
    pytest.param(
        b'{"resourceType": "Observation", "status": "final"}', 400, "", id="type-mismatch"
    ),
    pytest.param(
        b'{"resourceType": "Patient", "gender": "robot"}', 400, "Patient.gender", id="robot-gender"
    ),
    pytest.param(b'{"resourceType": "Patient", "name": []}', 400, "Patient.name", id="empty-array"),
    pytest.param(
        b'{"resourceType": "Patient", "shoeSize": 11}', 400, "shoeSize", id="unknown-element"
    ),
    pytest.param(
        b'{"resourceType": "Patient", "active": "yes"}', 400, "Patient.active", id="wrong-type"
    ),
    pytest.param(
        b'{"resourceType": "Patient", "birthDate": "1980-13-45"}',
        400,
        "Patient.birthDate",
        id="bad-date",
    ),
    pytest.param(
        b'{"resourceType": "Patient", "name": [{"family": "a\\u0000b"}]}', 400, "", id="nul-char"
    ),
    pytest.param(
        b'{"resourceType": "Patient", "active": true, "active": false}', 400, "", id="duplicate-key"
    ),
]


@pytest.mark.parametrize(("body", "status", "where"), CASES)
def test_bad_create_is_rejected_with_location(
    client: httpx.Client, body: bytes, status: int, where: str
) -> None:
    before = client.get("Patient", params={"_summary": "count"}).json()["total"]
    response = client.post("Patient", content=body, headers=FHIR)
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    assert outcome["issue"][0]["diagnostics"]
    if where:
        located = " ".join(
            " ".join(i.get("expression", [])) + " " + i.get("diagnostics", "")
            for i in outcome["issue"]
        )
        assert where in located
    after = client.get("Patient", params={"_summary": "count"}).json()["total"]
    assert after == before


def test_robot_gender_lists_allowed_codes(client: httpx.Client) -> None:
    response = client.post("Patient", json={"resourceType": "Patient", "gender": "robot"})
    text = response.text
    assert response.status_code == 400
    assert "female" in text and "unknown" in text


def test_update_id_mismatch_is_400(client: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    response = client.put("Patient/abc", json=_patient(marker, id="xyz"), headers=FHIR)
    assert response.status_code == 400
    assert "xyz" in response.text
    assert client.get("Patient/abc").status_code == 404


def test_update_without_id_is_400(client: httpx.Client) -> None:
    response = client.put("Patient/abc2", json=_patient(uuid.uuid4().hex), headers=FHIR)
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("GET", "Spaceship/1", id="read"),
        pytest.param("GET", "Spaceship", id="search"),
        pytest.param("POST", "Spaceship", id="create"),
    ],
)
def test_unknown_resource_type_is_404(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path, json={"resourceType": "Spaceship"}, headers=FHIR)
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


def test_wrong_content_type_is_415(client: httpx.Client) -> None:
    response = client.post(
        "Patient", content=b"<Patient/>", headers={"Content-Type": "application/fhir+xml"}
    )
    assert response.status_code == 415
    assert response.json()["resourceType"] == "OperationOutcome"


def test_oversized_body_is_413(client: httpx.Client) -> None:
    big = b'{"resourceType":"Patient","text":"' + b"x" * (9 * 1024 * 1024) + b'"}'
    response = client.post("Patient", content=big, headers=FHIR)
    assert response.status_code == 413
    assert response.json()["resourceType"] == "OperationOutcome"


def test_unknown_endpoint_and_method_give_outcomes(client: httpx.Client) -> None:
    missing = client.get("Patient/1/2/3/4")
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"
    wrong = client.request("PATCH", "Patient", json=[])
    assert wrong.status_code == 405
    assert wrong.json()["resourceType"] == "OperationOutcome"


def test_read_of_unknown_id_is_404_and_bad_id_is_400(client: httpx.Client) -> None:
    assert client.get("Patient/does-not-exist").status_code == 404
    assert client.get("Patient/" + "x" * 65).status_code == 400


@pytest.mark.parametrize(
    "query",
    [
        pytest.param({"birthdate": "notadate"}, id="bad-date"),
        pytest.param({"_count": "-1"}, id="negative-count"),
        pytest.param({"_sort": "shoe-size"}, id="bad-sort"),
        pytest.param({"_summary": "everything"}, id="bad-summary"),
        pytest.param({"gender:sideways": "female"}, id="bad-modifier"),
    ],
)
def test_malformed_search_is_400_naming_the_parameter(
    client: httpx.Client, query: dict[str, str]
) -> None:
    response = client.get("Patient", params=query)
    assert response.status_code == 400, response.text
    name = next(iter(query)).split(":")[0]
    assert name in response.text


def test_unknown_search_parameter_fails_or_warns_when_lenient(client: httpx.Client) -> None:
    lenient = client.get(
        "Patient", params={"shoe-size": "11"}, headers={"Prefer": "handling=lenient"}
    )
    assert lenient.status_code == 200
    outcome = [e for e in lenient.json().get("entry", []) if e["search"]["mode"] == "outcome"]
    assert outcome and "shoe-size" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    assert client.get("Patient", params={"shoe-size": "11"}).status_code == 400  # the default
    strict = client.get(
        "Patient", params={"shoe-size": "11"}, headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400

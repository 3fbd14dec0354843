"""Formats and FHIR versions over real HTTP: JSON only (406 for XML and Turtle), R4 by
default and R4B when asked with the fhirVersion MIME parameter, `_pretty`, and the headers
every response carries (X-Request-Id, X-Content-Type-Options)."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

FHIR = {"Content-Type": "application/fhir+json"}


def assert_outcome(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    text = json.dumps(body)
    for word in words:
        assert word in text, text


@pytest.fixture(scope="module")
def patient_id(client: httpx.Client) -> str:
    created = client.post("Patient", json={"resourceType": "Patient"}, headers=FHIR)
    assert created.status_code == 201
    return str(created.json()["id"])


@pytest.mark.parametrize(
    "accept",
    [
        "application/fhir+xml",
        "application/xml",
        "text/xml",
        "application/xml+fhir",
        "text/turtle",
        "application/fhir+turtle",
        "application/fhir+xml; fhirVersion=4.0",
        "application/fhir+xml, text/turtle;q=0.5",
        "application/fhir+json;q=0, application/fhir+xml",
    ],
)
@pytest.mark.parametrize("path", ["metadata", "Patient", "Patient/{id}"])
def test_accept_xml_or_turtle_is_406(
    client: httpx.Client, patient_id: str, accept: str, path: str
) -> None:
    response = client.get(path.format(id=patient_id), headers={"Accept": accept})
    assert_outcome(response, 406, "JSON only")


@pytest.mark.parametrize(
    "value", ["xml", "text/xml", "application/xml", "application/fhir+xml", "ttl", "turtle",
              "text/turtle", "html", "csv"],
)  # fmt: skip
def test_format_other_than_json_is_406(client: httpx.Client, patient_id: str, value: str) -> None:
    response = client.get(f"Patient/{patient_id}", params={"_format": value})
    assert_outcome(response, 406, "_format", "JSON only")


def test_406_changes_nothing(client: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": marker}]}
    response = client.post("Patient", json=body, headers={**FHIR, "Accept": "application/fhir+xml"})
    assert_outcome(response, 406)
    found = client.get("Patient", params={"identifier": f"urn:t|{marker}"}).json()
    assert found["total"] == 0


@pytest.mark.parametrize(
    "query",
    [
        "_format=json",
        "_format=application/json",
        "_format=application%2Ffhir%2Bjson",
        "_format=application/fhir+json",  # the `+` arrives as a space
        "_format=application/json+fhir",
    ],
)
def test_format_json_spellings_work(client: httpx.Client, patient_id: str, query: str) -> None:
    response = client.get(f"Patient/{patient_id}?{query}")
    assert response.status_code == 200, response.text
    assert response.json()["id"] == patient_id


@pytest.mark.parametrize(
    "accept",
    [
        "application/json",
        "application/fhir+json",
        "application/json+fhir",
        "*/*",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "application/fhir+xml;q=0.9, application/fhir+json",
        "text/plain",
        "no such thing",
    ],
)
def test_accept_json_or_anything_is_served_json(
    client: httpx.Client, patient_id: str, accept: str
) -> None:
    response = client.get(f"Patient/{patient_id}", headers={"Accept": accept})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == patient_id


def test_format_overrides_accept(client: httpx.Client, patient_id: str) -> None:
    response = client.get(
        f"Patient/{patient_id}",
        params={"_format": "json"},
        headers={"Accept": "application/fhir+xml"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "accept",
    [
        "application/fhir+json; fhirVersion=3.0",
        "application/fhir+json; fhirVersion=5.0",
        "application/fhir+json; fhirVersion=4.1",
        "application/json; fhirVersion=banana",
    ],
)
def test_unsupported_fhir_version_is_406(client: httpx.Client, accept: str) -> None:
    response = client.get("metadata", headers={"Accept": accept})
    assert_outcome(response, 406, "fhirVersion", "4.0", "4.3")


def test_first_supported_version_in_accept_wins(client: httpx.Client) -> None:
    accept = "application/fhir+json; fhirVersion=5.0, application/fhir+json; fhirVersion=4.3;q=0.5"
    response = client.get("metadata", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.json()["fhirVersion"] == "4.3.0"


def test_format_can_carry_the_version(client: httpx.Client) -> None:
    response = client.get("metadata", params={"_format": "application/fhir+json;fhirVersion=4.3"})
    assert response.json()["fhirVersion"] == "4.3.0"


def test_body_content_type_version_is_answered_in_kind(client: httpx.Client) -> None:
    response = client.post(
        "Patient",
        json={"resourceType": "Patient"},
        headers={"Content-Type": "application/fhir+json; fhirVersion=4.3"},
    )
    assert response.status_code == 201, response.text
    assert "fhirVersion=4.3" in response.headers["Content-Type"]


def test_body_in_an_unsupported_version_is_415_and_stores_nothing(client: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": marker}]}
    response = client.post(
        "Patient",
        json=body,
        headers={"Content-Type": "application/fhir+json; fhirVersion=3.0"},
    )
    assert_outcome(response, 415, "fhirVersion")
    assert client.get("Patient", params={"identifier": f"urn:t|{marker}"}).json()["total"] == 0


@pytest.mark.parametrize(
    ("path", "status"),
    [("Patient/{id}", 200), ("Patient/nope-{id}", 404), ("Patient?_count=1", 200)],
)
def test_content_type_names_the_version_on_answers_and_errors(
    client: httpx.Client, patient_id: str, path: str, status: int
) -> None:
    response = client.get(path.format(id=patient_id))
    assert response.status_code == status
    assert response.headers["Content-Type"] == (
        "application/fhir+json; fhirVersion=4.0; charset=utf-8"
    )


def test_pretty_prints_the_same_json(client: httpx.Client, patient_id: str) -> None:
    compact = client.get(f"Patient/{patient_id}")
    pretty = client.get(f"Patient/{patient_id}", params={"_pretty": "true"})
    assert pretty.status_code == 200
    assert b"\n" not in compact.content.strip()
    assert pretty.content.startswith(b'{\n  "resourceType": "Patient"')
    assert pretty.json() == compact.json()
    bundle = client.get("Patient", params={"_id": patient_id, "_pretty": "true"})
    assert b'\n    {\n      "fullUrl"' in bundle.content


def test_pretty_keeps_decimals_exact(client: httpx.Client) -> None:
    raw = (
        b'{"resourceType":"Observation","status":"final","code":{"text":"w"},'
        b'"valueQuantity":{"value":1.50}}'
    )
    created = client.post("Observation", content=raw, headers=FHIR).json()
    pretty = client.get(f"Observation/{created['id']}", params={"_pretty": "true"})
    assert b'"value": 1.50' in pretty.content


@pytest.mark.parametrize("path", ["metadata", "Patient/unknown-x", "Nope", "../outside", "$nope"])
def test_every_response_has_nosniff_and_a_request_id(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert len(response.headers["X-Request-Id"]) >= 16
    again = client.get(path)
    assert again.headers["X-Request-Id"] != response.headers["X-Request-Id"]


def test_a_406_has_the_headers_too(client: httpx.Client) -> None:
    response = client.get("metadata", headers={"Accept": "text/xml", "X-Request-Id": "abc-1"})
    assert response.status_code == 406
    assert response.headers["X-Request-Id"] == "abc-1"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("sent", ["abc-123", "2f1c.9e:trace_7", "A" * 64])
def test_a_sane_request_id_is_echoed(client: httpx.Client, sent: str) -> None:
    response = client.get("metadata", headers={"X-Request-Id": sent})
    assert response.headers["X-Request-Id"] == sent


@pytest.mark.parametrize("sent", ["has space", "A" * 65, "semi;colon", "new\\nline", ""])
def test_an_insane_request_id_is_replaced(client: httpx.Client, sent: str) -> None:
    response = client.get("metadata", headers={"X-Request-Id": sent})
    got = response.headers["X-Request-Id"]
    assert got != sent
    assert len(got) == 32 and all(c in "0123456789abcdef" for c in got)


def test_headers_outside_fhir_too(base: str) -> None:
    response = httpx.get(base.removesuffix("/fhir") + "/nowhere")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Request-Id"]


@pytest.mark.parametrize("query", ["_format=json", "_pretty=true", "_format=json&_pretty=false"])
def test_format_parameters_never_make_a_create_conditional(
    client: httpx.Client, query: str
) -> None:
    body = {"resourceType": "Patient", "gender": "unknown"}
    first = client.post(f"Patient?{query}", json=body, headers=FHIR)
    assert first.status_code == 201, first.text
    second = client.post(f"Patient?{query}", json=body, headers=FHIR)
    assert second.status_code == 201, second.text
    assert first.json()["id"] != second.json()["id"]

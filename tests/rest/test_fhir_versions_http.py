"""HL7's published R4 examples of the care-management types over real HTTP, and the
CapabilityStatement as an R4 client must see it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cmfhir.config import Settings
from cmfhir.errors import InvalidResource
from cmfhir.resources.fhir_versions import (
    R4,
    R4B,
    restrict_capability_statement,
    served_types,
)
from cmfhir.resources.version_validation import validate_for_version

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "tests" / "data" / "r4-examples").glob("*.json"))
R4_JSON = "application/fhir+json; fhirVersion=4.0"


@pytest.fixture(scope="module")
def r4_client(settings: Settings, start_server: type) -> Iterator[httpx.Client]:
    """HL7's examples refer to resources that are not on this server (Patient/example…):
    what is tested here is their content under R4, so references are not checked."""
    unchecked = settings.model_copy(update={"enforce_referential_integrity_on_write": False})
    with start_server(unchecked) as server, httpx.Client(base_url=server.base, timeout=60) as http:
        yield http


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_an_r4_example_is_created(r4_client: httpx.Client, path: Path) -> None:
    client = r4_client
    resource: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    resource.pop("id", None)
    kind = resource["resourceType"]
    headers = {"Content-Type": R4_JSON, "Accept": R4_JSON}

    created = client.post(kind, content=json.dumps(resource), headers=headers)

    assert created.status_code == 201, created.text
    stored = client.get(created.headers["Location"].split("/fhir/", 1)[1], headers=headers)
    assert stored.status_code == 200
    body = stored.json()
    assert body["resourceType"] == kind
    validate_for_version(body, R4)


def test_the_r4b_capability_statement_is_not_r4_and_its_r4_restriction_is(
    client: httpx.Client,
) -> None:
    """An R4 parser meets R4B-only type codes and 4.3.0 in an R4B CapabilityStatement."""
    response = client.get("metadata", headers={"Accept": "application/fhir+json; fhirVersion=4.3"})
    assert response.status_code == 200
    statement = response.json()
    assert statement["fhirVersion"] == "4.3.0"
    validate_for_version(statement, R4B)
    with pytest.raises(InvalidResource) as caught:
        validate_for_version(statement, R4)
    refused = {issue.diagnostics.split("'")[1] for issue in caught.value.issues}
    assert {"4.3.0", "SubscriptionTopic", "Citation"} <= refused

    restricted = restrict_capability_statement(statement, R4)
    validate_for_version(restricted, R4)
    assert restricted["fhirVersion"] == "4.0.1"
    listed = {entry["type"] for entry in restricted["rest"][0]["resource"]}
    assert listed == served_types(R4)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        pytest.param(None, 404, id="default-r4"),
        pytest.param("application/fhir+json; fhirVersion=4.0", 404, id="r4"),
        pytest.param("application/fhir+json; fhirVersion=4.3", 200, id="r4b"),
    ],
)
def test_a_type_of_r4b_only_is_served_only_in_r4b(
    client: httpx.Client, accept: str | None, expected: int
) -> None:
    headers = {"Accept": accept} if accept else {}
    searched = client.get("SubscriptionTopic", headers=headers)
    assert searched.status_code == expected, searched.text
    if expected == 404:
        assert "SubscriptionTopic" in searched.json()["issue"][0]["diagnostics"]
    created = client.post(
        "SubscriptionTopic",
        json={
            "resourceType": "SubscriptionTopic",
            "url": "https://example.org/t",
            "status": "draft",
        },
        headers={"Content-Type": accept or "application/fhir+json", **headers},
    )
    assert created.status_code == (201 if expected == 200 else 404), created.text


R4_ONLY_CODE = {
    "resourceType": "Questionnaire",
    "status": "draft",
    "subjectType": ["Patient", "MedicinalProduct"],
}


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        pytest.param(None, 201, id="default-r4"),
        pytest.param("application/fhir+json; fhirVersion=4.3", 400, id="r4b"),
    ],
)
def test_writes_are_validated_in_the_version_of_the_request(
    client: httpx.Client, accept: str | None, expected: int
) -> None:
    """`MedicinalProduct` is a resource type, so a subjectType code, in R4 only."""
    headers = {"Accept": accept, "Content-Type": accept} if accept else {}
    created = client.post("Questionnaire", json=R4_ONLY_CODE, headers=headers)
    assert created.status_code == expected, created.text
    validated = client.post("Questionnaire/$validate", json=R4_ONLY_CODE, headers=headers)
    assert validated.status_code == 200, validated.text
    severities = {issue["severity"] for issue in validated.json()["issue"]}
    assert ("error" in severities) == (expected == 400)


def test_validate_answers_for_a_type_that_is_never_stored(client: httpx.Client) -> None:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational"}],
    }
    validated = client.post("OperationOutcome/$validate", json=body)
    assert validated.status_code == 200, validated.text
    errors = [issue for issue in validated.json()["issue"] if issue["severity"] == "error"]
    assert [issue["code"] for issue in errors] == ["not-supported"], validated.text

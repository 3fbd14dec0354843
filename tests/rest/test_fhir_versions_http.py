"""HL7's published R4 examples of the care-management types over real HTTP, and the
CapabilityStatement as an R4 client must see it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

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


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_an_r4_example_is_created(client: httpx.Client, path: Path) -> None:
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

"""The CapabilityStatement is generated from the server's registry."""

from __future__ import annotations

import httpx
import pytest

CARE_MANAGEMENT_TYPES = [
    "Patient", "Practitioner", "PractitionerRole", "Organization", "RelatedPerson",
    "EpisodeOfCare", "CareTeam", "CarePlan", "Goal", "Questionnaire", "QuestionnaireResponse",
    "Communication", "Encounter", "Appointment", "MedicationStatement", "MedicationRequest",
    "MedicationDispense", "Condition", "Observation", "Procedure", "ServiceRequest", "Task",
    "DetectedIssue", "Consent", "Provenance", "AuditEvent", "DocumentReference", "Group",
]  # fmt: skip


@pytest.fixture(scope="module")
def statement(client: httpx.Client) -> dict[str, object]:
    response = client.get("metadata")
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


def test_capability_statement_header(statement: dict[str, object]) -> None:
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"


@pytest.mark.parametrize("resource_type", CARE_MANAGEMENT_TYPES)
def test_care_management_type_listed_with_search_params(
    statement: dict[str, object], resource_type: str
) -> None:
    rest = statement["rest"][0]  # type: ignore[index]
    entry = next(r for r in rest["resource"] if r["type"] == resource_type)
    codes = {i["code"] for i in entry["interaction"]}
    if resource_type == "AuditEvent":  # recorded by the server alone (docs/security.md)
        assert codes == {"read", "vread", "search-type", "history-instance", "history-type"}
    else:
        assert {"read", "vread", "update", "patch", "delete", "create", "search-type"} <= codes
    names = {p["name"] for p in entry["searchParam"]}
    assert {"_id", "_lastUpdated"} <= names
    assert len(names) > 3


def test_patient_search_params_come_from_the_registry(statement: dict[str, object]) -> None:
    rest = statement["rest"][0]  # type: ignore[index]
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    names = {p["name"] for p in patient["searchParam"]}
    assert {"identifier", "name", "family", "birthdate", "gender", "general-practitioner"} <= names
    assert len(rest["resource"]) > 100


@pytest.mark.parametrize(
    ("accept", "listed", "absent"),
    [
        (None, {"Patient", "Media", "DeviceUseStatement"}, {"SubscriptionTopic", "Citation"}),
        ("application/fhir+json; fhirVersion=4.3", {"Patient", "SubscriptionTopic"}, set()),
    ],
)
def test_metadata_lists_the_types_of_the_negotiated_version(
    client: httpx.Client, accept: str | None, listed: set[str], absent: set[str]
) -> None:
    statement = client.get("metadata", headers={"Accept": accept} if accept else {}).json()
    types = {r["type"] for r in statement["rest"][0]["resource"]}
    assert listed <= types
    assert not absent & types


@pytest.mark.parametrize(
    ("accept", "version"),
    [
        (None, "4.0.1"),
        ("application/fhir+json", "4.0.1"),
        ("application/fhir+json; fhirVersion=4.0", "4.0.1"),
        ("application/fhir+json; fhirVersion=4.3", "4.3.0"),
        ("application/fhir+json;fhirVersion=4.3.0", "4.3.0"),
        ("application/json; fhirVersion=4.3", "4.3.0"),
    ],
)
def test_metadata_declares_the_negotiated_version(
    client: httpx.Client, accept: str | None, version: str
) -> None:
    headers = {"Accept": accept} if accept else {}
    response = client.get("metadata", headers=headers)
    assert response.status_code == 200
    assert response.json()["fhirVersion"] == version
    short = version.rsplit(".", 1)[0]
    assert response.headers["Content-Type"].startswith(
        f"application/fhir+json; fhirVersion={short}"
    )


def test_operations_are_listed(statement: dict[str, object]) -> None:
    rest = statement["rest"][0]  # type: ignore[index]
    system = {o["name"]: o["definition"] for o in rest["operation"]}
    assert system == {
        "versions": "https://cmfhir.org/fhir/OperationDefinition/versions",
        "export": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
        "import": "https://cmfhir.org/fhir/OperationDefinition/import",
    }
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    listed = {o["name"] for o in patient["operation"]}
    assert {"validate", "meta", "meta-add", "meta-delete"} <= listed
    assert "versions" not in listed
    assert patient["conditionalRead"] == "full-support"

"""The HL7 validator's core rules beyond structure: contained resources and local references,
reference target types, extensions, whitespace-only strings, types that are never stored."""

from __future__ import annotations

from typing import Any

import pytest

from cmfhir.errors import InvalidResource, Issue, Unprocessable
from cmfhir.resources import validate_resource

ORG = {"resourceType": "Organization", "id": "o", "name": "Clinic"}


def issues_of(resource: dict[str, Any]) -> list[Issue]:
    with pytest.raises(InvalidResource) as caught:
        validate_resource(resource)
    return caught.value.issues


def patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **extra}


# (resource, {location: text}) — every issue, in order
REFUSED = [
    pytest.param(
        patient(
            contained=[{**ORG, "contained": [{"resourceType": "Patient", "id": "p"}]}],
            managingOrganization={"reference": "#o"},
        ),
        {"Patient.contained[0].contained": "dom-2"},
        id="dom-2-nested-contained",
    ),
    pytest.param(
        patient(contained=[ORG]),
        {
            "Patient.contained[0]": "dom-3: If the resource is contained in another resource, "
            "it SHALL be referred to"
        },
        id="dom-3-not-referenced",
    ),
    pytest.param(
        patient(
            contained=[{**ORG, "meta": {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00Z"}}],
            managingOrganization={"reference": "#o"},
        ),
        {
            "Patient.contained[0].meta.versionId": "dom-4",
            "Patient.contained[0].meta.lastUpdated": "dom-4",
        },
        id="dom-4-version-in-contained",
    ),
    pytest.param(
        patient(contained=[ORG, ORG], managingOrganization={"reference": "#o"}),
        {"Patient.contained[1].id": "already used by contained[0]"},
        id="duplicate-contained-id",
    ),
    pytest.param(
        patient(contained=[{"resourceType": "Organization", "name": "x"}]),
        {"Patient.contained[0]": "a contained resource needs an id"},
        id="contained-without-id",
    ),
    pytest.param(
        patient(managingOrganization={"reference": "#nowhere"}),
        {"Patient.managingOrganization.reference": "ref-1: SHALL have a contained resource"},
        id="ref-1-unresolved",
    ),
    pytest.param(
        patient(managingOrganization={"reference": "#"}),
        {"Patient.managingOrganization.reference": "'#' refers to the container"},
        id="ref-1-hash-outside-contained",
    ),
    pytest.param(
        patient(managingOrganization={"reference": "Patient/1"}),
        {
            "Patient.managingOrganization.reference": "a reference to Patient is not allowed "
            "here (allowed: Organization)"
        },
        id="target-relative",
    ),
    pytest.param(
        patient(
            managingOrganization={"reference": "https://ehr.example.org/fhir/Patient/1/_history/2"}
        ),
        {"Patient.managingOrganization.reference": "a reference to Patient is not allowed"},
        id="target-absolute",
    ),
    pytest.param(
        patient(
            managingOrganization={
                "reference": "urn:uuid:0d1c1a52-6a43-4d2f-9b1b-2f0b8b3e0a11",
                "type": "Patient",
            }
        ),
        {"Patient.managingOrganization.type": "a reference to Patient is not allowed"},
        id="target-type-element",
    ),
    pytest.param(
        patient(managingOrganization={"reference": "Patient?identifier=x|1"}),
        {"Patient.managingOrganization.reference": "a reference to Patient is not allowed"},
        id="target-conditional",
    ),
    pytest.param(
        patient(
            contained=[{"resourceType": "Patient", "id": "p"}],
            managingOrganization={"reference": "#p"},
        ),
        {"Patient.managingOrganization.reference": "a reference to Patient is not allowed"},
        id="target-contained",
    ),
    pytest.param(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Encounter/1"},
        },
        {"Observation.subject.reference": "(allowed: Device, Group, Location, Medication,"},
        id="target-observation-subject",
    ),
    pytest.param(
        {
            "resourceType": "Condition",
            "subject": {"reference": "Patient/1"},
            "note": [{"authorReference": {"reference": "Observation/1"}, "text": "x"}],
        },
        {
            "Condition.note[0].authorReference.reference": "a reference to Observation is not "
            "allowed"
        },
        id="target-in-datatype-choice",
    ),
    pytest.param(
        patient(
            extension=[
                {
                    "url": "http://example.org/a",
                    "valueString": "x",
                    "extension": [{"url": "b", "valueString": "y"}],
                }
            ]
        ),
        {"Patient.extension[0]": "ext-1: Must have either extensions or value[x], not both"},
        id="ext-1-both",
    ),
    pytest.param(
        patient(extension=[{"url": "http://example.org/a"}]),
        {"Patient.extension[0]": "ext-1: an extension needs a value[x] or sub-extensions"},
        id="ext-1-neither",
    ),
    pytest.param(
        patient(extension=[{"valueString": "x"}]),
        {"Patient.extension[0].url": "an extension needs a url"},
        id="extension-without-url",
    ),
    pytest.param(
        patient(extension=[{"url": "race", "valueString": "x"}]),
        {"Patient.extension[0].url": "'race' is not an absolute URL"},
        id="extension-relative-url",
    ),
    pytest.param(
        patient(
            _birthDate={
                "extension": [
                    {
                        "url": "http://example.org/a",
                        "valueString": "x",
                        "extension": [{"url": "b", "valueString": "y"}],
                    }
                ]
            }
        ),
        {"Patient.birthDate.extension[0]": "ext-1"},
        id="ext-1-on-primitive",
    ),
    pytest.param(
        patient(name=[{"id": "n1"}]),
        {"Patient.name[0]": "ele-1: All FHIR elements must have a @value or children"},
        id="ele-1-only-an-id",
    ),
    pytest.param(
        patient(name=[{"family": " \t\n"}]),
        {"Patient.name[0].family": "whitespace-only strings are not allowed"},
        id="whitespace-only-string",
    ),
    pytest.param(
        patient(name=[{"given": ["Ann", "  "]}]),
        {"Patient.name[0].given[1]": "whitespace-only strings are not allowed"},
        id="whitespace-only-in-array",
    ),
]


@pytest.mark.parametrize(("resource", "expected"), REFUSED)
def test_refused(resource: dict[str, Any], expected: dict[str, str]) -> None:
    issues = issues_of(resource)
    assert [i.expression[0] for i in issues] == list(expected), [i.diagnostics for i in issues]
    for issue, text in zip(issues, expected.values(), strict=True):
        assert text in issue.diagnostics


ACCEPTED = [
    pytest.param(
        patient(contained=[ORG], managingOrganization={"reference": "#o"}),
        id="contained-referenced",
    ),
    pytest.param(
        patient(
            contained=[ORG, {"resourceType": "Organization", "id": "p", "name": "Parent"}],
            managingOrganization={"reference": "#o"},
            generalPractitioner=[{"reference": "#p"}],
        ),
        id="two-contained",
    ),
    pytest.param(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "contained": [
                {
                    "resourceType": "Organization",
                    "id": "o",
                    "name": "A",
                    "partOf": {"reference": "#p"},
                },
                {"resourceType": "Organization", "id": "p", "name": "B"},
            ],
            "performer": [{"reference": "#o"}],
        },
        id="dom-3-referenced-from-another-contained",
    ),
    pytest.param(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "contained": [
                {
                    "resourceType": "Provenance",
                    "id": "pv",
                    "target": [{"reference": "#"}],
                    "recorded": "2024-01-01T00:00:00Z",
                    "agent": [{"who": {"display": "A"}}],
                },
            ],
        },
        id="dom-3-contained-refers-to-container",
    ),
    pytest.param(
        {
            "resourceType": "Questionnaire",
            "status": "active",
            "contained": [{"resourceType": "ValueSet", "id": "vs", "status": "active"}],
            "item": [{"linkId": "1", "type": "choice", "answerValueSet": "#vs"}],
        },
        id="dom-3-canonical-reference",
    ),
    pytest.param(
        patient(managingOrganization={"reference": "Organization/1"}), id="target-allowed"
    ),
    pytest.param(
        patient(managingOrganization={"reference": "https://x.org/fhir/Organization/1"}),
        id="target-absolute-allowed",
    ),
    pytest.param(
        patient(
            managingOrganization={"reference": "urn:uuid:0d1c1a52-6a43-4d2f-9b1b-2f0b8b3e0a11"}
        ),
        id="target-urn-unknown",
    ),
    pytest.param(
        patient(managingOrganization={"identifier": {"value": "1"}}), id="target-identifier-only"
    ),
    pytest.param(
        patient(managingOrganization={"reference": "https://example.org/Word/abc"}),
        id="absolute-url-not-fhir",
    ),
    pytest.param(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "focus": [{"reference": "Medication/1"}],
        },
        id="target-any-resource",
    ),
    pytest.param(
        patient(
            extension=[
                {
                    "url": "http://example.org/race",
                    "extension": [{"url": "ombCategory", "valueString": "x"}],
                }
            ]
        ),
        id="complex-extension-with-plain-names",
    ),
    pytest.param(patient(name=[{"family": " Smith "}]), id="string-with-surrounding-spaces"),
    pytest.param(
        patient(
            modifierExtension=[
                {
                    "url": "http://example.org/m",
                    "extension": [{"url": "part", "valueBoolean": True}],
                }
            ]
        ),
        id="complex-modifier-extension",
    ),
]


@pytest.mark.parametrize("resource", ACCEPTED)
def test_accepted(resource: dict[str, Any]) -> None:
    validate_resource(resource)


@pytest.mark.parametrize("resource_type", ["Parameters", "OperationOutcome"])
def test_operation_types_are_not_stored_but_validate_as_bodies(resource_type: str) -> None:
    body: dict[str, Any] = {"resourceType": resource_type}
    if resource_type == "OperationOutcome":
        body["issue"] = [{"severity": "error", "code": "invalid"}]
    with pytest.raises(Unprocessable) as caught:
        validate_resource(body)
    assert caught.value.status == 422
    assert caught.value.issues[0].code == "not-supported"
    assert f"{resource_type} is not stored" in caught.value.diagnostics
    validate_resource(body, stored=False)


def test_parameters_body_is_still_validated() -> None:
    with pytest.raises(InvalidResource):
        validate_resource(
            {"resourceType": "Parameters", "parameter": [{"valueString": "x"}]}, stored=False
        )


def test_bundle_entries_are_roots_of_their_own_for_local_references() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": patient(contained=[ORG], managingOrganization={"reference": "#o"})},
            {"resource": patient(managingOrganization={"reference": "#o"})},
        ],
    }
    with pytest.raises(InvalidResource) as caught:
        validate_resource(bundle)
    assert [i.expression for i in caught.value.issues] == [
        ("Bundle.entry[1].resource.managingOrganization.reference",)
    ]

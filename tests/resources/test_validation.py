"""validate_resource: every problem reported, each at the location a client can find."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from cmfhir.errors import InvalidResource, Issue
from cmfhir.resources import (
    RESOURCE_TYPES,
    ResourceValidator,
    load_required_bindings,
    parse_json,
    validate_resource,
)
from cmfhir.resources._elements import COMPLEX, PRIMITIVE, ElementTables, Table

ROOT = Path(__file__).parents[2]
SYNTHEA = sorted((ROOT / "tests" / "data" / "synthea").glob("*.json"))
BINDINGS = ROOT / "profiles" / "required-bindings.json"

OBS = {"resourceType": "Observation", "status": "final", "code": {"text": "BMI"}}
MEDREQ = {
    "resourceType": "MedicationRequest",
    "status": "active",
    "intent": "order",
    "subject": {"reference": "Patient/1"},
    "medicationCodeableConcept": {"text": "metformin"},
}


def issues_of(resource: Any, **kwargs: Any) -> list[Issue]:
    with pytest.raises(InvalidResource) as caught:
        validate_resource(resource, **kwargs)
    assert caught.value.status == 400
    return caught.value.issues


def where(issues: list[Issue]) -> list[str]:
    return [issue.expression[0] if issue.expression else "" for issue in issues]


def synthea_entries() -> list[Any]:
    params = []
    for path in SYNTHEA:
        bundle = parse_json(path.read_bytes())
        for index, entry in enumerate(bundle["entry"]):
            resource = entry["resource"]
            name = f"{path.name.split('_')[0]}-{index}-{resource['resourceType']}"
            params.append(pytest.param(resource, id=name))
    return params


# (resource, {location: text the diagnostics contain}, issue code of the first location)
INVALID = [
    pytest.param(
        {"resourceType": "Patient", "gender": "robot"},
        {"Patient.gender": "'robot' is not in the required value set"},
        "code-invalid",
        id="binding-gender",
    ),
    pytest.param(
        {"resourceType": "Patient", "contact": [{"gender": "robot"}]},
        {"Patient.contact[0].gender": "allowed: female, male, other, unknown"},
        "code-invalid",
        id="binding-in-backbone",
    ),
    pytest.param(
        {"resourceType": "Patient", "name": [{"use": "nick", "family": "Doe"}]},
        {"Patient.name[0].use": "allowed: anonymous, maiden, nickname, official, old"},
        "code-invalid",
        id="binding-on-datatype-HumanName",
    ),
    pytest.param(
        {"resourceType": "Patient", "telecom": [{"system": "tel", "value": "555"}]},
        {"Patient.telecom[0].system": "email, fax, other, pager, phone, sms, url"},
        "code-invalid",
        id="binding-on-datatype-ContactPoint",
    ),
    pytest.param(
        {"resourceType": "Patient", "identifier": [{"use": "primary", "value": "1"}]},
        {"Patient.identifier[0].use": "http://hl7.org/fhir/ValueSet/identifier-use"},
        "code-invalid",
        id="binding-on-datatype-Identifier",
    ),
    pytest.param(
        {"resourceType": "Patient", "address": [{"use": "house", "city": "Durham"}]},
        {"Patient.address[0].use": "billing, home, old, temp, work"},
        "code-invalid",
        id="binding-on-datatype-Address",
    ),
    pytest.param(
        {**OBS, "valueQuantity": {"value": Decimal("1.5"), "comparator": "~"}},
        {"Observation.valueQuantity.comparator": "allowed: <, <=, >, >="},
        "code-invalid",
        id="binding-on-datatype-Quantity-in-choice",
    ),
    pytest.param(
        {
            "resourceType": "Condition",
            "subject": {"reference": "Patient/1"},
            "onsetAge": {"value": 3, "comparator": "about"},
        },
        {"Condition.onsetAge.comparator": "allowed: <, <=, >, >="},
        "code-invalid",
        id="binding-on-Age-a-Quantity-profile",
    ),
    pytest.param(
        {
            "resourceType": "Patient",
            "text": {"status": "auto", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'},
        },
        {"Patient.text.status": "additional, empty, extensions, generated"},
        "code-invalid",
        id="binding-on-Narrative",
    ),
    pytest.param(
        {**MEDREQ, "dosageInstruction": [{"timing": {"repeat": {"dayOfWeek": ["mon", "xyz"]}}}]},
        {"MedicationRequest.dosageInstruction[0].timing.repeat.dayOfWeek[1]": "fri, mon, sat"},
        "code-invalid",
        id="binding-in-datatype-backbone-list",
    ),
    pytest.param(
        {
            "resourceType": "Questionnaire",
            "status": "draft",
            "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "2", "type": "x"}]}],
        },
        {"Questionnaire.item[0].item[0].type": "http://hl7.org/fhir/ValueSet/item-type"},
        "code-invalid",
        id="binding-in-recursive-backbone",
    ),
    pytest.param(
        {"resourceType": "Encounter", "status": "done", "class": {"code": "AMB"}},
        {"Encounter.status": "finished"},
        "code-invalid",
        id="binding-encounter-status",
    ),
    pytest.param(
        {
            "resourceType": "Patient",
            "contained": [{**OBS, "id": "o", "status": "done"}],
            "extension": [{"url": "http://example.org/bmi", "valueReference": {"reference": "#o"}}],
        },
        {"Patient.contained[0].status": "amended, cancelled, corrected"},
        "code-invalid",
        id="binding-in-contained",
    ),
    pytest.param(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": {"resourceType": "Patient", "gender": "robot"}}],
        },
        {"Bundle.entry[0].resource.gender": "'robot'"},
        "code-invalid",
        id="binding-in-bundle-entry",
    ),
    pytest.param(
        {"resourceType": "Bundle", "type": "batchy"},
        {"Bundle.type": "transaction"},
        "code-invalid",
        id="binding-bundle-type",
    ),
    pytest.param(
        {"resourceType": "Patient", "id": "a b"},
        {"Patient.id": "must be an id (1-64 characters"},
        "value",
        id="id-space",
    ),
    pytest.param(
        {"resourceType": "Patient", "id": "a" * 65},
        {"Patient.id": "must be an id"},
        "value",
        id="id-65-characters",
    ),
    pytest.param(
        {"resourceType": "Patient", "contained": [{"resourceType": "Patient", "id": "#1"}]},
        {"Patient.contained[0].id": "must be an id"},
        "value",
        id="id-contained",
    ),
    pytest.param(
        {"resourceType": "Patient", "meta": {"versionId": "1 2"}},
        {"Patient.meta.versionId": "must be an id"},
        "value",
        id="id-typed-element",
    ),
    pytest.param(
        {"resourceType": "Patient", "foo": 1},
        {"Patient.foo": "unknown element"},
        "structure",
        id="unknown-element",
    ),
    pytest.param(
        {"resourceType": "Patient", "name": [{"family": "Doe", "middle": "Q"}]},
        {"Patient.name[0].middle": "unknown element"},
        "structure",
        id="unknown-nested-element",
    ),
    pytest.param(
        {"resourceType": "Patient", "fhir_comments": ["hi"]},
        {"Patient.fhir_comments": "unknown element"},
        "structure",
        id="fhir-comments",
    ),
    pytest.param(
        {"resourceType": "Encounter", "status": "finished", "class_fhir": {"code": "AMB"}},
        {"Encounter.class_fhir": "unknown element"},
        "structure",
        id="python-field-name-not-json-name",
    ),
    pytest.param(
        {"resourceType": "Patient", "birthDate__ext": {"id": "1"}},
        {"Patient.birthDate__ext": "unknown element"},
        "structure",
        id="python-extension-field-name",
    ),
    pytest.param(
        {"resourceType": "Patient", "name": []},
        {"Patient.name": "empty arrays are not allowed"},
        "structure",
        id="empty-array",
    ),
    pytest.param(
        {"resourceType": "Patient", "maritalStatus": {}},
        {"Patient.maritalStatus": "empty objects are not allowed"},
        "structure",
        id="empty-object",
    ),
    pytest.param(
        {"resourceType": "Patient", "name": [{}]},
        {"Patient.name[0]": "empty objects are not allowed"},
        "structure",
        id="empty-object-in-array",
    ),
    pytest.param(
        {"resourceType": "Patient", "name": [{"given": ["Ann", ""]}]},
        {"Patient.name[0].given[1]": "empty strings are not allowed"},
        "value",
        id="empty-string",
    ),
    pytest.param(
        {"resourceType": "Patient", "name": [{"family": "Do\x00e"}]},
        {"Patient.name[0].family": "the NUL character is not allowed"},
        "value",
        id="nul-character",
    ),
    pytest.param(
        {"resourceType": "Patient", "gender": None},
        {"Patient.gender": "null is not allowed"},
        "structure",
        id="null-value",
    ),
    pytest.param(
        {"resourceType": "Patient", "name": [{"given": ["Ann", None]}]},
        {"Patient.name[0].given[1]": "null is only allowed where _given has a value"},
        "structure",
        id="null-in-primitive-array-without-extension",
    ),
    pytest.param(
        {"resourceType": "Patient", "name": [{"given": ["A", "B"], "_given": [None]}]},
        {"Patient.name[0].given": "given and _given must have the same length"},
        "structure",
        id="primitive-and-extension-arrays-misaligned",
    ),
    pytest.param(
        {"resourceType": "Patient", "active": "true"},
        {"Patient.active": "expected a JSON boolean (FHIR boolean), found a string"},
        "value",
        id="boolean-as-string",
    ),
    pytest.param(
        {"resourceType": "Patient", "multipleBirthInteger": "2"},
        {"Patient.multipleBirthInteger": "expected a JSON integer"},
        "value",
        id="integer-as-string",
    ),
    pytest.param(
        {"resourceType": "Patient", "multipleBirthInteger": Decimal("2.0")},
        {"Patient.multipleBirthInteger": "expected a JSON integer (FHIR integer)"},
        "value",
        id="integer-as-decimal",
    ),
    pytest.param(
        {**OBS, "valueQuantity": {"value": "1.5"}},
        {"Observation.valueQuantity.value": "expected a JSON number (FHIR decimal)"},
        "value",
        id="decimal-as-string",
    ),
    pytest.param(
        {"resourceType": "Patient", "name": [{"family": 7}]},
        {"Patient.name[0].family": "expected a JSON string (FHIR string), found the number 7"},
        "value",
        id="string-as-number",
    ),
    pytest.param(
        {"resourceType": "Patient", "managingOrganization": "Organization/1"},
        {"Patient.managingOrganization": "must be a JSON object"},
        "structure",
        id="reference-as-string",
    ),
    pytest.param(
        {"resourceType": "Patient", "name": {"family": "Doe"}},
        {"Patient.name": "must be a JSON array"},
        "structure",
        id="object-for-array",
    ),
    pytest.param(
        {"resourceType": "Patient", "gender": ["male"]},
        {"Patient.gender": "must be a single value, not an array"},
        "structure",
        id="array-for-single",
    ),
    pytest.param(
        {"resourceType": "Patient", "deceasedBoolean": True, "deceasedDateTime": "2020"},
        {"Patient.deceased": "deceased[x] takes one type"},
        "structure",
        id="choice-two-types",
    ),
    pytest.param(
        {**MEDREQ, "medicationCodeableConcept": None},
        {"MedicationRequest.medicationCodeableConcept": "null is not allowed"},
        "structure",
        id="choice-null",
    ),
    pytest.param(
        {key: value for key, value in MEDREQ.items() if key != "medicationCodeableConcept"},
        {"MedicationRequest.medication": "medication[x] is required"},
        "required",
        id="choice-required",
    ),
    pytest.param(
        {"resourceType": "Observation", "status": "final"},
        {"Observation.code": "required element is missing"},
        "required",
        id="required-complex",
    ),
    pytest.param(
        {"resourceType": "Observation", "code": {"text": "x"}},
        {"Observation.status": "required element is missing"},
        "required",
        id="required-primitive",
    ),
    pytest.param(
        {"resourceType": "Patient", "link": [{"type": "seealso"}]},
        {"Patient.link[0].other": "required element is missing"},
        "required",
        id="required-in-backbone",
    ),
    pytest.param(
        {"resourceType": "Patient", "birthDate": "1970-13-01"},
        {"Patient.birthDate": "not a valid FHIR date"},
        "value",
        id="date-format",
    ),
    pytest.param(
        {**OBS, "effectiveDateTime": "2020-01-01T10:00:00"},
        {"Observation.effectiveDateTime": "not a valid FHIR dateTime"},
        "value",
        id="dateTime-without-timezone",
    ),
    pytest.param(
        {"resourceType": "Patient", "multipleBirthInteger": 2**40},
        {"Patient.multipleBirthInteger": "less than or equal to 2147483647"},
        "value",
        id="integer-range",
    ),
    pytest.param(
        {"resourceType": "Patient", "gender": " male"},
        {"Patient.gender": "must be a code"},
        "value",
        id="code-whitespace",
    ),
    pytest.param(
        {"resourceType": "Patient", "implicitRules": "http://x y"},
        {"Patient.implicitRules": "must be a uri (no whitespace)"},
        "value",
        id="uri-whitespace",
    ),
    pytest.param(
        {"resourceType": "Binary", "contentType": "text/plain", "data": "!!!"},
        {"Binary.data": "must be base64 data"},
        "value",
        id="base64",
    ),
    pytest.param(
        {"resourceType": "Patient", "text": {"status": "generated", "div": "plain text"}},
        {"Patient.text.div": "must be an XHTML <div"},
        "value",
        id="narrative-not-xhtml",
    ),
    pytest.param(
        {"resourceType": "Patient", "_birthDate": {"extension": [{"url": 5}]}},
        {"Patient.birthDate.extension[0].url": "expected a JSON string (FHIR uri)"},
        "value",
        id="primitive-extension-nested",
    ),
    pytest.param(
        {"resourceType": "Patient", "_birthDate": {"color": "red"}},
        {"Patient.birthDate.color": "unknown element", "Patient.birthDate": "id or an extension"},
        "structure",
        id="primitive-extension-unknown",
    ),
    pytest.param(
        {"resourceType": "Patient", "contained": [{"id": "x"}]},
        {"Patient.contained[0]": "a resource needs a resourceType"},
        "structure",
        id="contained-without-type",
    ),
    pytest.param(
        {"resourceType": "Patient", "contained": [{"resourceType": "Robot"}]},
        {"Patient.contained[0]": "'Robot' is not a FHIR R4B resource type"},
        "invalid",
        id="contained-unknown-type",
    ),
    pytest.param(
        {"resourceType": "Patient", "contained": [{**OBS, "code": {}, "foo": 1}]},
        {
            "Patient.contained[0].code": "empty objects are not allowed",
            "Patient.contained[0].foo": "unknown element",
        },
        "structure",
        id="contained-several-problems",
    ),
    pytest.param(
        {
            "resourceType": "Patient",
            "gender": "robot",
            "active": 1,
            "name": [{"given": [""], "use": "nick"}],
            "birthDate": "yesterday",
        },
        {
            "Patient.gender": "'robot'",
            "Patient.active": "JSON boolean",
            "Patient.name[0].given[0]": "empty strings",
            "Patient.name[0].use": "'nick'",
            "Patient.birthDate": "not a valid FHIR date",
        },
        "code-invalid",
        id="every-problem-reported",
    ),
]


@pytest.mark.parametrize(("resource", "expected", "code"), INVALID)
def test_invalid_resource(resource: dict[str, Any], expected: dict[str, str], code: str) -> None:
    issues = issues_of(resource)
    assert where(issues) == list(expected)  # each problem once, in document order
    for issue, (location, text) in zip(issues, expected.items(), strict=True):
        assert issue.diagnostics.startswith(f"{location}: ")
        assert text in issue.diagnostics
    assert issues[0].code == code


@pytest.mark.parametrize(
    ("resource", "kwargs", "text"),
    [
        pytest.param([{"resourceType": "Patient"}], {}, "must be a JSON object", id="array"),
        pytest.param("Patient", {}, "must be a JSON object", id="string"),
        pytest.param({"id": "1"}, {}, "has no resourceType", id="no-resourceType"),
        pytest.param({"resourceType": 5}, {}, "has no resourceType", id="number-resourceType"),
        pytest.param({"resourceType": "Robot"}, {}, "'Robot' is not a FHIR R4B", id="unknown"),
        pytest.param({"resourceType": "Resource"}, {}, "not a FHIR R4B", id="abstract"),
        pytest.param(
            {"resourceType": "Patient"},
            {"expected_type": "Observation"},
            "resourceType is 'Patient' where 'Observation' is expected",
            id="expected-type",
        ),
    ],
)
def test_invalid_body(resource: Any, kwargs: dict[str, Any], text: str) -> None:
    issues = issues_of(resource, **kwargs)
    assert len(issues) == 1
    assert text in issues[0].diagnostics


VALID = [
    pytest.param({"resourceType": "Patient"}, id="minimal"),
    pytest.param({"resourceType": "Patient", "id": "A-1.b" + "c" * 59}, id="id-64-characters"),
    pytest.param(
        {"resourceType": "Patient", "gender": "female", "_gender": {"id": "g"}},
        id="primitive-with-extension",
    ),
    pytest.param(
        {
            "resourceType": "Patient",
            "_birthDate": {
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                        "valueCode": "unknown",
                    }
                ]
            },
        },
        id="primitive-extension-without-value",
    ),
    pytest.param(
        {
            "resourceType": "Patient",
            "name": [
                {
                    "given": ["Ann", None],
                    "_given": [None, {"extension": [{"url": "http://x", "valueString": "B"}]}],
                }
            ],
        },
        id="aligned-primitive-and-extension-arrays",
    ),
    pytest.param(
        {"resourceType": "Patient", "deceasedBoolean": False, "_deceasedBoolean": {"id": "d"}},
        id="choice-value-and-its-extension",
    ),
    pytest.param({**OBS, "valueQuantity": {"value": Decimal("1.50")}}, id="decimal"),
    pytest.param({**OBS, "valueQuantity": {"value": 2}}, id="integer-for-decimal"),
    pytest.param({"resourceType": "Encounter", "status": "planned", "class": {"code": "AMB"}}),
    pytest.param(MEDREQ, id="choice-present"),
    pytest.param(
        {"resourceType": "Binary", "contentType": "text/plain", "data": "aGVs\nbG8="},
        id="base64-with-newline",
    ),
]


@pytest.mark.parametrize("resource", VALID)
def test_valid_resource(resource: dict[str, Any]) -> None:
    validate_resource(resource)


@pytest.mark.parametrize("resource", synthea_entries())
def test_every_synthea_resource_is_valid(resource: dict[str, Any]) -> None:
    validate_resource(resource, expected_type=resource["resourceType"])


@pytest.mark.parametrize("path", SYNTHEA, ids=[p.name.split("_")[0] for p in SYNTHEA])
def test_synthea_transaction_bundle_is_valid(path: Path) -> None:
    validate_resource(parse_json(path.read_bytes()), expected_type="Bundle")


def test_synthea_patient_with_wrong_gender_names_the_allowed_codes() -> None:
    bundle = parse_json(SYNTHEA[0].read_bytes())
    patient = copy.deepcopy(bundle["entry"][0]["resource"])
    assert patient["resourceType"] == "Patient"
    patient["gender"] = "robot"
    (issue,) = issues_of(patient)
    assert issue.expression == ("Patient.gender",)
    assert issue.code == "code-invalid"
    for code in ("male", "female", "other", "unknown"):
        assert f" {code}" in issue.diagnostics


def test_invalid_resource_outcome_lists_every_issue() -> None:
    with pytest.raises(InvalidResource) as caught:
        validate_resource({"resourceType": "Patient", "gender": "robot", "active": "yes"})
    outcome = caught.value.outcome()
    assert outcome["resourceType"] == "OperationOutcome"
    assert [i["expression"] for i in outcome["issue"]] == [["Patient.gender"], ["Patient.active"]]
    assert "robot" not in caught.value.diagnostics  # the summary may be logged: no values


def test_validator_reads_bindings_from_the_given_profiles_dir(tmp_path: Path) -> None:
    bindings = {
        "Patient.gender": {"valueSet": "http://example.org/vs/women-only", "codes": ["female"]}
    }
    (tmp_path / "required-bindings.json").write_text(json.dumps({"bindings": bindings}))
    for name in ("invariants.json", "reference-targets.json", "narrative-xhtml.json"):
        (tmp_path / name).write_bytes((ROOT / "profiles" / name).read_bytes())
    validator = ResourceValidator.from_profiles(tmp_path)
    validator.validate({"resourceType": "Patient", "gender": "female"})
    with pytest.raises(InvalidResource, match="failed validation") as caught:
        validator.validate({"resourceType": "Patient", "gender": "male"})
    assert (
        "http://example.org/vs/women-only (allowed: female)" in caught.value.issues[0].diagnostics
    )


def test_long_code_lists_are_shortened_in_messages() -> None:
    resource = {
        "resourceType": "CapabilityStatement",
        "status": "draft",
        "date": "2024-01-01",
        "kind": "instance",
        "fhirVersion": "4.3.0",
        "format": ["json"],
        "rest": [{"mode": "server", "resource": [{"type": "Robot"}]}],
    }
    (issue,) = issues_of(resource)
    assert issue.expression == ("CapabilityStatement.rest[0].resource[0].type",)
    assert "Account, ActivityDefinition" in issue.diagnostics
    assert "... (143 codes)" in issue.diagnostics


def test_every_required_binding_applies_to_a_code_element() -> None:
    """Each path in profiles/required-bindings.json lands on an element the walk checks, so
    no binding is silently ignored (a wrong definition path would lose it)."""
    bindings = load_required_bindings(BINDINGS)
    tables = ElementTables(bindings)
    applied: set[str] = set()
    seen: set[int] = set()
    pending: list[Table] = [tables.for_type(name) for name in sorted(RESOURCE_TYPES)]
    while pending:
        table = pending.pop()
        if id(table) in seen:
            continue
        seen.add(id(table))
        for element in table.elements.values():
            if element.kind == PRIMITIVE and element.binding is not None:
                assert element.type_name == "code"
                applied.add(element.binding.path)
            elif element.kind == COMPLEX and element.model is not None:
                pending.append(tables.table(element.model))
    assert sorted(set(bindings) - applied) == []


def test_fhir_resources_still_lets_through_what_the_walk_checks() -> None:
    """If fhir.resources starts rejecting these, the walk's checks can be reconsidered."""
    patient = get_fhir_model_class("Patient")
    patient.model_validate({"resourceType": "Patient", "gender": "robot", "active": "true"})
    patient.model_validate({"resourceType": "Patient", "name": [], "fhir_comments": ["x"]})
    patient.model_validate({"resourceType": "Patient", "name": [{"family": "a\x00"}]})

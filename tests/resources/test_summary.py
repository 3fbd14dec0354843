"""`_summary` and `_elements` subsets (https://hl7.org/fhir/R4B/search.html#summary): which
elements each mode keeps, the SUBSETTED tag, and `_elements` names. No database."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from cmfhir.errors import BadRequest
from cmfhir.resources.fhirjson import dump_json, parse_json
from cmfhir.resources.summary import (
    SUBSETTED,
    check_elements,
    element_names,
    select_elements,
    summarize,
)

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {"versionId": "2", "tag": [{"system": "urn:test", "code": "keep"}]},
    "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Ada</div>'},
    "extension": [{"url": "urn:test:ext", "valueString": "x"}],
    "modifierExtension": [{"url": "urn:test:mod", "valueBoolean": True}],
    "identifier": [{"system": "urn:test:mrn", "value": "1"}],
    "name": [{"family": "Lovelace", "extension": [{"url": "urn:test:n", "valueCode": "a"}]}],
    "gender": "female",
    "_gender": {"extension": [{"url": "urn:test:g", "valueString": "f"}]},
    "birthDate": "1985-12-10",
    "maritalStatus": {"text": "married"},
    "contact": [{"name": {"family": "Byron"}}],
    "link": [{"id": "l1", "other": {"reference": "Patient/p2"}, "type": "seealso"}],
}

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "o1",
    "meta": {"versionId": "1"},
    "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">BP</div>'},
    "status": "final",
    "category": [{"text": "vital-signs"}],
    "code": {"text": "blood pressure"},
    "subject": {"reference": "Patient/p1"},
    "valueQuantity": {"value": Decimal("1.50"), "unit": "mmHg"},
    "note": [{"text": "sitting"}],
    "component": [
        {
            "code": {"text": "systolic"},
            "valueQuantity": {"value": 120},
            "interpretation": [{"text": "high"}],
            "referenceRange": [{"text": "< 120"}],
        }
    ],
}


def _tags(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return list(resource.get("meta", {}).get("tag", []))


@pytest.mark.parametrize(
    ("resource", "mode", "kept"),
    [
        pytest.param(
            PATIENT,
            "true",
            [
                "resourceType",
                "id",
                "meta",
                "modifierExtension",
                "identifier",
                "name",
                "gender",
                "_gender",
                "birthDate",
                "link",
            ],
            id="patient-true",
        ),
        pytest.param(
            PATIENT,
            "text",
            ["resourceType", "id", "meta", "text", "modifierExtension"],
            id="patient-text",
        ),
        pytest.param(
            PATIENT,
            "data",
            [k for k in PATIENT if k != "text"],
            id="patient-data",
        ),
        pytest.param(
            OBSERVATION,
            "true",
            [
                "resourceType",
                "id",
                "meta",
                "status",
                "code",
                "subject",
                "valueQuantity",
                "component",
            ],
            id="observation-true",
        ),
        pytest.param(
            OBSERVATION,
            "text",
            ["resourceType", "id", "meta", "text", "status", "code"],
            id="observation-text-keeps-mandatory",
        ),
    ],
)
def test_summary_modes_keep_these_elements(
    resource: dict[str, Any], mode: str, kept: list[str]
) -> None:
    before = copy.deepcopy(resource)
    summary = summarize(resource, mode)
    assert list(summary) == kept  # order kept too
    # SUBSETTED is added to the tags the resource had.
    assert _tags(summary) == [*_tags(resource), SUBSETTED]
    assert resource == before  # the input is not changed


def test_summary_false_is_the_resource_unchanged() -> None:
    assert summarize(PATIENT, "false") == PATIENT
    assert SUBSETTED not in _tags(summarize(PATIENT, "false"))


def test_summary_true_filters_backbone_elements_but_keeps_datatypes_whole() -> None:
    summary = summarize(OBSERVATION, "true")
    # Observation.component is summary; its interpretation and referenceRange are not.
    assert summary["component"] == [{"code": {"text": "systolic"}, "valueQuantity": {"value": 120}}]
    # Patient.link.id is not a summary element; HumanName keeps its extension.
    patient = summarize(PATIENT, "true")
    assert patient["link"] == [{"other": {"reference": "Patient/p2"}, "type": "seealso"}]
    assert patient["name"] == PATIENT["name"]


def test_summary_keeps_decimals_exact() -> None:
    text = (
        '{"resourceType":"Observation","id":"o","status":"final","code":{"text":"x"},'
        '"valueQuantity":{"value":1.50}}'
    )
    assert b'"value":1.50' in dump_json(summarize(parse_json(text), "true"))


def test_subsetted_tag_is_added_once_and_meta_created_when_missing() -> None:
    bare = {"resourceType": "Patient", "id": "p", "gender": "male"}
    once = summarize(bare, "data")
    assert list(once)[:3] == ["resourceType", "id", "meta"]
    assert _tags(once) == [SUBSETTED]
    assert _tags(summarize(once, "data")) == [SUBSETTED]


def test_required_choice_is_mandatory() -> None:
    request = {
        "resourceType": "MedicationRequest",
        "id": "m",
        "status": "active",
        "intent": "order",
        "medicationReference": {"reference": "Medication/1"},
        "subject": {"reference": "Patient/1"},
        "note": [{"text": "with food"}],
    }
    kept = summarize(request, "text")
    # status, intent, medication[x] and subject are 1..1 in R4B.
    assert list(kept) == [
        "resourceType",
        "id",
        "meta",
        "status",
        "intent",
        "medicationReference",
        "subject",
    ]


@pytest.mark.parametrize(
    ("resource_type", "requested", "matched", "expected"),
    [
        pytest.param("Patient", ["gender"], True, {"gender"}, id="bare-name"),
        pytest.param("Patient", ["Patient.gender"], True, {"gender"}, id="qualified-name"),
        pytest.param("Patient", ["name.family"], True, {"name"}, id="deeper-path-top-element"),
        pytest.param(
            "Patient", ["deceased"], True, {"deceasedBoolean", "deceasedDateTime"}, id="choice"
        ),
        pytest.param(
            "Patient",
            ["deceased[x]"],
            True,
            {"deceasedBoolean", "deceasedDateTime"},
            id="choice-with-x",
        ),
        pytest.param("Patient", ["gender"], False, None, id="bare-name-not-for-included"),
        pytest.param("Patient", ["Patient.gender"], False, {"gender"}, id="qualified-included"),
        pytest.param("Patient", ["Observation.status"], True, None, id="other-type-only"),
        pytest.param(
            "Observation", ["subject"], True, {"subject", "status", "code"}, id="plus-mandatory"
        ),
    ],
)
def test_element_names(
    resource_type: str, requested: list[str], matched: bool, expected: set[str] | None
) -> None:
    keys = element_names(resource_type, requested, matched=matched)
    if expected is None:
        assert keys is None
    else:
        always = {"resourceType", "id", "meta", "implicitRules", "modifierExtension"}
        assert keys == frozenset(expected | always)


def test_select_elements() -> None:
    keys = element_names("Patient", ["gender", "birthDate"], matched=True)
    assert keys is not None
    subset = select_elements(PATIENT, keys)
    assert list(subset) == [
        "resourceType",
        "id",
        "meta",
        "modifierExtension",
        "gender",
        "_gender",
        "birthDate",
    ]
    assert SUBSETTED in _tags(subset)


@pytest.mark.parametrize(
    ("resource_type", "requested"),
    [
        pytest.param("Patient", ["nope"], id="unknown-element"),
        pytest.param("Patient", ["value"], id="element-of-another-type"),
        pytest.param(None, ["Patient.nope"], id="qualified-unknown"),
        pytest.param("Observation", ["status", "Patient.nope"], id="qualified-other-type"),
    ],
)
def test_check_elements_rejects(resource_type: str | None, requested: list[str]) -> None:
    with pytest.raises(BadRequest) as raised:
        check_elements(resource_type, requested)
    assert raised.value.outcome()["issue"][0]["expression"] == ["_elements"]


@pytest.mark.parametrize(
    ("resource_type", "requested"),
    [
        pytest.param("Patient", ["name", "Patient.gender", "id", "meta"], id="known"),
        pytest.param("Observation", ["value", "Patient.name"], id="choice-and-other-type"),
        pytest.param(None, ["anything"], id="system-search-bare-name"),
    ],
)
def test_check_elements_accepts(resource_type: str | None, requested: list[str]) -> None:
    check_elements(resource_type, requested)

"""FHIRPath invariants of the core definitions: derived data, evaluation, messages, and no
valid resource refused (Synthea, the R4B examples of the care-management types)."""

from __future__ import annotations

import copy
import gzip
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cmfhir.errors import InvalidResource, Issue
from cmfhir.resources import parse_json, validate_resource
from cmfhir.resources.fhir_versions import R4, constraint_differences
from cmfhir.resources.invariants import EQUIVALENTS, load_invariants

ROOT = Path(__file__).parents[2]
PROFILES = ROOT / "profiles"
INVARIANTS = load_invariants(PROFILES / "invariants.json")
EXAMPLES = ROOT / "tests" / "data" / "fhir-examples" / "r4b-examples.ndjson.gz"
SHARED_SYNTHEA = Path("/work/shared/data/synthea")

# Examples of the R4B package that break a core rule; the HL7 validator refuses them too.
INVALID_EXAMPLES = {
    ("Questionnaire", "qs1"): "que-2",  # linkId `ServiceRequest.quantity[x]._null` twice
    ("Observation", "clinical-gender"): "performer[0].reference: a reference to Encounter",
}


def issues_of(resource: dict[str, Any]) -> list[Issue]:
    with pytest.raises(InvalidResource) as caught:
        validate_resource(resource)
    return caught.value.issues


def test_derived_data_lists_every_error_constraint_once_with_a_reason_when_not_evaluated() -> None:
    document = json.loads((PROFILES / "invariants.json").read_text())
    evaluated = {c["key"] for entries in document["constraints"].values() for c in entries}
    native, skipped = set(document["native"]), set(document["skipped"])
    assert not evaluated & native and not evaluated & skipped and not native & skipped
    assert {"per-1", "obs-6", "obs-7", "cpl-3", "qrs-1", "que-1a", "dom-5"} <= evaluated
    assert {"dom-2", "dom-3", "dom-4", "ext-1", "ref-1", "txt-1", "txt-2", "ele-1"} <= native
    for entry in [*document["native"].values(), *document["skipped"].values()]:
        assert entry["reason"] and entry["expression"] and entry["path"]
    assert len(INVARIANTS) == sum(len(entries) for entries in document["constraints"].values())
    assert len(INVARIANTS) > 190


def test_every_evaluated_expression_compiles() -> None:
    for path in INVARIANTS.paths:
        for invariant in INVARIANTS.for_path(path):
            invariant.evaluate_fhirpath({}, {}, {})  # compiles, and runs on an empty element


PERIOD = {"start": "2024-02-01", "end": "2024-01-01"}
# (resource, location, key)
BROKEN = [
    pytest.param(
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "AMB"},
            "period": PERIOD,
        },
        "Encounter.period",
        "per-1",
        id="per-1-date",
    ),
    pytest.param(
        {
            "resourceType": "Patient",
            "name": [
                {
                    "family": "A",
                    "period": {"start": "2024-01-01T10:00:00Z", "end": "2024-01-01T09:00:00Z"},
                }
            ],
        },
        "Patient.name[0].period",
        "per-1",
        id="per-1-in-datatype",
    ),
    pytest.param(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "weight"},
            "valueQuantity": {"value": 70},
            "dataAbsentReason": {"text": "not asked"},
        },
        "Observation",
        "obs-6",
        id="obs-6",
    ),
    pytest.param(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "valueQuantity": {"value": 120},
            "component": [
                {
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                    "valueQuantity": {"value": 120},
                }
            ],
        },
        "Observation",
        "obs-7",
        id="obs-7",
    ),
    pytest.param(
        {
            "resourceType": "CarePlan",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": "Patient/1"},
            "activity": [
                {"reference": {"reference": "ServiceRequest/1"}, "detail": {"status": "scheduled"}}
            ],
        },
        "CarePlan.activity[0]",
        "cpl-3",
        id="cpl-3",
    ),
    pytest.param(
        {
            "resourceType": "QuestionnaireResponse",
            "status": "completed",
            "item": [
                {"linkId": "1", "answer": [{"valueString": "x"}], "item": [{"linkId": "1.1"}]}
            ],
        },
        "QuestionnaireResponse.item[0]",
        "qrs-1",
        id="qrs-1",
    ),
    pytest.param(
        {
            "resourceType": "Questionnaire",
            "status": "active",
            "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "1", "type": "string"}]}],
        },
        "Questionnaire",
        "que-2",
        id="que-2-duplicate-linkId",
    ),
    pytest.param(
        {
            "resourceType": "Questionnaire",
            "status": "active",
            "item": [{"linkId": "1", "type": "display", "text": "Hi", "required": True}],
        },
        "Questionnaire.item[0]",
        "que-6",
        id="que-6",
    ),
    pytest.param(
        {
            "resourceType": "Questionnaire",
            "status": "active",
            "item": [
                {
                    "linkId": "1",
                    "type": "group",
                    "item": [{"linkId": "2", "type": "display", "text": "x", "readOnly": True}],
                }
            ],
        },
        "Questionnaire.item[0].item[0]",
        "que-9",
        id="que-9-in-nested-item",
    ),
    pytest.param(
        {"resourceType": "Patient", "contact": [{"gender": "female"}]},
        "Patient.contact[0]",
        "pat-1",
        id="pat-1",
    ),
    pytest.param(
        {
            "resourceType": "Organization",
            "name": "A",
            "telecom": [{"system": "phone", "value": "1", "use": "home"}],
        },
        "Organization.telecom[0]",
        "org-3",
        id="org-3-on-a-datatype-element",
    ),
    pytest.param(
        {
            "resourceType": "Patient",
            "contained": [
                {
                    "resourceType": "Organization",
                    "id": "o",
                    "name": "A",
                    "meta": {"security": [{"code": "R"}]},
                }
            ],
            "managingOrganization": {"reference": "#o"},
        },
        "Patient",
        "dom-5",
        id="dom-5",
    ),
    pytest.param(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "valueRange": {"low": {"value": 5, "unit": "mg"}, "high": {"value": 2, "unit": "mg"}},
        },
        "Observation.valueRange",
        "rng-2",
        id="rng-2",
    ),
    pytest.param(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "valueQuantity": {"value": 5, "code": "mg"},
        },
        "Observation.valueQuantity",
        "qty-3",
        id="qty-3",
    ),
    pytest.param(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {
                    "fullUrl": "urn:uuid:9b6a2d0e-4a43-4f0c-8a50-6a1b4a3c7d11",
                    "resource": {"resourceType": "Patient"},
                },
                {
                    "fullUrl": "urn:uuid:9b6a2d0e-4a43-4f0c-8a50-6a1b4a3c7d11",
                    "resource": {"resourceType": "Patient"},
                },
            ],
        },
        "Bundle",
        "bdl-7",
        id="bdl-7",
    ),
]


@pytest.mark.parametrize(("resource", "location", "key"), BROKEN)
def test_broken_invariant_is_refused_naming_key_text_and_location(
    resource: dict[str, Any], location: str, key: str
) -> None:
    issues = issues_of(resource)
    found = [i for i in issues if i.expression == (location,) and f": {key}: " in i.diagnostics]
    assert found, [i.diagnostics for i in issues]
    (issue,) = found
    assert issue.code == "invariant"
    human = next(i.human for p in INVARIANTS.paths for i in INVARIANTS.for_path(p) if i.key == key)
    assert issue.diagnostics == f"{location}: {key}: {human}"


@pytest.mark.parametrize(("resource", "location", "key"), BROKEN)
def test_the_same_resource_repaired_passes(
    resource: dict[str, Any], location: str, key: str
) -> None:
    """Each broken case differs from a valid resource only in what breaks the invariant."""
    repaired = copy.deepcopy(resource)
    fixes = {
        "per-1": lambda r: r.get("period", r.get("name", [{}])[0].get("period")).pop("end"),
        "obs-6": lambda r: r.pop("dataAbsentReason"),
        "obs-7": lambda r: r.pop("component"),
        "cpl-3": lambda r: r["activity"][0].pop("detail"),
        "qrs-1": lambda r: r["item"][0].pop("answer"),
        "que-2": lambda r: r["item"][0]["item"][0].update(linkId="1.1"),
        "que-6": lambda r: r["item"][0].pop("required"),
        "que-9": lambda r: r["item"][0]["item"][0].pop("readOnly"),
        "pat-1": lambda r: r["contact"][0].update(name={"family": "B"}),
        "org-3": lambda r: r["telecom"][0].update(use="work"),
        "dom-5": lambda r: r["contained"][0].pop("meta"),
        "rng-2": lambda r: r["valueRange"]["high"].update(value=7),
        "qty-3": lambda r: r["valueQuantity"].update(system="http://unitsofmeasure.org"),
        "bdl-7": lambda r: r["entry"][1].update(
            fullUrl="urn:uuid:9b6a2d0e-4a43-4f0c-8a50-6a1b4a3c7d12"
        ),
    }
    fixes[key](repaired)
    validate_resource(repaired)


_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
SAMPLES: dict[str, list[dict[str, Any]]] = {
    "per-1": [
        {"start": "2024-01-01", "end": "2024-01-02"},
        {"start": "2024-01-02", "end": "2024-01-01"},
        {"start": "2024-01-01T10:00:00-05:00", "end": "2024-01-01T09:00:00-05:00"},
        {"start": "2024-01-01T10:00:00-05:00", "end": "2024-01-01T11:00:00-05:00"},
        {"start": "2024-01-01T10:00:00Z", "end": "2024-01-01T09:59:59Z"},
        {"start": "2024-01-01"},
        {"end": "2024-01-01"},
        {"start": "2024", "end": "2023"},
        {"start": "2024-02", "end": "2024-03"},
    ],
    "qty-3": [
        {"value": 1},
        {"value": 1, "code": "mg"},
        {"value": 1, "code": "mg", "system": "http://unitsofmeasure.org"},
        {"code": "mg", "system": "http://unitsofmeasure.org"},
    ],
    "obs-6": [
        {"valueQuantity": {"value": 1}},
        {"valueString": "x", "dataAbsentReason": {"text": "x"}},
        {"dataAbsentReason": {"text": "x"}},
    ],
    "obs-7": [
        {"valueQuantity": {"value": 1}},
        {
            "valueQuantity": {"value": 1},
            "code": {"coding": [{"code": "a"}]},
            "component": [{"code": {"coding": [{"code": "a"}]}}],
        },
        {
            "valueQuantity": {"value": 1},
            "code": {"coding": [{"code": "a"}]},
            "component": [{"code": {"coding": [{"code": "b"}]}}],
        },
        {"code": {"coding": [{"code": "a"}]}, "component": [{"code": {"coding": [{"code": "a"}]}}]},
    ],
    "ref-1": [
        {"reference": "Patient/1"},
        {"reference": "http://example.org/fhir/Patient/1"},
        {"reference": "urn:uuid:6b2c8a8e-58a4-4f2b-9b9c-2f3a0d7c1e11"},
        {"display": "no reference"},
        {"reference": "#missing"},
    ],
    "qrs-1": [
        {"linkId": "1"},
        {"linkId": "1", "answer": [{"valueString": "a"}]},
        {"linkId": "1", "item": [{"linkId": "2"}]},
        {"linkId": "1", "answer": [{"valueString": "a"}], "item": [{"linkId": "2"}]},
    ],
    "app-1": [
        {"status": "accepted"},
        {"type": [{"text": "x"}]},
        {"actor": {"reference": "Patient/1"}},
        {"type": [{"text": "x"}], "actor": {"reference": "Patient/1"}},
    ],
    "app-2": [
        {"status": "booked"},
        {"start": "2024-01-01T10:00:00Z"},
        {"end": "2024-01-01T10:00:00Z"},
        {"start": "2024-01-01T10:00:00Z", "end": "2024-01-01T11:00:00Z"},
    ],
    "app-3": [
        {"status": "booked"},
        {"status": "proposed"},
        {"status": "waitlist", "start": "2024-01-01T10:00:00Z"},
        {"status": "booked", "start": "2024-01-01T10:00:00Z", "end": "2024-01-01T11:00:00Z"},
        {"status": "noshow", "start": "2024-01-01T10:00:00Z"},
        {"start": "2024-01-01T10:00:00Z"},
    ],
    "mdd-1": [
        {"status": "completed"},
        {"whenHandedOver": "2024-01-02"},
        {"whenHandedOver": "2024-01-02", "whenPrepared": "2024-01-01"},
        {"whenHandedOver": "2024-01-01", "whenPrepared": "2024-01-02"},
        {"whenHandedOver": "2024-01-01T10:00:00-05:00", "whenPrepared": "2024-01-01T10:00:00Z"},
        {"whenHandedOver": "2024-01-01T10:00:00Z", "whenPrepared": "2024-01-01T10:00:00Z"},
        {"whenHandedOver": "2024-01-01T09:00:00Z", "whenPrepared": "2024-01-01T10:00:00Z"},
        {"whenHandedOver": "2024-01-01", "whenPrepared": "2024-01-01T10:00:00-05:00"},
    ],
    "con-4": [
        {"clinicalStatus": {"coding": [{"system": _CLINICAL, "code": "active"}]}},
        {
            "abatementDateTime": "2024-01-01",
            "clinicalStatus": {"coding": [{"system": _CLINICAL, "code": "active"}]},
        },
        {
            "abatementString": "gone",
            "clinicalStatus": {"coding": [{"system": _CLINICAL, "code": "resolved"}]},
        },
        {
            "abatementAge": {"value": 40},
            "clinicalStatus": {"coding": [{"system": "http://other", "code": "resolved"}]},
        },
        {"abatementDateTime": "2024-01-01"},
        {"abatementDateTime": "2024-01-01", "clinicalStatus": {"text": "over"}},
        {
            "abatementDateTime": "2024-01-01",
            "clinicalStatus": {
                "coding": [
                    {"system": _CLINICAL, "code": "active"},
                    {"system": _CLINICAL, "code": "remission"},
                ]
            },
        },
    ],
    "con-5": [
        {"clinicalStatus": {"coding": [{"system": _CLINICAL, "code": "active"}]}},
        {"verificationStatus": {"coding": [{"system": _VER, "code": "entered-in-error"}]}},
        {
            "verificationStatus": {"coding": [{"system": _VER, "code": "entered-in-error"}]},
            "clinicalStatus": {"coding": [{"system": _CLINICAL, "code": "active"}]},
        },
        {
            "verificationStatus": {"coding": [{"system": _VER, "code": "confirmed"}]},
            "clinicalStatus": {"coding": [{"system": _CLINICAL, "code": "active"}]},
        },
        {
            "verificationStatus": {"coding": [{"system": "http://x", "code": "entered-in-error"}]},
            "clinicalStatus": {"coding": [{"system": _CLINICAL, "code": "active"}]},
        },
    ],
    "gol-1": [
        {"measure": {"text": "A1c"}},
        {"measure": {"text": "A1c"}, "detailQuantity": {"value": 7}},
        {"detailQuantity": {"value": 7}},
        {"detailString": "less"},
        {"dueDate": "2024-01-01"},
    ],
    "cpt-2": [
        {"system": "phone"},
        {"value": "555-0100"},
        {"system": "phone", "value": "555-0100"},
        {"use": "home"},
    ],
    "cpl-3": [
        {"detail": {"status": "completed"}},
        {"reference": {"reference": "Appointment/1"}},
        {"detail": {"status": "completed"}, "reference": {"reference": "Appointment/1"}},
        {"outcomeReference": [{"reference": "Observation/1"}]},
    ],
}


@pytest.mark.parametrize(
    ("key", "node"),
    [
        pytest.param(k, n, id=f"{k}-{i}")
        for k, nodes in SAMPLES.items()
        for i, n in enumerate(nodes)
    ],
)
def test_python_equivalent_agrees_with_fhirpathpy(key: str, node: dict[str, Any]) -> None:
    resource = {"resourceType": "Observation", **node} if key.startswith("obs") else {}
    answer = EQUIVALENTS[key](resource or node, resource)
    # In each version that evaluates the key as FHIRPath (R4B checks ref-1 in Python).
    versions = [INVARIANTS, INVARIANTS.with_differences(constraint_differences(R4), "FHIR R4")]
    found = [i for v in versions for p in v.paths for i in v.for_path(p) if i.key == key]
    assert found
    for invariant in found:
        assert invariant.equivalent is EQUIVALENTS[key]
        if answer is not None:
            assert answer == invariant.evaluate_fhirpath(resource or node, resource, resource)


def test_every_python_equivalent_has_samples() -> None:
    assert set(EQUIVALENTS) - set(SAMPLES) == {"rng-2"}  # fhirpathpy cannot compare Quantities


def _example(line: bytes) -> Any:
    # Not parse_json: the examples were re-serialized from floats, and one reads 1e-245.
    return json.loads(line, parse_float=Decimal)


def _examples() -> list[Any]:
    params = []
    with gzip.open(EXAMPLES, "rb") as lines:
        for line in lines:
            resource = _example(line)
            key = (resource["resourceType"], resource.get("id"))
            marks = (
                [
                    pytest.mark.xfail(
                        reason=INVALID_EXAMPLES[key], raises=InvalidResource, strict=True
                    )
                ]
                if key in INVALID_EXAMPLES
                else []
            )
            params.append(pytest.param(resource, id="/".join(map(str, key)), marks=marks))
    return params


@pytest.mark.parametrize("resource", _examples())
def test_r4b_example_is_valid(resource: dict[str, Any]) -> None:
    validate_resource(resource, stored=False)


def test_invalid_examples_are_refused_for_the_listed_reason() -> None:
    with gzip.open(EXAMPLES, "rb") as lines:
        found = {(r["resourceType"], r.get("id")): r for r in map(_example, lines)}
    for key, reason in INVALID_EXAMPLES.items():
        with pytest.raises(InvalidResource) as caught:
            validate_resource(found[key], stored=False)
        assert any(reason in issue.diagnostics for issue in caught.value.issues)


@pytest.mark.skipif(
    not SHARED_SYNTHEA.is_dir(), reason="the shared Synthea set is not on this machine"
)
def test_every_shared_synthea_resource_is_valid() -> None:
    refused = []
    for path in sorted(SHARED_SYNTHEA.glob("*.json")):
        for entry in parse_json(path.read_bytes())["entry"]:
            try:
                validate_resource(entry["resource"])
            except InvalidResource as error:
                refused.append((path.name, [i.diagnostics for i in error.issues]))
    assert refused == []


def test_r4_invariants_are_r4bs_with_the_recorded_differences() -> None:
    r4 = INVARIANTS.with_differences(constraint_differences(R4), "FHIR R4")
    item = {i.key: i for i in r4.for_path("Questionnaire.item")}
    assert "que-1" in item and "que-1a" not in item and "que-1c" not in item
    assert item["que-12"].expression == "enableWhen.count() > 2 implies enableBehavior.exists()"
    (que_7,) = r4.for_path("Questionnaire.item.enableWhen")
    assert que_7.expression == "operator = 'exists' implies (answer is boolean)"  # R4B's
    assert que_7.holds({"question": "q", "operator": "exists", "answerBoolean": True}, {}, {})
    assert not que_7.holds({"question": "q", "operator": "exists", "answerString": "x"}, {}, {})

"""Which members' compartments a resource belongs to (the R4B Patient CompartmentDefinition)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cmfhir.resources.compartment import load_patient_compartment, patient_compartment
from cmfhir.resources.index_values import extract_index
from cmfhir.resources.search_parameters import SearchParameterRegistry, load_registry

PROFILES = Path(__file__).resolve().parents[2] / "profiles"


@pytest.fixture(scope="module")
def registry() -> SearchParameterRegistry:
    return load_registry(PROFILES)


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        pytest.param({"resourceType": "Patient", "id": "p1"}, ["p1"], id="patient-itself"),
        pytest.param(
            {
                "resourceType": "Patient",
                "id": "p1",
                "link": [{"other": {"reference": "Patient/p0"}, "type": "replaces"}],
            },
            ["p1", "p0"],
            id="patient-link",
        ),
        pytest.param(
            {"resourceType": "Observation", "subject": {"reference": "Patient/p1"}},
            ["p1"],
            id="subject",
        ),
        pytest.param(
            {
                "resourceType": "Observation",
                "subject": {"reference": "Group/g1"},
                "performer": [{"reference": "Patient/p2"}, {"reference": "Practitioner/d"}],
            },
            ["p2"],
            id="performer-patient",
        ),
        pytest.param(
            {
                "resourceType": "Observation",
                "subject": {"reference": "https://other.org/fhir/Patient/p9"},
            },
            [],
            id="other-server",
        ),
        pytest.param(
            {"resourceType": "Encounter", "subject": {"reference": "Patient/p1/_history/4"}},
            ["p1"],
            id="versioned",
        ),
        pytest.param(
            {"resourceType": "Organization", "id": "o", "name": "Clinic"},
            [],
            id="not-in-compartment",
        ),
    ],
)
def test_patient_compartment(
    registry: SearchParameterRegistry, resource: dict[str, Any], expected: list[str]
) -> None:
    compartment = load_patient_compartment(PROFILES)
    assert patient_compartment(resource, compartment) == expected
    index = extract_index(resource, registry)
    assert patient_compartment(resource, compartment, index) == expected


def test_patient_compartment_definition() -> None:
    compartment = load_patient_compartment(PROFILES)
    assert compartment.params_for("Observation") == ("subject", "performer")
    assert compartment.params_for("Patient") == ("link",)
    assert compartment.params_for("Organization") == ()
    # cmfhir's addition to R4B's: a Task for a member is theirs (scripts/derive_profiles.py).
    assert compartment.params_for("Task") == ("patient",)
    task = {"resourceType": "Task", "status": "requested", "intent": "order",
            "for": {"reference": "Patient/p1"}}  # fmt: skip
    assert patient_compartment(task, compartment) == ["p1"]
    assert load_patient_compartment(PROFILES) is compartment

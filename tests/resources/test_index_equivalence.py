"""The shared evaluation of search parameters (each union operand read and converted once
per resource, member paths read off the dict, composite groups copied between composites
of the same components) gives exactly the index rows of the generic one (every
parameter's whole expression through `compile_path`), on every example resource: the R4B
and R4 examples, the test Synthea Bundles, the shared Synthea data (every 5th resource;
all with `CMFHIR_FULL_EQUIVALENCE=1`) and the caseload's member Bundles."""

from __future__ import annotations

import copy
import gzip
import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from bench import caseload

from cmfhir.resources import parse_json
from cmfhir.resources.fhirpath import Branch, union_branches
from cmfhir.resources.index_values import (
    IndexingFailed,
    ResourceIndex,
    _shared_plan,
    extract_index,
)
from cmfhir.resources.search_parameters import load_registry
from cmfhir.store.indexing import index_rows

ROOT = Path(__file__).parents[2]
DATA = ROOT / "tests" / "data"
SHARED_SYNTHEA = Path("/work/shared/data/synthea")
REGISTRY = load_registry(ROOT / "profiles")


def _bundle_resources(path: Path) -> list[dict[str, Any]]:
    bundle = parse_json(path.read_bytes())
    return [entry["resource"] for entry in bundle["entry"] if "resource" in entry]


def _examples() -> list[dict[str, Any]]:
    with gzip.open(DATA / "fhir-examples" / "r4b-examples.ndjson.gz") as lines:
        resources = [json.loads(line, parse_float=Decimal) for line in lines if line.strip()]
    for path in sorted((DATA / "r4-examples").glob("*.json")):
        resources.append(parse_json(path.read_bytes()))
    for path in sorted((DATA / "synthea").glob("*.json")):
        resources += _bundle_resources(path)
    return resources


def _outcome(resource: dict[str, Any], generic: bool) -> Any:
    """The index rows of both families and composites, or the parameter that failed."""
    try:
        index = extract_index(resource, REGISTRY, generic=generic)
    except IndexingFailed as error:
        return ("failed", error.parameter.code, error.cause)
    return index, index_rows(1, resource["resourceType"], index)


def _differences(resources: list[dict[str, Any]]) -> list[str]:
    found = []
    for resource in resources:
        if _outcome(resource, True) != _outcome(resource, False):
            found.append(f"{resource['resourceType']}/{resource.get('id')}")
    return found


def test_examples_give_the_same_rows() -> None:
    examples = _examples()
    assert len(examples) > 600
    assert _differences(examples) == []


def test_caseload_gives_the_same_rows() -> None:
    staff = caseload.make_staff(50)
    resources = []
    for index in range(6):
        bundle = parse_json(orjson.dumps(caseload.member_bundle(7, index, staff)))
        resources += [entry["resource"] for entry in bundle["entry"]]
    assert _differences(resources) == []


@pytest.mark.skipif(not SHARED_SYNTHEA.is_dir(), reason="the shared Synthea data is absent")
def test_shared_synthea_gives_the_same_rows() -> None:
    step = 1 if os.environ.get("CMFHIR_FULL_EQUIVALENCE") else 5
    resources = []
    for path in sorted(SHARED_SYNTHEA.glob("*.json")):
        resources += _bundle_resources(path)
    assert _differences(resources[::step]) == []


def test_mutated_shapes_give_the_same_rows_or_failures() -> None:
    """Odd shapes no validation refused here: wrong JSON types where a parameter reads."""
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "HR"},
        "subject": {"reference": "Patient/1"},
        "effectiveDateTime": "2024-01-02",
        "valueQuantity": {"value": Decimal("60"), "unit": "/min"},
        "component": [
            {"code": {"text": "a"}, "valueQuantity": {"value": Decimal("1.5")}},
            {"code": {"text": "a"}, "valueQuantity": {"value": Decimal("1.5")}},
            {"code": {"text": "b"}, "valueCodeableConcept": {"text": "x"}},
        ],
    }
    mutations: list[dict[str, Any]] = [observation]
    for key, odd in (
        ("subject", [{"reference": "Group/2"}, {"reference": "Patient/3"}]),
        ("subject", "Patient/1"),
        ("code", [{"text": "one"}, {"text": "one"}]),
        ("valueQuantity", {"value": "not a number"}),
        ("valueQuantity", {"value": True}),
        ("effectiveDateTime", "not a date"),
        ("component", {"code": {"text": "c"}, "valueQuantity": {"value": 2}}),
        ("component", [1, None, {"code": "x"}]),
        ("meta", {"profile": ["http://x/p", "http://x/p"], "tag": [{"code": "t"}]}),
    ):
        changed = copy.deepcopy(observation)
        changed[key] = odd
        mutations.append(changed)
    assert _differences(mutations) == []


def test_operands_are_shared_between_parameters() -> None:
    """`subject` and `patient` read `Observation.subject` once; `code` and `combo-code` share
    `Observation.code`: fewer operands than parameters reading them."""
    plan = _shared_plan(REGISTRY, "Observation")
    reads = [read for _, _, _, reads in plan.steps for read in reads]
    assert len(plan.operands) < len(reads)
    shared = [read for read in reads if read[1] >= 0]
    assert shared  # some conversions are made once and copied
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/1"},
    }
    index = extract_index(resource, REGISTRY)
    assert {(e.param, e.target_id) for e in index.reference} == {
        ("subject", "1"),
        ("patient", "1"),
    }
    assert {e.param for e in index.token} >= {"code", "combo-code", "status"}
    assert isinstance(index, ResourceIndex)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("Observation.code", (Branch("Observation.code", None),)),
        (
            "Observation.code | Observation.component.code",
            (Branch("Observation.code", None), Branch("Observation.component.code", None)),
        ),
        (
            "Encounter.participant.individual.where(resolve() is Practitioner)",
            (Branch("Encounter.participant.individual", "Practitioner"),),
        ),
        (
            "(Observation.value as Quantity) | (Observation.value as SampledData)",
            (
                Branch("(Observation.value as Quantity)", None),
                Branch("(Observation.value as SampledData)", None),
            ),
        ),
        ("Patient.deceased.exists() and Patient.deceased != false", None),
        ("Patient.name.select(given)", None),
    ],
)
def test_union_branches(expression: str, expected: tuple[Branch, ...] | None) -> None:
    assert union_branches(expression) == expected

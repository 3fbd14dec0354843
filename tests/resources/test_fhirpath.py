"""The FHIRPath subset of search-parameter expressions: fast-path results, the fhirpathpy
fallback, and parity between the two on Synthea resources."""

from __future__ import annotations

import copy
import json
import logging
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import fhirpathpy
import pytest
from fhirpathpy.models import models

from cmfhir.resources import fhirpath
from cmfhir.resources.fhirpath import (
    FhirPathError,
    compile_path,
    reference_type,
    required_keys,
    split_union,
    uses_fast_path,
)
from cmfhir.resources.search_parameters import load_registry

ROOT = Path(__file__).resolve().parents[2]
SYNTHEA = ROOT / "tests" / "data" / "synthea"

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {"tag": [{"system": "urn:t", "code": "a"}], "profile": ["http://p/1"]},
    "extension": [
        {"url": "http://ext/maiden", "valueString": "Smith"},
        {"url": "http://ext/other", "valueString": "x"},
        {"url": "http://ext/maiden", "valueString": "Jones"},
    ],
    "name": [
        {"family": "Doe", "given": ["Jane", "Q"]},
        {"family": "Roe", "given": ["Janet"]},
    ],
    "telecom": [
        {"system": "phone", "value": "555-1"},
        {"system": "email", "value": "j@x.org"},
    ],
    "deceasedDateTime": "2020-01-01",
    "link": [
        {"other": {"reference": "Patient/p2"}, "type": "seealso"},
        {"other": {"reference": "RelatedPerson/r1"}, "type": "seealso"},
    ],
}
OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "o1",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}], "text": "BP"},
    "effectivePeriod": {"start": "2020-01-01"},
    "valueQuantity": {"value": 120, "unit": "mmHg"},
    "component": [
        {"code": {"text": "sys"}, "valueQuantity": {"value": 120}},
        {"code": {"text": "dia"}, "valueQuantity": {"value": 80}},
        {"code": {"text": "note"}, "valueString": "ok"},
    ],
    "subject": {"reference": "Patient/p1"},
    "performer": [
        {"reference": "http://other.org/fhir/Practitioner/d1/_history/3"},
        {"reference": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0", "type": "Patient"},
        {"reference": "#contained-1"},
        {"identifier": {"system": "urn:npi", "value": "123"}, "type": "Practitioner"},
    ],
}


@pytest.mark.parametrize(
    ("expression", "resource", "expected"),
    [
        pytest.param("Patient.id", PATIENT, ["p1"], id="member"),
        pytest.param("Patient.name.given", PATIENT, ["Jane", "Q", "Janet"], id="lists-flatten"),
        pytest.param("Observation.id", PATIENT, [], id="other-root-type"),
        pytest.param("Resource.meta.profile", PATIENT, ["http://p/1"], id="resource-root"),
        pytest.param("name.family", PATIENT, ["Doe", "Roe"], id="relative-path"),
        pytest.param(
            "Patient.name.family | Patient.telecom.value",
            PATIENT,
            ["Doe", "Roe", "555-1", "j@x.org"],
            id="union",
        ),
        pytest.param("Patient.deceased", PATIENT, ["2020-01-01"], id="choice-element"),
        pytest.param("(Patient.deceased as dateTime)", PATIENT, ["2020-01-01"], id="as-operator"),
        pytest.param("Patient.deceased.as(boolean)", PATIENT, [], id="as-other-type"),
        pytest.param("Patient.deceased.ofType(dateTime)", PATIENT, ["2020-01-01"], id="of-type"),
        pytest.param(
            "(Observation.component.value as Quantity).value",
            OBSERVATION,
            [120, 80],
            id="as-on-several-items-filters",
        ),
        pytest.param(
            "(Observation.value as CodeableConcept).text", OBSERVATION, [], id="as-then-member"
        ),
        pytest.param(
            "Observation.effective.start", OBSERVATION, ["2020-01-01"], id="choice-period"
        ),
        pytest.param(
            "Patient.telecom.where(system='email').value",
            PATIENT,
            ["j@x.org"],
            id="where-equals",
        ),
        pytest.param(
            "Patient.extension('http://ext/maiden').value",
            PATIENT,
            ["Smith", "Jones"],
            id="extension-every-match",
        ),
        pytest.param("Patient.name[1].family", PATIENT, ["Roe"], id="indexer"),
        pytest.param("Patient.name.first().family", PATIENT, ["Doe"], id="first"),
        pytest.param(
            "Patient.link.other.where(resolve() is Patient)",
            PATIENT,
            [{"reference": "Patient/p2"}],
            id="resolve-relative",
        ),
        pytest.param(
            "Observation.performer.where(resolve() is Practitioner)",
            OBSERVATION,
            [
                {"reference": "http://other.org/fhir/Practitioner/d1/_history/3"},
                {"identifier": {"system": "urn:npi", "value": "123"}, "type": "Practitioner"},
            ],
            id="resolve-absolute-and-type",
        ),
        pytest.param(
            "Observation.performer.where(resolve() is Patient).reference",
            OBSERVATION,
            ["urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"],
            id="resolve-urn-uses-type",
        ),
        pytest.param(
            "Patient.deceased.exists() and Patient.deceased != false",
            PATIENT,
            [True],
            id="exists-and-not-equal",
        ),
        pytest.param(
            "Patient.deceased.exists() and Patient.deceased != false",
            {"resourceType": "Patient"},
            [False],
            id="exists-on-absent",
        ),
        pytest.param(
            "Patient.deceased.exists() and Patient.deceased != false",
            {"resourceType": "Patient", "deceasedBoolean": False},
            [False],
            id="deceased-false",
        ),
        pytest.param("Patient.name.empty()", PATIENT, [False], id="empty"),
        pytest.param(
            "Observation.component.where(value.exists().not()).code.text",
            OBSERVATION,
            [],
            id="not",
        ),
    ],
)
def test_fast_path(expression: str, resource: dict[str, Any], expected: list[Any]) -> None:
    assert uses_fast_path(expression)
    assert compile_path(expression)(resource) == expected


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        pytest.param({"reference": "Patient/1"}, "Patient", id="relative"),
        pytest.param({"reference": "Patient/1/_history/2"}, "Patient", id="versioned"),
        pytest.param({"reference": "https://x.org/fhir/Group/g"}, "Group", id="absolute"),
        pytest.param({"reference": "urn:uuid:1", "type": "Patient"}, "Patient", id="urn-type"),
        pytest.param(
            {"type": "http://hl7.org/fhir/StructureDefinition/Device"}, "Device", id="type-url"
        ),
        pytest.param({"reference": "urn:uuid:1"}, None, id="urn-alone"),
        pytest.param({"reference": "#c1"}, None, id="contained"),
        pytest.param({"display": "Dr X"}, None, id="display-only"),
        pytest.param("Patient/1", None, id="not-a-reference"),
    ],
)
def test_reference_type(reference: Any, expected: str | None) -> None:
    assert reference_type(reference) == expected


@pytest.mark.parametrize(
    ("expression", "parts"),
    [
        pytest.param("A.x", ["A.x"], id="single"),
        pytest.param("A.x | B.y", ["A.x", "B.y"], id="two"),
        pytest.param("(A.x as B) | (A.y | A.z).w", ["(A.x as B)", "(A.y | A.z).w"], id="nested"),
        pytest.param("A.where(s='a|b') | B", ["A.where(s='a|b')", "B"], id="in-string"),
    ],
)
def test_split_union(expression: str, parts: list[str]) -> None:
    assert split_union(expression) == parts


@pytest.mark.parametrize(
    ("expression", "keys"),
    [
        pytest.param("Patient.name.given", {"name"}, id="member"),
        pytest.param("Patient.name | Patient.address", {"name", "address"}, id="union"),
        pytest.param("(Observation.value as Quantity)", {"valueQuantity"}, id="as"),
        pytest.param("Patient.extension('u')", {"extension"}, id="extension"),
        pytest.param("Observation.effective", None, id="choice"),
        pytest.param("Patient.deceased.exists()", None, id="exists-yields-on-absent"),
        pytest.param("Patient.name.count()", None, id="fallback"),
    ],
)
def test_required_keys(expression: str, keys: set[str] | None) -> None:
    assert required_keys(expression) == (None if keys is None else frozenset(keys))


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        pytest.param("Patient.name.count()", [2], id="count"),
        pytest.param("Patient.name.select(family)", ["Doe", "Roe"], id="select"),
    ],
)
def test_fallback(expression: str, expected: list[Any]) -> None:
    assert not uses_fast_path(expression)
    resource = copy.deepcopy(PATIENT)
    assert compile_path(expression)(resource) == expected
    assert resource == PATIENT  # fhirpathpy must not leave its annotations behind


@pytest.mark.parametrize(
    "expression",
    [
        pytest.param("Patient.name.given.single()", id="single-of-several"),
        pytest.param("Patient.name.given.substring(0, 2)", id="singleton-expected"),
        pytest.param("Patient.name as HumanName", id="as-on-several"),
    ],
)
def test_fallback_error_raises_without_resource_content(
    expression: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing expression is an error, never an empty result (which would leave the
    resource out of the index); neither the error nor the log quotes the resource."""
    extract = compile_path(expression)
    # Warned once per process: forget an earlier test's evaluation of the same expression.
    fhirpath._warned.discard(expression)
    with caplog.at_level(logging.DEBUG, logger="cmfhir.resources.fhirpath"):
        for _ in range(2):
            with pytest.raises(FhirPathError) as failed:
                extract(PATIENT)
            assert failed.value.expression == expression
            assert "Jane" not in str(failed.value)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]  # once per expression
    assert expression in caplog.records[0].getMessage()
    assert all("Jane" not in r.getMessage() for r in caplog.records)


def test_expression_that_does_not_compile_raises_on_use() -> None:
    extract = compile_path("Patient.name.where(")
    with pytest.raises(FhirPathError):
        extract(PATIENT)


def test_malformed_content_yields_nothing() -> None:
    broken = {"resourceType": "Patient", "extension": ["not-an-object"]}
    assert compile_path("Patient.extension('u')")(broken) == []


# --- parity with fhirpathpy on Synthea -----------------------------------------------------
#
# Documented exceptions, where fhirpathpy 2.2.4 cannot be the reference as is:
# - it has no resolve(): `.where(resolve() is T)` is compared with
#   `.where(reference.startsWith('T/'))` on resources whose urn:uuid references were
#   rewritten to `Type/id`, as a transaction does before indexing;
# - `(x as T)` raises when x has several items (strict FHIRPath); the fast path filters them,
#   so it is compared with `x.ofType(T)`;
# - it reads JSON numbers as Decimal; values are compared as JSON with numbers as floats.
_RESOLVE = re.compile(r"\.where\(resolve\(\) is (\w+)\)")
_AS = re.compile(r" as (\w+)\)")


def _reference_expression(expression: str) -> str:
    expression = _AS.sub(r".ofType(\1))", expression)
    return _RESOLVE.sub(lambda m: f".where(reference.startsWith('{m.group(1)}/'))", expression)


def _comparable(values: list[Any]) -> list[str]:
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return float(value) if isinstance(value, Decimal) else value

    return sorted(json.dumps(plain(v), sort_keys=True) for v in values)


def _transaction_resources(path: Path) -> list[dict[str, Any]]:
    bundle = json.loads(path.read_text(encoding="utf-8"))
    local = {
        e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle["entry"]
    }
    text = json.dumps([e["resource"] for e in bundle["entry"]])
    for full_url, reference in local.items():
        text = text.replace(f'"{full_url}"', f'"{reference}"')
    resources: list[dict[str, Any]] = json.loads(text)
    return resources


@pytest.mark.parametrize("bundle", sorted(SYNTHEA.glob("*.json")), ids=lambda p: p.stem[:20])
def test_fast_path_matches_fhirpathpy_on_synthea(bundle: Path) -> None:
    registry = load_registry(ROOT / "profiles")
    model = models["r4"]
    mismatches: list[str] = []
    evaluations = 0
    for resource in _transaction_resources(bundle):
        for compiled in registry.extractors(resource["resourceType"]):
            assert compiled.fast, compiled.expression
            expected = fhirpathpy.compile(_reference_expression(compiled.expression), model)
            got = compiled.extract(resource)
            evaluations += 1
            if _comparable(got) != _comparable(expected(resource, {})):
                mismatches.append(f"{resource['resourceType']}/{resource['id']} {compiled}")
    assert evaluations > 1000
    assert mismatches == []

"""The search-parameter registry read from `profiles/`: per-type lookup, common parameters,
per-type expressions, cmfhir's own definitions, and the derivation of `profiles/`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from cmfhir.resources.fhirpath import split_union, uses_fast_path
from cmfhir.resources.search_parameters import (
    SearchParameterRegistry,
    load_registry,
    parse_search_parameters,
)

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "profiles"
SHARED_FHIR = ROOT.parent / "shared" / "fhir"
CORE = "http://hl7.org/fhir/SearchParameter/"


@pytest.fixture(scope="module")
def registry() -> SearchParameterRegistry:
    return load_registry(PROFILES)


def test_core_definitions_are_all_loaded(registry: SearchParameterRegistry) -> None:
    # cmfhir's own definitions (profiles/search-parameters/, profiles/content/) come on top.
    core = [p for p in registry.all() if p.url.startswith(CORE)]
    assert len(core) == 1426
    assert len(registry) == len(registry.all()) >= 1426
    assert "Patient" in registry.resource_types()
    assert "Resource" not in registry.resource_types()


def test_registry_is_read_once_per_directory() -> None:
    assert load_registry(PROFILES) is load_registry(PROFILES / ".." / "profiles")


@pytest.mark.parametrize(
    ("resource_type", "code", "url"),
    [
        pytest.param("Patient", "name", CORE + "Patient-name", id="own"),
        pytest.param("Patient", "_tag", CORE + "Resource-tag", id="resource-common"),
        pytest.param("Patient", "_id", CORE + "Resource-id", id="id"),
        pytest.param("Patient", "_lastUpdated", CORE + "Resource-lastUpdated", id="lastUpdated"),
        pytest.param("Patient", "_text", CORE + "DomainResource-text", id="domain-text-wins"),
        pytest.param("Bundle", "_text", CORE + "Resource-text", id="bundle-not-domain"),
        pytest.param("Observation", "patient", CORE + "clinical-patient", id="multi-base"),
        pytest.param("Resource", "_profile", CORE + "Resource-profile", id="system-level"),
        pytest.param("Resource", "name", None, id="system-level-no-type-params"),
        pytest.param("Patient", "nope", None, id="unknown-code"),
    ],
)
def test_get(
    registry: SearchParameterRegistry, resource_type: str, code: str, url: str | None
) -> None:
    found = registry.get(resource_type, code)
    assert (found.url if found else None) == url


def test_for_type_includes_common_parameters(registry: SearchParameterRegistry) -> None:
    patient = registry.for_type("Patient")
    assert {"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source", "_text"} <= set(
        patient
    )
    assert {"name", "birthdate", "identifier", "general-practitioner"} <= set(patient)
    assert "code" not in patient


def test_by_url(registry: SearchParameterRegistry) -> None:
    found = registry.by_url(CORE + "Observation-code-value-quantity")
    assert found is not None
    assert found.type == "composite"
    assert found.component == (
        (CORE + "clinical-code", "code"),
        (CORE + "Observation-value-quantity", "value.as(Quantity)"),
    )
    assert registry.by_url(CORE + "nope") is None


@pytest.mark.parametrize(
    ("url", "resource_type", "expression"),
    [
        pytest.param(
            "clinical-patient",
            "Observation",
            "Observation.subject.where(resolve() is Patient)",
            id="union-part",
        ),
        pytest.param(
            "clinical-code",
            "MedicationRequest",
            "(MedicationRequest.medication as CodeableConcept)",
            id="parenthesized-part",
        ),
        pytest.param("Resource-tag", "Patient", "Patient.meta.tag", id="re-rooted"),
        pytest.param("clinical-patient", "Patient", None, id="type-not-in-expression"),
        pytest.param("DomainResource-text", "Patient", None, id="no-expression"),
        pytest.param(
            "Observation-value-date",
            "Observation",
            "(Observation.value as dateTime) | (Observation.value as Period)",
            id="several-parts",
        ),
    ],
)
def test_expression_for(
    registry: SearchParameterRegistry, url: str, resource_type: str, expression: str | None
) -> None:
    parameter = registry.by_url(CORE + url)
    assert parameter is not None
    assert parameter.expression_for(resource_type) == expression


def test_description_for_a_multi_base_parameter(registry: SearchParameterRegistry) -> None:
    parameter = registry.by_url(CORE + "clinical-patient")
    assert parameter is not None
    assert parameter.description_for("Condition") == "Who has the condition?"
    single = registry.by_url(CORE + "Patient-name")
    assert single is not None
    assert single.description_for("Patient") == single.description


def test_extractors_skip_composite_special_and_expressionless(
    registry: SearchParameterRegistry,
) -> None:
    codes = {c.parameter.code for c in registry.extractors("Observation")}
    assert {"code", "subject", "value-quantity", "_tag", "_profile", "date"} <= codes
    assert "code-value-quantity" not in codes  # composite
    assert "_text" not in codes and "_content" not in codes  # no expression
    assert "near" not in {c.parameter.code for c in registry.extractors("Location")}
    assert registry.extractors("Observation") is registry.extractors("Observation")


def test_every_core_expression_takes_the_fast_path(registry: SearchParameterRegistry) -> None:
    parts = [
        part
        for parameter in registry.all()
        if parameter.expression and parameter.type != "composite"
        for part in split_union(parameter.expression)
    ]
    core = [
        part
        for parameter in registry.all()
        if parameter.url.startswith(CORE) and parameter.expression and parameter.type != "composite"
        for part in split_union(parameter.expression)
    ]
    assert len(core) == 1739
    # cmfhir's own take it too (profiles/content/)
    assert [p for p in parts if not uses_fast_path(p)] == []


# --- cmfhir's own definitions in profiles/search-parameters/ --------------------------------


def _parameter(url: str, code: str, base: list[str], expression: str, **extra: Any) -> Any:
    return {
        "resourceType": "SearchParameter",
        "url": url,
        "name": code,
        "status": "active",
        "description": code,
        "code": code,
        "base": base,
        "type": "token",
        "expression": expression,
        **extra,
    }


def _write(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content), encoding="utf-8")


def _bundle(*resources: Any) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }


def test_own_definitions_are_loaded_and_replace_core_ones(tmp_path: Path) -> None:
    _write(
        tmp_path / "search-parameters.json",
        _bundle(
            _parameter(CORE + "Patient-gender", "gender", ["Patient"], "Patient.gender"),
            _parameter(CORE + "Resource-tag", "_tag", ["Resource"], "Resource.meta.tag"),
        ),
    )
    _write(
        tmp_path / "search-parameters" / "a-tier.json",
        _parameter(
            "https://cmfhir.org/fhir/SearchParameter/episode-tier",
            "tier",
            ["EpisodeOfCare"],
            "EpisodeOfCare.extension('https://cmfhir.org/tier').value",
        ),
    )
    _write(
        tmp_path / "search-parameters" / "b-bundle.json",
        _bundle(
            _parameter(
                "https://cmfhir.org/fhir/SearchParameter/patient-gender",
                "gender",
                ["Patient"],
                "Patient.extension('https://cmfhir.org/gender').value",
            )
        ),
    )
    (tmp_path / "search-parameters" / "README.md").write_text("not loaded", encoding="utf-8")

    registry = load_registry(tmp_path)

    assert len(registry) == 4
    tier = registry.get("EpisodeOfCare", "tier")
    assert tier is not None and tier.type == "token"
    gender = registry.get("Patient", "gender")
    assert gender is not None
    assert gender.url == "https://cmfhir.org/fhir/SearchParameter/patient-gender"
    assert registry.by_url(CORE + "Patient-gender") is not None
    assert set(registry.for_type("EpisodeOfCare")) == {"_tag", "tier"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param({"resourceType": "Patient"}, "expected a SearchParameter", id="not-sp"),
        pytest.param([], "not a FHIR resource", id="not-object"),
        pytest.param(
            {"resourceType": "SearchParameter", "code": "x", "base": ["Patient"], "type": "token"},
            "without url",
            id="no-url",
        ),
        pytest.param(
            {"resourceType": "SearchParameter", "url": "u", "base": ["Patient"], "type": "token"},
            "code is missing",
            id="no-code",
        ),
        pytest.param(
            {"resourceType": "SearchParameter", "url": "u", "code": "x", "type": "token"},
            "base is missing",
            id="no-base",
        ),
        pytest.param(
            _parameter("u", "x", ["Patient"], "Patient.x", target="Patient"),
            "target must be a list",
            id="bad-target",
        ),
    ],
)
def test_bad_definitions_are_refused(content: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_search_parameters(content, "custom.json")


def test_unreadable_file_names_itself(tmp_path: Path) -> None:
    _write(tmp_path / "search-parameters.json", _bundle())
    (tmp_path / "search-parameters").mkdir()
    (tmp_path / "search-parameters" / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json"):
        load_registry(tmp_path)


# --- profiles/ is derived from the R4B core package -----------------------------------------


@pytest.mark.skipif(not SHARED_FHIR.is_dir(), reason="../shared/fhir is not checked out")
def test_profiles_match_their_derivation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("derive", ROOT / "scripts" / "derive_profiles.py")
    assert spec is not None and spec.loader is not None
    derive = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(derive)
    monkeypatch.setattr(
        "sys.argv", ["derive_profiles.py", "--shared", str(SHARED_FHIR), "--out", str(tmp_path)]
    )
    derive.main()
    for name in ("search-parameters.json", "compartmentdefinition-patient.json"):
        assert (tmp_path / name).read_bytes() == (PROFILES / name).read_bytes(), name

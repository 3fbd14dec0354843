"""The resource type registry matches fhir.resources.R4B and the R4B resource-types value set."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from pathlib import Path

import fhir.resources.R4B
import pytest
from fhir.resources.R4B.resource import Resource

from cmfhir.resources import RESOURCE_TYPES, is_resource_type

ABSTRACT = {"Resource", "DomainResource"}


def test_matches_every_concrete_fhir_resources_model() -> None:
    models: set[str] = set()
    for module_info in pkgutil.iter_modules(fhir.resources.R4B.__path__):
        module = importlib.import_module(f"fhir.resources.R4B.{module_info.name}")
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, Resource)
                and value.__module__ == module.__name__
            ):
                models.add(value.get_resource_type())
    assert models - ABSTRACT == RESOURCE_TYPES


def test_matches_the_r4b_resource_types_value_set() -> None:
    profiles = Path(__file__).parents[2] / "profiles" / "required-bindings.json"
    bindings = json.loads(profiles.read_text(encoding="utf-8"))["bindings"]
    value_set = set(bindings["CapabilityStatement.rest.resource.type"]["codes"])
    assert value_set - ABSTRACT == RESOURCE_TYPES


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Patient", True),
        ("EpisodeOfCare", True),
        ("DetectedIssue", True),
        ("Bundle", True),
        ("patient", False),
        ("Resource", False),
        ("DomainResource", False),
        ("HumanName", False),
        ("MedicinalProduct", False),  # R4, replaced in R4B
        ("", False),
    ],
)
def test_is_resource_type(name: str, expected: bool) -> None:
    assert is_resource_type(name) is expected

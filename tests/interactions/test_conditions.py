"""The meaning of conditional criteria (no database): every spelling of the same search has
the same lock key, and criteria that mean something else do not."""

from __future__ import annotations

import pytest

from cmfhir.config import default_profiles_dir
from cmfhir.errors import BadRequest
from cmfhir.interactions.common import parse_conditions
from cmfhir.resources.search_parameters import load_registry

REGISTRY = load_registry(default_profiles_dir())
BASE = "identifier=urn:sys|42&active=true"


def _key(query: str, resource_type: str = "Patient") -> str:
    return parse_conditions(REGISTRY, resource_type, query).key


@pytest.mark.parametrize(
    "query",
    [
        "identifier=urn:sys%7C42&active=true",
        "active=true&identifier=urn:sys|42",
        "identifier=urn:sys|42&active=true&identifier=urn:sys|42",
        "identifier=urn%3Asys%7C42&active=true",
        "active=true&active=true&identifier=urn:sys%7c42",
        "identifier=urn:sys|42&active=true&_count=5",
    ],
    ids=["pipe-encoded", "order", "repeated", "all-encoded", "repeated-other", "result-param"],
)
def test_spellings_of_the_same_criteria_have_one_key(query: str) -> None:
    assert _key(query) == _key(BASE)


def test_values_of_one_parameter_in_any_order_have_one_key() -> None:
    assert _key("identifier=urn:sys|1,urn:sys|2") == _key("identifier=urn:sys|2,urn:sys|1")


@pytest.mark.parametrize(
    ("query", "resource_type"),
    [
        ("identifier=urn:sys|43&active=true", "Patient"),
        ("identifier=urn:sys|42", "Patient"),
        ("identifier=urn:sys|42&active=false", "Patient"),
        ("identifier=42&active=true", "Patient"),
        ("identifier=urn:sys|42&active=true", "Practitioner"),
        ("identifier=urn:sys|42,urn:sys|43&active=true", "Patient"),
    ],
    ids=["other-value", "fewer", "other-flag", "no-system", "other-type", "or-more"],
)
def test_other_criteria_have_another_key(query: str, resource_type: str) -> None:
    assert _key(query, resource_type) != _key(BASE)


def test_no_criteria_is_refused() -> None:
    with pytest.raises(BadRequest):
        parse_conditions(REGISTRY, "Patient", "_count=1")

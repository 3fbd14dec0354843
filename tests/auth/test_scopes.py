"""SMART scopes v1 and v2 parsed into their typed form (no database)."""

from __future__ import annotations

import pytest

from cmfhir.auth.principal import Principal
from cmfhir.auth.scopes import ResourceScope, TokenFilter, parse_scope, parse_scopes

LAB = "http://terminology.hl7.org/CodeSystem/observation-category"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "patient/*.read", ResourceScope("patient", "*", frozenset("rs")), id="v1-read"
        ),
        pytest.param(
            "user/Observation.write",
            ResourceScope("user", "Observation", frozenset("cud")),
            id="v1-write",
        ),
        pytest.param("system/*.*", ResourceScope("system", "*", frozenset("cruds")), id="v1-star"),
        pytest.param(
            "patient/Observation.rs",
            ResourceScope("patient", "Observation", frozenset("rs")),
            id="v2-rs",
        ),
        pytest.param(
            "user/Observation.cruds",
            ResourceScope("user", "Observation", frozenset("cruds")),
            id="v2-cruds",
        ),
        pytest.param(
            f"patient/Observation.rs?category={LAB}|laboratory",
            ResourceScope(
                "patient",
                "Observation",
                frozenset("rs"),
                (TokenFilter("category", ((LAB, "laboratory"),)),),
            ),
            id="v2-granular",
        ),
        pytest.param(
            "http://smarthealthit.org/fhir/scopes/patient/*.r",
            ResourceScope("patient", "*", frozenset("r")),
            id="uri-form",
        ),
    ],
)
def test_parses(text: str, expected: ResourceScope) -> None:
    assert parse_scope(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("patient/Observation.sr", id="out-of-order"),
        pytest.param("patient/Observation.rr", id="repeated"),
        pytest.param("patient/Observation.x", id="unknown-letter"),
        pytest.param("doctor/Observation.rs", id="unknown-family"),
        pytest.param("patient/Observation.rs?code:text=x", id="modifier-not-enforceable"),
        pytest.param("patient/Observation.rs?subject.name=x", id="chain-not-enforceable"),
        pytest.param("openid", id="identity"),
        pytest.param("launch/patient", id="context"),
    ],
)
def test_grants_nothing(text: str) -> None:
    assert parse_scope(text) is None


def test_principal_allows_by_type_and_letter() -> None:
    principal = Principal(
        "patient", patient="p1", scopes=("openid", "patient/Observation.rs", "patient/Patient.r")
    )
    assert len(parse_scopes(" ".join(principal.scopes))) == 2
    assert principal.allows("Observation", "s")
    assert principal.allows("Patient", "r")
    assert not principal.allows("Patient", "s")
    assert not principal.allows("Condition", "r")
    assert not principal.allows("Observation", "c")
    assert principal.member == "p1"

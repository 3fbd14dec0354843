"""Unknown search parameters (https://hl7.org/fhir/R4B/search.html#errors): refused by
default with the closest known parameter named, ignored and reported with
`Prefer: handling=lenient`; result parameters never make a create conditional."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

FHIR = {"Content-Type": "application/fhir+json"}
LENIENT = {"Prefer": "handling=lenient"}


def _patient(family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


@pytest.mark.parametrize(
    ("path", "params", "named", "suggested"),
    [
        pytest.param("Patient", {"nmae": "x"}, "nmae", "name", id="typo"),
        pytest.param("Patient", {"birthdat": "2000"}, "birthdat", "birthdate", id="typo-date"),
        pytest.param("Patient", {"nmae:exact": "x"}, "nmae:exact", "name", id="typo-modifier"),
        pytest.param("Observation", {"_sumary": "true"}, "_sumary", "_summary", id="result"),
        pytest.param("Encounter", {"subject:Patient.nmae": "x"}, "nmae", "name", id="in-chain"),
        pytest.param("Patient", {"_has:Observation:subject:cod": "x"}, "cod", "code", id="in-has"),
        pytest.param("", {"nmae": "x"}, "nmae", None, id="system-level"),
    ],
)
def test_unknown_parameter_is_refused_by_default(
    client: httpx.Client, path: str, params: dict[str, str], named: str, suggested: str | None
) -> None:
    for headers in ({}, {"Prefer": "handling=strict"}):
        response = client.get(path, params=params, headers=headers)
        assert response.status_code == 400, response.text
        issue = response.json()["issue"][0]
        assert issue["code"] == "not-supported"
        assert f"'{named}'" in issue["diagnostics"]
        if suggested is not None:
            assert f"did you mean '{suggested}'" in issue["diagnostics"]


def test_lenient_ignores_and_reports_unknown_parameters(client: httpx.Client) -> None:
    family = f"Lenient{uuid.uuid4().hex[:8]}"
    created = client.post("Patient", json=_patient(family), headers=FHIR)
    assert created.status_code == 201
    response = client.get("Patient", params={"family": family, "nmae": "x"}, headers=LENIENT)
    assert response.status_code == 200, response.text
    bundle = response.json()
    matches = [e for e in bundle["entry"] if e["search"]["mode"] == "match"]
    assert [e["resource"]["id"] for e in matches] == [created.json()["id"]]
    outcomes = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcomes) == 1
    issue = outcomes[0]["resource"]["issue"][0]
    assert issue["severity"] == "warning"
    assert issue["expression"] == ["nmae"]
    assert "did you mean 'name'" in issue["diagnostics"]
    # The self link states the parameters that were used, not the ignored one.
    self_link = next(lk["url"] for lk in bundle["link"] if lk["relation"] == "self")
    assert "nmae" not in self_link
    assert family in self_link


def test_lenient_post_search(client: httpx.Client) -> None:
    response = client.post("Patient/_search", data={"nmae": "x", "_count": "1"}, headers=LENIENT)
    assert response.status_code == 200
    assert response.json()["entry"][-1]["search"]["mode"] == "outcome"
    refused = client.post("Patient/_search", data={"nmae": "x"})
    assert refused.status_code == 400


@pytest.mark.parametrize(
    ("params", "ok"),
    [
        pytest.param({"_contained": "false", "_containedType": "container"}, True, id="defaults"),
        pytest.param({"_contained": "true"}, False, id="contained-unsupported"),
        pytest.param({"_text": "diabetes"}, False, id="no-expression"),
    ],
)
def test_known_but_unsupported_parameters(
    client: httpx.Client, params: dict[str, str], ok: bool
) -> None:
    response = client.get("Condition", params={**params, "_count": "1"})
    assert response.status_code == (200 if ok else 400), response.text
    if not ok:
        assert response.json()["issue"][0]["code"] == "not-supported"
        lenient = client.get("Condition", params={**params, "_count": "1"}, headers=LENIENT)
        assert lenient.status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        "_format=json",
        "_format=application/fhir%2Bjson&_pretty=true",
        "_summary=true&_elements=name&_count=1&_sort=name&_total=none",
        "_include=Patient:organization&_revinclude=Encounter:subject",
        "_contained=false&_containedType=container",
    ],
)
def test_result_parameters_never_make_a_create_conditional(
    client: httpx.Client, query: str
) -> None:
    family = f"Plain{uuid.uuid4().hex[:8]}"
    ids = set()
    for _ in range(2):
        response = client.post(f"Patient?{query}", json=_patient(family), headers=FHIR)
        assert response.status_code == 201, response.text
        ids.add(response.json()["id"])
    assert len(ids) == 2  # two plain creates, not a conditional create matching the first


def test_criteria_with_result_parameters_still_make_a_create_conditional(
    client: httpx.Client,
) -> None:
    family = f"Cond{uuid.uuid4().hex[:8]}"
    first = client.post(
        f"Patient?family={family}&_format=json", json=_patient(family), headers=FHIR
    )
    again = client.post(
        f"Patient?family={family}&_format=json", json=_patient(family), headers=FHIR
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]


def test_composite_parameters_are_listed_in_the_capability_statement(
    client: httpx.Client,
) -> None:
    statement = client.get("metadata").json()
    observation = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Observation")
    listed = {p["name"]: p["type"] for p in observation["searchParam"]}
    assert listed["component-code-value-quantity"] == "composite"
    assert listed["combo-code-value-concept"] == "composite"

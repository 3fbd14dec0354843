"""ValueSet/$expand over real HTTP, at type level (url, valueSet) and instance level, with
filter, count and offset, over the CodeSystems of profiles/content/ and the required
bindings of the core specification."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.content import responses as R
from tests.content.conftest import FHIR

ROLES = f"{R.BASE}/ValueSet/care-team-role"
ROLE_CODES = [
    "care-manager",
    "supervisor",
    "peer-support",
    "family-navigator",
    "community-health-worker",
    "extender",
    "pcp",
    "bh-provider",
    "guardian",
    "family",
]


def expanded(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "ValueSet"
    expansion: dict[str, Any] = body["expansion"]
    return expansion


def codes(expansion: dict[str, Any]) -> list[str]:
    return [c["code"] for c in expansion.get("contains", [])]


def test_whole_code_system(client: httpx.Client) -> None:
    expansion = expanded(client.get("ValueSet/$expand", params={"url": ROLES}))
    assert codes(expansion) == ROLE_CODES
    assert expansion["total"] == 10
    first = expansion["contains"][0]
    assert first == {
        "system": f"{R.BASE}/CodeSystem/care-team-role",
        "code": "care-manager",
        "display": "Care manager",
    } | ({"version": first["version"]} if "version" in first else {})


def test_instance_level(client: httpx.Client) -> None:
    answer = expanded(client.get("ValueSet/program/$expand"))
    assert codes(answer)[0] == "tcm"
    assert client.get("ValueSet/no-such-set/$expand").status_code == 404


def test_enumerated_concepts_take_display_from_the_code_system(client: httpx.Client) -> None:
    expansion = expanded(
        client.get("ValueSet/$expand", params={"url": f"{R.BASE}/ValueSet/support-person-role"})
    )
    assert [(c["code"], c["display"]) for c in expansion["contains"]][:2] == [
        ("peer-support", "Peer support specialist"),
        ("family-navigator", "Family navigator"),
    ]


@pytest.mark.parametrize(
    ("params", "expected", "total"),
    [
        pytest.param({"filter": "family"}, ["family-navigator", "family"], 2, id="filter"),
        pytest.param(
            {"filter": "CARE manager"}, ["care-manager", "extender"], 2, id="words-any-case"
        ),
        pytest.param({"filter": "zzz"}, [], 0, id="filter-nothing"),
        pytest.param({"count": "3"}, ROLE_CODES[:3], 10, id="count"),
        pytest.param({"count": "3", "offset": "8"}, ROLE_CODES[8:], 10, id="offset"),
        pytest.param({"count": "0"}, [], 10, id="count-zero"),
        pytest.param(
            {"filter": "provider", "count": "1", "offset": "1"}, ["bh-provider"], 2, id="all-three"
        ),
    ],
)
def test_filter_and_paging(
    client: httpx.Client, params: dict[str, str], expected: list[str], total: int
) -> None:
    expansion = expanded(client.get("ValueSet/$expand", params={"url": ROLES, **params}))
    assert codes(expansion) == expected
    assert expansion["total"] == total


def test_value_set_sent_in_parameters(client: httpx.Client) -> None:
    value_set = {
        "resourceType": "ValueSet",
        "status": "active",
        "compose": {
            "include": [
                {
                    "system": f"{R.BASE}/CodeSystem/nc-sdoh-screening",
                    "filter": [{"property": "domain", "op": "=", "value": "housing"}],
                }
            ],
            "exclude": [
                {
                    "system": f"{R.BASE}/CodeSystem/nc-sdoh-screening",
                    "concept": [{"code": "utilities-unable"}],
                }
            ],
        },
    }
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "valueSet", "resource": value_set}],
    }
    expansion = expanded(client.post("ValueSet/$expand", json=body, headers=FHIR))
    assert codes(expansion) == ["housing-stayed-outside", "housing-worried-losing"]


def test_required_binding_value_set(client: httpx.Client) -> None:
    expansion = expanded(
        client.get(
            "ValueSet/$expand", params={"url": "http://hl7.org/fhir/ValueSet/administrative-gender"}
        )
    )
    assert sorted(codes(expansion)) == ["female", "male", "other", "unknown"]
    assert expansion["contains"][0]["system"] == "http://hl7.org/fhir/administrative-gender"


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        pytest.param(
            {"url": "https://example.org/ValueSet/none"}, 404, "No ValueSet", id="unknown"
        ),
        pytest.param({}, 400, "url", id="no-value-set"),
        pytest.param({"url": ROLES, "count": "-1"}, 400, "count", id="negative-count"),
        pytest.param({"url": ROLES, "activeOnly": "true"}, 400, "activeOnly", id="unsupported"),
    ],
)
def test_refusals(client: httpx.Client, params: dict[str, str], status: int, words: str) -> None:
    answer = client.get("ValueSet/$expand", params=params)
    assert answer.status_code == status, answer.text
    assert words in answer.text


def test_code_system_not_held(client: httpx.Client) -> None:
    value_set = {
        "resourceType": "ValueSet",
        "status": "active",
        "compose": {"include": [{"system": "http://loinc.org"}]},
    }
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "valueSet", "resource": value_set}],
    }
    answer = client.post("ValueSet/$expand", json=body, headers=FHIR)
    assert answer.status_code == 422, answer.text
    assert "http://loinc.org" in answer.text

"""Pages picked from the index rows of one criterion (store/search_sql.py): the other
criteria, tested for each candidate, keep their meaning (`:not`, `:missing`, composite,
chain, `_id`), and paging through such a search visits every match exactly once."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

FHIR = {"Content-Type": "application/fhir+json"}
RUN = uuid.uuid4().hex[:10]
LOINC = "http://loinc.org"


def _observation(n: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"drv-{RUN}-{n}",
        "status": "final" if n % 2 else "amended",
        "code": {"coding": [{"system": LOINC, "code": f"drv-{RUN}"}]},
        "subject": {"reference": f"Patient/drv-{RUN}-p{n % 3}"},
        "effectiveDateTime": f"202{n % 5}-06-01T10:00:00Z",
    }
    if n % 4 == 0:
        body["valueQuantity"] = {"value": n, "unit": "kg"}
    if n % 3 == 0:
        body["component"] = [
            {
                "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                "valueQuantity": {"value": 100 + n, "unit": "mm[Hg]"},
            }
        ]
    return body


@pytest.fixture(scope="module")
def corpus(client: httpx.Client) -> None:
    entries = [
        {
            "resource": {
                "resourceType": "Patient",
                "id": f"drv-{RUN}-p{k}",
                "gender": ["female", "male", "other"][k],
            },
            "request": {"method": "PUT", "url": f"Patient/drv-{RUN}-p{k}"},
        }
        for k in range(3)
    ]
    entries += [
        {
            "resource": _observation(n),
            "request": {"method": "PUT", "url": f"Observation/drv-{RUN}-{n}"},
        }
        for n in range(24)
    ]
    response = client.post(
        "", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}, headers=FHIR
    )
    assert response.status_code == 200, response.text[:300]


def _all(client: httpx.Client, params: dict[str, str]) -> list[str]:
    """Every match, following next links."""
    found: list[str] = []
    response = client.get("Observation", params=params)
    while True:
        assert response.status_code == 200, response.text[:300]
        bundle = response.json()
        found += [e["resource"]["id"] for e in bundle.get("entry", [])]
        following = [x["url"] for x in bundle.get("link", []) if x["relation"] == "next"]
        if not following:
            return found
        response = client.get(following[0])


def _n(numbers: list[int]) -> set[str]:
    return {f"drv-{RUN}-{n}" for n in numbers}


CODE = f"{LOINC}|drv-{RUN}"
CASES = [
    pytest.param({}, list(range(24)), id="driver-only"),
    pytest.param({"status:not": "final"}, [n for n in range(24) if n % 2 == 0], id="not"),
    pytest.param(
        {"value-quantity:missing": "true"}, [n for n in range(24) if n % 4], id="missing-true"
    ),
    pytest.param(
        {"value-quantity:missing": "false"},
        [n for n in range(24) if n % 4 == 0],
        id="missing-false",
    ),
    pytest.param({"date": "ge2023-01-01"}, [n for n in range(24) if n % 5 >= 3], id="date"),
    pytest.param(
        {"component-code-value-quantity": f"{LOINC}|8480-6$gt110"},
        [n for n in range(24) if n % 3 == 0 and 100 + n > 110],
        id="composite",
    ),
    pytest.param(
        {"subject:Patient.gender": "male"}, [n for n in range(24) if n % 3 == 1], id="chain"
    ),
    pytest.param({"_id": f"drv-{RUN}-5,drv-{RUN}-6"}, [5, 6], id="id"),
    pytest.param(
        {"status": "final,amended", "date": "lt2022-01-01"},
        [n for n in range(24) if n % 5 < 2],
        id="or-values",
    ),
]


@pytest.mark.parametrize(("extra", "expected"), CASES)
@pytest.mark.parametrize("count", ["3", "100"])
def test_driven_page_keeps_every_criterion(
    client: httpx.Client, corpus: None, extra: dict[str, str], expected: list[int], count: str
) -> None:
    found = _all(client, {"code": CODE, **extra, "_count": count})
    assert len(found) == len(set(found)), "a match came twice across pages"
    assert set(found) == _n(expected)


def test_driven_first_page_states_the_total(client: httpx.Client, corpus: None) -> None:
    """One criterion: its index rows alone are counted, by default."""
    bundle = client.get("Observation", params={"code": CODE, "_count": "2"}).json()
    assert bundle["total"] == 24
    assert len(bundle["entry"]) == 2


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"status": "final"}, id="second-criterion"),
        pytest.param({"_lastUpdated": "gt2000-01-01"}, id="resource-row"),
    ],
)
def test_count_that_probes_each_candidate_only_when_asked(
    client: httpx.Client, corpus: None, extra: dict[str, str]
) -> None:
    """A count that tests each candidate for another criterion costs a probe per match up
    to the bound: a first page states such a total only when `_total` asks for it."""
    params = {"code": CODE, **extra, "_count": "2"}
    unasked = client.get("Observation", params=params).json()
    assert "total" not in unasked
    assert len(unasked["entry"]) == 2
    expected = 12 if "status" in extra else 24
    for total in ("accurate", "estimate"):
        asked = client.get("Observation", params={**params, "_total": total}).json()
        assert asked["total"] == expected
    everything = client.get("Observation", params={**params, "_count": "100"}).json()
    assert everything["total"] == expected, "a page holding every match states its total"

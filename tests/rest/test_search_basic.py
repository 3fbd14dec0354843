"""The search the foundation offers: _id, _lastUpdated, _tag, token/string/reference/date,
_count, _summary=count, and next links built from the base URL the client used."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

FHIR = {"Content-Type": "application/fhir+json"}
RUN = uuid.uuid4().hex[:10]


def _ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


@pytest.fixture(scope="module")
def corpus(client: httpx.Client) -> dict[str, str]:
    people = {
        "ada": {
            "name": [{"family": "Lovelace", "given": ["Ada"]}],
            "gender": "female",
            "birthDate": "1985-12-10",
            "meta": {"tag": [{"system": "urn:test:tag", "code": RUN}]},
        },
        "jose": {
            "name": [{"family": "Núñez", "given": ["José"]}],
            "gender": "male",
            "birthDate": "1990-06",
        },
        "sam": {"name": [{"family": "Lovell", "given": ["Sam"]}], "gender": "other"},
    }
    ids = {}
    for key, body in people.items():
        resource = {
            "resourceType": "Patient",
            "id": f"{key}-{RUN}",
            "identifier": [{"system": f"urn:test:{RUN}", "value": key}],
            **body,
        }
        response = client.put(f"Patient/{key}-{RUN}", json=resource, headers=FHIR)
        assert response.status_code == 201, response.text
        ids[key] = response.json()["id"]
    enc = {
        "resourceType": "Encounter",
        "id": f"enc-{RUN}",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
        "subject": {"reference": f"Patient/{ids['ada']}"},
        "period": {"start": "2024-03-01T10:00:00Z", "end": "2024-03-01T14:00:00Z"},
    }
    assert client.put(f"Encounter/enc-{RUN}", json=enc, headers=FHIR).status_code == 201
    ids["enc"] = f"enc-{RUN}"
    return ids


def _search(client: httpx.Client, resource_type: str, **params: str) -> set[str]:
    response = client.get(resource_type, params={**params, "_count": "100"})
    assert response.status_code == 200, response.text
    return _ids(response.json())


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param({"name": "lovel"}, {"ada", "sam"}, id="string-prefix"),
        pytest.param({"family": "nunez"}, {"jose"}, id="string-accent-insensitive"),
        pytest.param({"name:exact": "Lovelace"}, {"ada"}, id="string-exact"),
        pytest.param({"name:exact": "lovelace"}, set(), id="string-exact-case"),
        pytest.param({"name:contains": "vel"}, {"ada", "sam"}, id="string-contains"),
        pytest.param({"gender": "female"}, {"ada"}, id="token-code"),
        pytest.param({"gender": "female,male"}, {"ada", "jose"}, id="token-or"),
        pytest.param({"identifier": f"urn:test:{RUN}|jose"}, {"jose"}, id="token-system-code"),
        pytest.param({"gender:not": "female"}, {"jose", "sam"}, id="token-not"),
        pytest.param({"birthdate": "1985"}, {"ada"}, id="date-year"),
        pytest.param({"birthdate": "ge1990-01-01"}, {"jose"}, id="date-ge"),
        pytest.param({"birthdate": "lt1990-06-15"}, {"ada", "jose"}, id="date-lt-overlap"),
        pytest.param({"birthdate:missing": "true"}, {"sam"}, id="date-missing"),
        pytest.param({"_tag": f"urn:test:tag|{RUN}"}, {"ada"}, id="tag"),
    ],
)
def test_patient_search(
    client: httpx.Client, corpus: dict[str, str], params: dict[str, str], expected: set[str]
) -> None:
    scoped = {"identifier": f"urn:test:{RUN}|", **params}
    assert _search(client, "Patient", **scoped) == {corpus[k] for k in expected}


def test_id_and_reference_search(client: httpx.Client, corpus: dict[str, str]) -> None:
    assert _search(client, "Patient", _id=corpus["ada"]) == {corpus["ada"]}
    ada = corpus["ada"]
    assert _search(client, "Encounter", subject=f"Patient/{ada}") == {corpus["enc"]}
    assert _search(client, "Encounter", patient=ada) == {corpus["enc"]}
    assert _search(client, "Encounter", **{"subject:Patient": ada}) == {corpus["enc"]}
    assert _search(client, "Encounter", date="2024-03-01", patient=ada) == {corpus["enc"]}
    assert _search(client, "Encounter", **{"class": "EMER", "_id": corpus["enc"]}) == {
        corpus["enc"]
    }


def test_last_updated(client: httpx.Client, corpus: dict[str, str]) -> None:
    scope = {"identifier": f"urn:test:{RUN}|"}
    assert corpus["ada"] in _search(client, "Patient", _lastUpdated="gt2020-01-01", **scope)
    assert _search(client, "Patient", _lastUpdated="lt2020-01-01", **scope) == set()


def test_summary_count_and_count_zero(client: httpx.Client, corpus: dict[str, str]) -> None:
    scoped = {"identifier": f"urn:test:{RUN}|"}
    counted = client.get("Patient", params={**scoped, "_summary": "count"}).json()
    assert counted["total"] == 3
    assert "entry" not in counted
    zero = client.get("Patient", params={**scoped, "_count": "0"}).json()
    assert zero["total"] == 3
    assert "entry" not in zero


def test_paging_follows_next_links_from_the_clients_base(
    client: httpx.Client, corpus: dict[str, str], base: str
) -> None:
    url = f"{base}/Patient?identifier=urn:test:{RUN}|&_count=1"
    seen: list[str] = []
    while url:
        assert url.startswith(base)
        bundle = httpx.get(url).json()
        seen.extend(e["resource"]["id"] for e in bundle.get("entry", []))
        url = next((lk["url"] for lk in bundle["link"] if lk["relation"] == "next"), "")
    assert sorted(seen) == sorted(corpus[k] for k in ("ada", "jose", "sam"))
    assert len(seen) == 3


def test_post_search(client: httpx.Client, corpus: dict[str, str]) -> None:
    response = client.post(
        "Patient/_search",
        data={"gender": "female", "identifier": f"urn:test:{RUN}|"},
    )
    assert response.status_code == 200
    assert _ids(response.json()) == {corpus["ada"]}


def test_patient_compartment_search(client: httpx.Client, corpus: dict[str, str]) -> None:
    ada, jose = corpus["ada"], corpus["jose"]
    assert _ids(client.get(f"Patient/{ada}/Encounter").json()) == {corpus["enc"]}
    assert _ids(client.get(f"Patient/{jose}/Encounter").json()) == set()
    assert (
        _ids(client.get(f"Patient/{ada}/Encounter", params={"status": "planned"}).json()) == set()
    )
    assert client.get(f"Patient/{ada}/Organization").status_code == 404

"""`Patient/[id]/$everything`: the compartment plus what it references, paged with next
links, narrowed by _type, _since, start/end; a member's token on their own record only."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any

import httpx
import pytest

from cmfhir.app import open_context
from cmfhir.auth.principal import Principal
from cmfhir.config import Settings
from cmfhir.exchange.access import Forbidden
from cmfhir.exchange.everything import everything
from cmfhir.interactions.operations.call import OperationCall


def _create(client: httpx.Client, resource: dict[str, Any]) -> str:
    response = client.post(resource["resourceType"], json=resource)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture(scope="module")
def record(client: httpx.Client) -> dict[str, Any]:
    org = _create(client, {"resourceType": "Organization", "name": "Clinic"})
    doc = _create(client, {"resourceType": "Practitioner", "name": [{"family": "Welby"}]})
    unrelated = _create(client, {"resourceType": "Practitioner", "name": [{"family": "Other"}]})
    patient = _create(
        client,
        {
            "resourceType": "Patient",
            "managingOrganization": {"reference": f"Organization/{org}"},
            "generalPractitioner": [{"reference": f"Practitioner/{doc}"}],
        },
    )
    other = _create(client, {"resourceType": "Patient"})
    ref = {"reference": f"Patient/{patient}"}
    old = _create(
        client,
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": ref,
            "period": {"start": "2020-01-01", "end": "2020-01-02"},
        },
    )
    recent = _create(
        client,
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": ref,
            "period": {"start": "2024-03-01", "end": "2024-03-02"},
            "participant": [{"individual": {"reference": f"Practitioner/{doc}"}}],
        },
    )
    observations = [
        _create(
            client,
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": f"obs {n}"},
                "subject": ref,
            },
        )
        for n in range(3)
    ]
    _create(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "not theirs"},
            "subject": {"reference": f"Patient/{other}"},
            "performer": [{"reference": f"Practitioner/{unrelated}"}],
        },
    )
    time.sleep(0.05)
    marker = client.get(f"Observation/{observations[-1]}").json()["meta"]["lastUpdated"]
    time.sleep(0.05)
    late = _create(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "late"},
            "subject": ref,
        },
    )
    return {
        "patient": patient,
        "org": org,
        "doc": doc,
        "old": old,
        "recent": recent,
        "observations": observations,
        "late": late,
        "marker": marker,
    }


def _all(client: httpx.Client, url: str) -> tuple[list[str], list[str], int]:
    matches: list[str] = []
    included: list[str] = []
    pages = 0
    next_url: str | None = url
    while next_url:
        response = client.get(next_url)
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["type"] == "searchset"
        pages += 1
        for entry in bundle.get("entry", []):
            key = f"{entry['resource']['resourceType']}/{entry['resource']['id']}"
            (matches if entry["search"]["mode"] == "match" else included).append(key)
        next_url = next((lk["url"] for lk in bundle["link"] if lk["relation"] == "next"), None)
        if next_url:
            assert next_url.startswith("http")
    return matches, included, pages


def test_everything_pages_through_the_record(client: httpx.Client, record: dict[str, Any]) -> None:
    p = record["patient"]
    matches, included, pages = _all(client, f"Patient/{p}/$everything?_count=2")
    expected = {
        f"Patient/{p}",
        f"Encounter/{record['old']}",
        f"Encounter/{record['recent']}",
        f"Observation/{record['late']}",
        *(f"Observation/{o}" for o in record["observations"]),
    }
    assert sorted(matches) == sorted(expected)  # each once, none of the other member's
    assert pages == 4
    assert f"Organization/{record['org']}" in included
    assert f"Practitioner/{record['doc']}" in included
    assert all(not i.startswith("Patient/") and not i.startswith("Observation/") for i in included)


def test_type_since_and_dates(client: httpx.Client, record: dict[str, Any]) -> None:
    p = record["patient"]
    only, included, _ = _all(client, f"Patient/{p}/$everything?_type=Encounter")
    assert sorted(only) == sorted([f"Encounter/{record['old']}", f"Encounter/{record['recent']}"])
    assert included == []
    since, _, _ = _all(
        client, f"Patient/{p}/$everything?_since={record['marker'].replace('+', '%2B')}"
    )
    assert since == [f"Observation/{record['late']}"]
    dated, _, _ = _all(client, f"Patient/{p}/$everything?start=2024-01-01&end=2024-12-31")
    assert f"Encounter/{record['recent']}" in dated
    assert f"Encounter/{record['old']}" not in dated
    assert f"Observation/{record['late']}" in dated  # no care date: kept


def test_unknown_patient_and_bad_parameters(client: httpx.Client) -> None:
    assert client.get(f"Patient/{uuid.uuid4()}/$everything").status_code == 404
    assert client.get("Patient/x/$everything?_cursor=abc").status_code == 400
    assert client.get("Patient/x/$everything?start=notadate").status_code == 400
    assert client.get("Observation/x/$everything").status_code in (400, 404)


def test_listed_in_the_capability_statement(client: httpx.Client) -> None:
    statement = client.get("metadata").json()
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert "everything" in {o["name"] for o in patient.get("operation", [])}


async def test_a_members_token_sees_only_their_own_record(
    settings: Settings, client: httpx.Client, record: dict[str, Any]
) -> None:
    async with open_context(settings) as ctx:
        definition = ctx.operations.get("everything")
        assert definition is not None
        call = OperationCall(
            definition, "instance", "Patient", record["patient"], {"parameter": []}
        )
        own = replace(
            ctx, principal=Principal("patient", patient=record["patient"], scopes=("patient/*.rs",))
        )
        result = await everything(own, call, base="http://x/fhir")
        assert result.status == 200
        stranger = replace(
            ctx, principal=Principal("patient", patient="someone-else", scopes=("patient/*.rs",))
        )
        with pytest.raises(Forbidden):
            await everything(stranger, call, base="http://x/fhir")

"""What is indexed is what is stored and served: decimals written with an exponent, and
search-parameter expressions that fail on a resource (refused, never left out silently)."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from cmfhir.config import Settings, default_profiles_dir
from cmfhir.resources.fhirjson import parse_json
from cmfhir.resources.index_values import extract_index
from cmfhir.resources.search_parameters import load_registry
from cmfhir.store.database import async_url
from cmfhir.store.schema import INDEX_TABLES
from serving import run_cmfhir

FHIR = {"Content-Type": "application/fhir+json"}
LOINC = "http://loinc.org"


def _observation(code: str, value: str) -> str:
    """JSON text, so the number is sent exactly as written."""
    return (
        '{"resourceType":"Observation","status":"final",'
        f'"code":{{"coding":[{{"system":"{LOINC}","code":"{code}"}}]}},'
        f'"valueQuantity":{{"value":{value},"unit":"mg"}}}}'
    )


def _value(text: str) -> str:
    found = json.loads(text, parse_float=str, parse_int=str)
    return str(found["valueQuantity"]["value"])


def test_exponent_decimal_is_indexed_stored_and_served_as_one_value(
    client: httpx.Client, settings: Settings
) -> None:
    code = f"exp-{uuid.uuid4().hex[:10]}"
    created = client.post("Observation", content=_observation(code, "1E+2"), headers=FHIR)
    assert created.status_code == 201, created.text
    read = client.get(f"Observation/{created.json()['id']}")
    assert _value(created.text) == _value(read.text) == "100"
    # Reindexing (or `cmfhir check`) extracts from the stored text: the same index.
    registry = load_registry(settings.profiles_dir)
    assert extract_index(parse_json(created.text), registry) == extract_index(
        parse_json(read.text), registry
    )
    for searched in ("100", "1e2", "1E+2", "100.0"):
        found = client.get("Observation", params={"code": code, "value-quantity": searched})
        assert found.json()["total"] == 1, searched
    outside = client.get("Observation", params={"code": code, "value-quantity": "1e3"})
    assert outside.json()["total"] == 0


def test_exponent_that_would_expand_is_refused_and_nothing_stored(client: httpx.Client) -> None:
    code = f"exp-{uuid.uuid4().hex[:10]}"
    refused = client.post("Observation", content=_observation(code, "1e400"), headers=FHIR)
    assert refused.status_code == 400
    assert "1e400" in refused.json()["issue"][0]["diagnostics"]
    assert client.get("Observation", params={"code": code}).json()["total"] == 0


# A site's SearchParameter whose expression fails on some resources: `single()` of a
# Patient with two given names is an error in FHIRPath.
FIRST_GIVEN = {
    "resourceType": "SearchParameter",
    "url": "https://cmfhir.org/fhir/SearchParameter/test-first-given",
    "name": "first-given",
    "status": "active",
    "description": "The one given name",
    "code": "first-given",
    "base": ["Patient"],
    "type": "string",
    "expression": "Patient.name.given.single()",
}


def _patient(family: str, *given: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": list(given)}]}


@pytest.fixture
def extended_profiles(tmp_path: Path) -> Path:
    profiles = tmp_path / "profiles"
    shutil.copytree(default_profiles_dir(), profiles)
    (profiles / "search-parameters" / "first-given.json").write_text(
        json.dumps(FIRST_GIVEN), encoding="utf-8"
    )
    return profiles


def test_failing_expression_refuses_the_write(
    scratch_database: str, settings: Settings, start_server: type, extended_profiles: Path
) -> None:
    extended = settings.model_copy(
        update={"database_url": scratch_database, "profiles_dir": extended_profiles}
    )
    with start_server(extended) as server, httpx.Client(base_url=server.base) as client:
        one = client.post("Patient", json=_patient("Okafor", "Ada"), headers=FHIR)
        assert one.status_code == 201
        assert client.get("Patient", params={"first-given": "ada"}).json()["total"] == 1

        two = client.post("Patient", json=_patient("Okafor", "Ada", "Ngozi"), headers=FHIR)
        assert two.status_code == 422, two.text
        issue = two.json()["issue"][0]
        assert issue["code"] == "processing"
        assert "'first-given'" in issue["diagnostics"]
        assert "Ngozi" not in two.text

        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": _patient("Eze", "Chidi"),
                    "request": {"method": "POST", "url": "Patient"},
                },
                {
                    "resource": _patient("Eze", "Ada", "Ngozi"),
                    "request": {"method": "POST", "url": "Patient"},
                },
            ],
        }
        refused = client.post("", json=bundle, headers=FHIR)
        assert refused.status_code == 422, refused.text
        assert "'first-given'" in refused.text
        # Nothing of either write was stored.
        assert client.get("Patient", params={"family": "okafor"}).json()["total"] == 1
        assert client.get("Patient", params={"family": "eze"}).json()["total"] == 0


def test_reindex_and_check_name_a_resource_the_expression_fails_on(
    scratch_database: str, settings: Settings, start_server: type, extended_profiles: Path
) -> None:
    """Stored before the parameter was added: reindex stops naming it, check reports it."""
    plain = settings.model_copy(update={"database_url": scratch_database})
    with start_server(plain) as server, httpx.Client(base_url=server.base) as client:
        created = client.post("Patient", json=_patient("Okafor", "Ada", "Ngozi"), headers=FHIR)
        assert created.status_code == 201
    patient_id = created.json()["id"]
    workdir = extended_profiles.parent
    env = {"CMFHIR_PROFILES_DIR": str(extended_profiles)}

    reindexed = run_cmfhir(scratch_database, workdir, "reindex", "--type", "Patient", **env)
    assert reindexed.returncode == 2, reindexed.stdout + reindexed.stderr
    assert "'first-given'" in reindexed.stderr
    assert f"Patient/{patient_id}" in reindexed.stderr
    assert "Ngozi" not in reindexed.stderr

    checked = run_cmfhir(scratch_database, workdir, "check", **env)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "search parameter expressions fail on the resource" in checked.stdout
    assert "first-given" in checked.stdout


def test_reindex_rebuilds_composite_rows(
    scratch_database: str, settings: Settings, start_server: type, tmp_path: Path
) -> None:
    """Resources stored before composite rows existed (migration 0004_search) are found by
    a composite search once `cmfhir reindex` has run."""
    blood_pressure = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "component": [
            {
                "code": {"coding": [{"system": LOINC, "code": code}]},
                "valueQuantity": {"value": value, "unit": "mm[Hg]"},
            }
            for code, value in (("8480-6", 85), ("8462-4", 60))
        ],
    }
    query = {"component-code-value-quantity": f"{LOINC}|8480-6$lt90"}
    scratch = settings.model_copy(update={"database_url": scratch_database})
    with start_server(scratch) as server, httpx.Client(base_url=server.base) as client:
        created = client.post("Observation", json=blood_pressure, headers=FHIR)
        assert created.status_code == 201
        assert client.get("Observation", params=query).json()["total"] == 1
        asyncio.run(_drop_composite_rows(scratch_database))
        assert client.get("Observation", params=query).json()["total"] == 0

        done = run_cmfhir(scratch_database, tmp_path, "reindex", "--type", "Observation")
        assert done.returncode == 0, done.stderr
        found = client.get("Observation", params=query).json()
        assert [e["resource"]["id"] for e in found["entry"]] == [created.json()["id"]]
    assert run_cmfhir(scratch_database, tmp_path, "check").returncode == 0


async def _drop_composite_rows(database_url: str) -> None:
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.begin() as conn:
            for table in INDEX_TABLES.values():
                await conn.execute(table.delete().where(table.c.grp.is_not(None)))
    finally:
        await engine.dispose()

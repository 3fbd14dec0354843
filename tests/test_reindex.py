"""Adding a SearchParameter to profiles/ makes it searchable after `cmfhir reindex`, with no
code change: end to end, with a second server that loads the extended profiles."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import httpx

from cmfhir.config import Settings, default_profiles_dir
from serving import run_cmfhir

FHIR = {"Content-Type": "application/fhir+json"}
MARITAL = {
    "resourceType": "SearchParameter",
    "id": "Patient-marital-status",
    "url": "https://cmfhir.org/fhir/SearchParameter/Patient-marital-status",
    "name": "marital-status",
    "status": "active",
    "description": "Marital status of the patient",
    "code": "marital-status",
    "base": ["Patient"],
    "type": "token",
    "expression": "Patient.maritalStatus",
}


def test_reindex_makes_a_new_parameter_searchable(
    client: httpx.Client, settings: Settings, start_server: type, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex
    code = f"M-{marker}"
    body = {
        "resourceType": "Patient",
        "maritalStatus": {"coding": [{"system": "urn:test:marital", "code": code}]},
    }
    old_id = client.post("Patient", json=body, headers=FHIR).json()["id"]

    profiles = tmp_path / "profiles"
    shutil.copytree(default_profiles_dir(), profiles)
    (profiles / "search-parameters" / "patient-marital-status.json").write_text(
        json.dumps(MARITAL), encoding="utf-8"
    )
    extended = settings.model_copy(update={"profiles_dir": profiles})
    query = {"marital-status": f"urn:test:marital|{code}"}
    with start_server(extended) as server, httpx.Client(base_url=server.base) as other:
        metadata = other.get("metadata").json()
        patient = next(r for r in metadata["rest"][0]["resource"] if r["type"] == "Patient")
        assert "marital-status" in {p["name"] for p in patient["searchParam"]}

        strict = {"Prefer": "handling=strict"}
        before = other.get("Patient", params=query, headers=strict).json()
        assert before["total"] == 0  # known now, but the stored Patient is not indexed yet
        new_id = other.post("Patient", json=body, headers=FHIR).json()["id"]

        done = run_cmfhir(
            settings.database_url,
            tmp_path,
            "reindex",
            "--type",
            "Patient",
            CMFHIR_PROFILES_DIR=str(profiles),
        )
        assert done.returncode == 0, done.stderr
        assert "reindexed" in done.stdout

        after = other.get("Patient", params=query, headers=strict).json()
        assert {e["resource"]["id"] for e in after["entry"]} == {old_id, new_id}
    # The first server never loaded the parameter: it still does not know it.
    assert client.get("Patient", params=query, headers=strict).status_code == 400


def test_reindex_of_unknown_type_fails_cleanly(settings: Settings, tmp_path: Path) -> None:
    done = run_cmfhir(settings.database_url, tmp_path, "reindex", "--type", "Spaceship")
    assert done.returncode == 2
    assert "Spaceship" in done.stderr

"""The SMART on FHIR Python client (`fhirclient`, R4 models, blocking requests) used unchanged
against the server: capability statement, read, search with paging, create, update, delete."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
import requests
from fhirclient.client import FHIRClient
from fhirclient.models.humanname import HumanName
from fhirclient.models.identifier import Identifier
from fhirclient.models.patient import Patient

FHIR = {"Content-Type": "application/fhir+json"}
MRN = "urn:test:fhirclient:mrn"


@pytest.fixture
def smart(base: str) -> Iterator[FHIRClient]:
    client = FHIRClient(settings={"app_id": "cmfhir-tests", "api_base": base})
    yield client
    client.server.session.close()


def _create(client: httpx.Client, family: str) -> str:
    body = {
        "resourceType": "Patient",
        "identifier": [{"system": MRN, "value": uuid.uuid4().hex}],
        "name": [{"family": family, "given": ["Ada", "King"]}],
        "gender": "female",
        "birthDate": "1815-12-10",
    }
    created = client.post("Patient", json=body, headers=FHIR)
    assert created.status_code == 201, created.text
    id: str = created.json()["id"]
    return id


def test_prepare_parses_the_capability_statement(smart: FHIRClient) -> None:
    assert smart.prepare() is True
    statement = smart.server.capabilityStatement
    assert statement.fhirVersion == "4.0.1"  # R4 by default
    types = {resource.type for resource in statement.rest[0].resource}
    assert {"Patient", "Observation", "CarePlan"} <= types


def test_reads_a_patient_created_over_http(client: httpx.Client, smart: FHIRClient) -> None:
    id = _create(client, "Lovelace")

    patient = Patient.read(id, smart.server)

    assert patient.id == id
    assert patient.name[0].family == "Lovelace"
    assert patient.name[0].given == ["Ada", "King"]
    assert patient.gender == "female"
    assert patient.birthDate.isostring == "1815-12-10"
    assert patient.identifier[0].system == MRN
    assert patient.meta.versionId == "1"


def test_search_pages_through_every_match(client: httpx.Client, smart: FHIRClient) -> None:
    family = f"Paged{uuid.uuid4().hex}"
    ids = {_create(client, family) for _ in range(5)}
    search = Patient.where(struct={"family": family, "_count": "2"})

    bundles = list(search.perform_iter(smart.server))
    found = list(search.perform_resources_iter(smart.server))

    assert [len(bundle.entry) for bundle in bundles] == [2, 2, 1]
    assert bundles[0].total == 5
    assert all(isinstance(patient, Patient) for patient in found)
    assert sorted(patient.id for patient in found) == sorted(ids)


def test_search_with_no_match_yields_nothing(smart: FHIRClient) -> None:
    search = Patient.where(struct={"family": f"Nobody{uuid.uuid4().hex}"})
    assert list(search.perform_resources_iter(smart.server)) == []


def test_create_update_and_delete_with_models(smart: FHIRClient) -> None:
    patient = Patient()
    patient.identifier = [Identifier({"system": MRN, "value": uuid.uuid4().hex})]
    patient.name = [HumanName({"family": "Before", "given": ["Grace"]})]
    patient.active = True

    created = patient.create(smart.server)

    assert created is not None
    id = created["id"]
    assert created["meta"]["versionId"] == "1"

    patient.id = id
    patient.name[0].family = "After"
    patient.active = False
    updated = patient.update(smart.server)

    assert updated is not None
    assert updated["meta"]["versionId"] == "2"
    read = Patient.read(id, smart.server)
    assert read.name[0].family == "After"
    assert read.active is False

    read.delete(smart.server)

    with pytest.raises(requests.HTTPError) as gone:
        Patient.read(id, smart.server)
    assert gone.value.response.status_code == 410

"""Fixtures of the care-management content tests: a member and a contact."""

from __future__ import annotations

import uuid

import httpx
import pytest

FHIR = {"Content-Type": "application/fhir+json"}


def created(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    body = response.json()
    return f"{body['resourceType']}/{body['id']}"


@pytest.fixture
def patient(client: httpx.Client) -> str:
    member = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:content", "value": uuid.uuid4().hex}],
        "name": [{"family": "Mbeki", "given": ["Dee"]}],
    }
    return created(client.post("Patient", json=member, headers=FHIR))


@pytest.fixture
def communication(client: httpx.Client, patient: str) -> str:
    contact = {
        "resourceType": "Communication",
        "status": "completed",
        "subject": {"reference": patient},
        "sent": "2026-11-30T09:00:00Z",
        "medium": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode",
                        "code": "PHONE",
                    }
                ]
            }
        ],
    }
    return created(client.post("Communication", json=contact, headers=FHIR))

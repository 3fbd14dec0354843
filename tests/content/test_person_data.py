"""Enrollment and person-driven data over real HTTP: EpisodeOfCare?acuity-tier, an exclusion
from TCM recorded on the enrollment (still found, never deleted), and Patient?gender-identity
and ?pronouns over the US Core 6.1 and HL7 extensions."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from tests.content import responses as R
from tests.content.conftest import FHIR, created

SNOMED = "http://snomed.info/sct"
NONBINARY = {"system": SNOMED, "code": "33791000087105"}
WOMAN = {"system": SNOMED, "code": "446141000124107"}
THEY = {"system": R.LOINC, "code": "LA29520-6"}
US_CORE_GI = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-genderIdentity"
HL7_GI = "http://hl7.org/fhir/StructureDefinition/individual-genderIdentity"
PRONOUNS = "http://hl7.org/fhir/StructureDefinition/individual-pronouns"


def enrollment(patient: str, tier: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "EpisodeOfCare",
        "extension": [{"url": f"{R.BASE}/StructureDefinition/acuity-tier", "valueCode": tier}],
        "status": "active",
        "type": [{"coding": [{"system": f"{R.BASE}/CodeSystem/program", "code": "tcm"}]}],
        "patient": {"reference": patient},
        "period": {"start": "2026-10-01"},
        **extra,
    }


def ids(client: httpx.Client, resource_type: str, params: dict[str, str]) -> set[str]:
    found = client.get(resource_type, params=params)
    assert found.status_code == 200, found.text
    return {f"{resource_type}/{e['resource']['id']}" for e in found.json().get("entry", [])}


def test_acuity_tier_search(client: httpx.Client, patient: str) -> None:
    high = created(client.post("EpisodeOfCare", json=enrollment(patient, "high"), headers=FHIR))
    low = created(client.post("EpisodeOfCare", json=enrollment(patient, "low"), headers=FHIR))
    assert ids(client, "EpisodeOfCare", {"patient": patient, "acuity-tier": "high"}) == {high}
    assert ids(client, "EpisodeOfCare", {"patient": patient, "acuity-tier": "high,low"}) == {
        high,
        low,
    }
    assert ids(client, "EpisodeOfCare", {"patient": patient, "acuity-tier": "moderate"}) == set()


def test_exclusion_is_recorded_not_deleted(client: httpx.Client, patient: str) -> None:
    location = created(
        client.post("EpisodeOfCare", json=enrollment(patient, "moderate"), headers=FHIR)
    )
    excluded = client.get(location).json()
    excluded["status"] = "finished"
    excluded["statusHistory"] = [{"status": "active", "period": {"start": "2026-10-01"}}]
    excluded["period"]["end"] = "2026-11-15"
    excluded["extension"].append(
        {
            "url": f"{R.BASE}/StructureDefinition/tcm-exclusion-reason",
            "valueCodeableConcept": {
                "coding": [{"system": f"{R.BASE}/CodeSystem/tcm-exclusion-reason", "code": "act"}]
            },
        }
    )
    assert client.put(location, json=excluded, headers=FHIR).status_code == 200
    assert ids(client, "EpisodeOfCare", {"patient": patient, "status": "active"}) == set()
    assert ids(client, "EpisodeOfCare", {"patient": patient, "status": "finished"}) == {location}


def member(**extensions: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:content", "value": uuid.uuid4().hex}],
        "gender": "other",
    }
    if extensions:
        body["extension"] = list(extensions.values())
    return body


@pytest.fixture(scope="module")
def members(client: httpx.Client) -> dict[str, str]:
    made = {
        "us-core": member(gi={"url": US_CORE_GI, "valueCodeableConcept": {"coding": [NONBINARY]}}),
        "hl7": member(
            gi={
                "url": HL7_GI,
                "extension": [
                    {"url": "value", "valueCodeableConcept": {"coding": [WOMAN]}},
                    {"url": "period", "valuePeriod": {"start": "2020-01-01"}},
                ],
            },
            pronouns={
                "url": PRONOUNS,
                "extension": [{"url": "value", "valueCodeableConcept": {"coding": [THEY]}}],
            },
        ),
        "none": member(),
    }
    return {
        name: created(client.post("Patient", json=body, headers=FHIR))
        for name, body in made.items()
    }


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param({"gender-identity": f"{SNOMED}|33791000087105"}, {"us-core"}, id="us-core"),
        pytest.param({"gender-identity": "446141000124107"}, {"hl7"}, id="hl7"),
        pytest.param(
            {"gender-identity": "33791000087105,446141000124107"}, {"us-core", "hl7"}, id="either"
        ),
        pytest.param({"pronouns": f"{R.LOINC}|LA29520-6"}, {"hl7"}, id="pronouns"),
        pytest.param(
            {"pronouns:missing": "true", "gender-identity:missing": "true"}, {"none"}, id="missing"
        ),
    ],
)
def test_person_searches(
    client: httpx.Client, members: dict[str, str], params: dict[str, str], expected: set[str]
) -> None:
    found = ids(
        client, "Patient", {"_id": ",".join(m.split("/")[1] for m in members.values()), **params}
    )
    assert found == {members[name] for name in expected}


def test_goal_in_the_members_words(client: httpx.Client, patient: str) -> None:
    goal = {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "description": {"text": "Walk to church without stopping"},
        "subject": {"reference": patient},
        "expressedBy": {"reference": patient},
    }
    location = created(client.post("Goal", json=goal, headers=FHIR))
    assert client.get(location).json()["expressedBy"] == {"reference": patient}

"""$extract over real HTTP: the SDOH answers of a comprehensive assessment become
Observations (category sdoh, code from the item, derivedFrom the response) and each need a
Yes reveals one Condition (health-concern, evidence the Observations); the transaction
Bundle is not stored, and posting it twice creates nothing twice."""

from __future__ import annotations

from typing import Any

import httpx
from tests.content import responses as R
from tests.content.conftest import FHIR, created

SCREENING = f"{R.BASE}/CodeSystem/nc-sdoh-screening"
NEED = f"{R.BASE}/CodeSystem/sdoh-need"


def by_type(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [e for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def codes(resource: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in resource["code"]["coding"]}


def test_extract_shape(client: httpx.Client, patient: str) -> None:
    location = created(
        client.post(
            "QuestionnaireResponse",
            json=R.assessment(patient, {"food-worry", "food-did-not-last", "transportation"}),
            headers=FHIR,
        )
    )
    answer = client.get(f"{location}/$extract")
    assert answer.status_code == 200, answer.text
    bundle = answer.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    observations = by_type(bundle, "Observation")
    # the eight core questions and the two optional ones; nothing outside the SDOH group
    assert len(observations) == 10
    food = next(e for e in observations if (SCREENING, "food-worry") in codes(e["resource"]))
    resource = food["resource"]
    categories = {(c["coding"][0]["system"], c["coding"][0]["code"]) for c in resource["category"]}
    assert ("http://hl7.org/fhir/us/core/CodeSystem/us-core-category", "sdoh") in categories
    assert resource["valueCodeableConcept"]["coding"][0]["code"] == "LA33-6"
    assert resource["subject"] == {"reference": patient}
    assert resource["effectiveDateTime"] == "2026-11-30T10:00:00Z"
    assert resource["derivedFrom"] == [{"reference": location}]
    assert food["request"]["method"] == "POST"
    assert food["request"]["ifNoneExist"].startswith("identifier=")
    conditions = by_type(bundle, "Condition")
    assert sorted(
        c["code"]
        for e in conditions
        for c in e["resource"]["code"]["coding"]
        if c["system"] == NEED
    ) == [
        "food-insecurity",
        "transportation-insecurity",
    ]
    food_need = next(
        e["resource"] for e in conditions if (NEED, "food-insecurity") in codes(e["resource"])
    )
    assert food_need["category"][0]["coding"][0]["code"] == "health-concern"
    assert food_need["category"][1]["coding"][0]["code"] == "sdoh"
    assert food_need["subject"] == {"reference": patient}
    evidence = {d["reference"] for d in food_need["evidence"][0]["detail"]}
    worry_urls = {
        e["fullUrl"]
        for e in observations
        if codes(e["resource"]) & {(SCREENING, "food-worry"), (SCREENING, "food-did-not-last")}
    }
    assert evidence == worry_urls
    # nothing was stored
    found = client.get("Condition", params={"subject": patient}).json()
    assert found["total"] == 0


def test_extracted_bundle_posts_once(client: httpx.Client, patient: str) -> None:
    location = created(
        client.post(
            "QuestionnaireResponse",
            json=R.assessment(patient, {"housing-stayed-outside"}),
            headers=FHIR,
        )
    )
    bundle = client.post(f"{location}/$extract").json()
    for _ in range(2):
        posted = client.post("", json=bundle, headers=FHIR)
        assert posted.status_code == 200, posted.text
    sdoh = client.get(
        "Observation",
        params={
            "subject": patient,
            "category": "http://hl7.org/fhir/us/core/CodeSystem/us-core-category|sdoh",
            "_total": "accurate",
        },
    ).json()
    assert sdoh["total"] == 10
    concerns = client.get(
        "Condition", params={"subject": patient, "category": "health-concern"}
    ).json()
    assert [
        c["code"]
        for e in concerns["entry"]
        for c in e["resource"]["code"]["coding"]
        if c["system"] == NEED
    ] == ["homelessness"]


def test_no_need_no_condition(client: httpx.Client, patient: str) -> None:
    bundle = client.post(
        "QuestionnaireResponse/$extract", json=R.assessment(patient), headers=FHIR
    ).json()
    assert len(by_type(bundle, "Observation")) == 8
    assert by_type(bundle, "Condition") == []
    # a response never stored has no id to derive from, so nothing to deduplicate on
    assert all("derivedFrom" not in e["resource"] for e in bundle["entry"])
    assert all("ifNoneExist" not in e["request"] for e in bundle["entry"])


def test_extract_checks_a_sent_response(client: httpx.Client, patient: str) -> None:
    body = R.assessment(patient)
    body["item"][3]["item"][0]["item"][0]["answer"] = R.answer(boolean=True)
    answer = client.post("QuestionnaireResponse/$extract", json=body, headers=FHIR)
    assert answer.status_code == 400, answer.text


def test_extract_needs_a_known_questionnaire(client: httpx.Client, patient: str) -> None:
    body = R.assessment(patient)
    body["questionnaire"] = "https://example.org/Questionnaire/unknown"
    answer = client.post("QuestionnaireResponse/$extract", json=body, headers=FHIR)
    assert answer.status_code == 422, answer.text
    assert "not held" in answer.text
    assert client.get("QuestionnaireResponse/does-not-exist/$extract").status_code == 404

"""QuestionnaireResponses checked against the Questionnaires of profiles/content/ on every
write, over real HTTP: a good and a bad response per Questionnaire (one issue per bad item,
located by its expression), enableWhen and enableBehavior, required items and in-progress
responses, answer value sets, and the same checks on update, patch and transaction entries."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.content import responses as R
from tests.content.conftest import FHIR, created

CONTENT = ("engagement-sheet", "comprehensive-assessment", "contact-satisfaction")


def refused(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issues: list[dict[str, Any]] = body["issue"]
    return issues


def located(issues: list[dict[str, Any]]) -> dict[str, str]:
    """Each issue's expression and diagnostics; one issue per expression."""
    out = {issue["expression"][0]: issue["diagnostics"] for issue in issues}
    assert len(out) == len(issues), issues
    return out


def count(client: httpx.Client, patient: str) -> int:
    found = client.get("QuestionnaireResponse", params={"subject": patient, "_total": "accurate"})
    return int(found.json()["total"])


@pytest.mark.parametrize("id", CONTENT)
def test_questionnaires_found_by_url(client: httpx.Client, id: str) -> None:
    url = f"{R.BASE}/Questionnaire/{id}"
    found = client.get("Questionnaire", params={"url": url}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [id]


def test_good_responses_are_stored(client: httpx.Client, patient: str, communication: str) -> None:
    for body in (
        R.engagement(patient),
        R.assessment(patient),
        R.assessment(patient, {"safety-hurt"}),
        R.satisfaction(patient, communication),
    ):
        created(client.post("QuestionnaireResponse", json=body, headers=FHIR))
    assert count(client, patient) == 4


def test_bad_engagement_sheet_one_issue_per_bad_item(client: httpx.Client, patient: str) -> None:
    body = R.engagement(patient)
    about, matters, reach, supports, _ = body["item"]
    about["item"][1]["answer"] = R.answer(string="she/her")  # open-choice: free text is fine
    about["item"][0]["answer"] = R.answer(integer=3)  # a string item
    reach["item"][0]["answer"][0]["valueCoding"]["code"] = "carrier-pigeon"  # not in the value set
    reach["item"][1]["answer"].append({"valueBoolean": True})  # does not repeat
    supports["item"].append({"linkId": "favourite-colour", "answer": R.answer(string="blue")})
    del matters["item"][0]  # required, missing
    issues = located(refused(client.post("QuestionnaireResponse", json=body, headers=FHIR)))
    assert set(issues) == {
        "QuestionnaireResponse.item[0].item[0]",
        "QuestionnaireResponse.item[2].item[0]",
        "QuestionnaireResponse.item[2].item[1]",
        "QuestionnaireResponse.item[3].item[2]",
        "QuestionnaireResponse.item[1].item.where(linkId='what-matters-most')",
    }
    assert "valueInteger" in issues["QuestionnaireResponse.item[0].item[0]"]
    assert "carrier-pigeon" in issues["QuestionnaireResponse.item[2].item[0]"]
    assert "does not repeat" in issues["QuestionnaireResponse.item[2].item[1]"]
    assert "favourite-colour" in issues["QuestionnaireResponse.item[3].item[2]"]
    assert (
        "missing" in issues["QuestionnaireResponse.item[1].item.where(linkId='what-matters-most')"]
    )
    assert count(client, patient) == 0


def test_bad_assessment_one_issue_per_bad_item(client: httpx.Client, patient: str) -> None:
    body = R.assessment(patient)
    physical, medications, goals, sdoh = body["item"]
    physical["item"][0]["answer"] = R.answer(string="Wonderful")  # not an answerOption
    physical["item"][3]["answer"] = R.answer(decimal=2.5)  # an integer item
    medications["item"][2]["answer"].append({"valueString": "Aliens"})
    goals["item"][1]["item"] = [R.question("goal-why", string="x")]  # without its required text
    sdoh["item"][0]["item"][0]["answer"] = R.answer(coding={"system": R.LOINC, "code": "LA6729-3"})
    issues = located(refused(client.post("QuestionnaireResponse", json=body, headers=FHIR)))
    assert set(issues) == {
        "QuestionnaireResponse.item[0].item[0]",
        "QuestionnaireResponse.item[0].item[3]",
        "QuestionnaireResponse.item[1].item[2]",
        "QuestionnaireResponse.item[2].item[1].item.where(linkId='goal-text')",
        "QuestionnaireResponse.item[3].item[0].item[0]",
    }
    assert "answerOption" in issues["QuestionnaireResponse.item[0].item[0]"]
    assert "answer[2]" in issues["QuestionnaireResponse.item[1].item[2]"]
    assert (
        "missing" in issues["QuestionnaireResponse.item[2].item[1].item.where(linkId='goal-text')"]
    )
    assert "yes-no" in issues["QuestionnaireResponse.item[3].item[0].item[0]"]


def test_bad_satisfaction_one_issue_per_bad_item(
    client: httpx.Client, patient: str, communication: str
) -> None:
    body = R.satisfaction(patient, communication)
    body["item"][0]["answer"] = R.answer(string=communication)  # a reference item
    body["item"][2]["answer"] = R.answer(string="Meh")
    del body["item"][1]  # overall: required
    issues = located(refused(client.post("QuestionnaireResponse", json=body, headers=FHIR)))
    assert set(issues) == {
        "QuestionnaireResponse.item[0]",
        "QuestionnaireResponse.item[1]",
        "QuestionnaireResponse.item.where(linkId='overall')",
    }
    assert "valueReference" in issues["QuestionnaireResponse.item[0]"]
    assert "answerOption" in issues["QuestionnaireResponse.item[1]"]


def test_response_found_by_its_contact(
    client: httpx.Client, patient: str, communication: str
) -> None:
    id = created(
        client.post(
            "QuestionnaireResponse", json=R.satisfaction(patient, communication), headers=FHIR
        )
    )
    found = client.get("QuestionnaireResponse", params={"contact": communication}).json()
    assert [f"QuestionnaireResponse/{e['resource']['id']}" for e in found["entry"]] == [id]


# --- enableWhen ------------------------------------------------------------------------------


def test_answer_to_a_disabled_item_is_refused(client: httpx.Client, patient: str) -> None:
    body = R.engagement(patient)
    hard = body["item"][4]["item"]
    hard[0]["answer"] = R.answer(boolean=False)  # so hard-things is not enabled
    issues = located(refused(client.post("QuestionnaireResponse", json=body, headers=FHIR)))
    assert list(issues) == ["QuestionnaireResponse.item[4].item[1]"]
    assert "not enabled" in issues["QuestionnaireResponse.item[4].item[1]"]
    del hard[1]
    created(client.post("QuestionnaireResponse", json=body, headers=FHIR))


def test_disabled_group_hides_its_items(client: httpx.Client, patient: str) -> None:
    body = R.engagement(patient)
    supports = body["item"][3]["item"]
    supports[0]["answer"] = R.answer(boolean=False)
    issues = located(refused(client.post("QuestionnaireResponse", json=body, headers=FHIR)))
    # the group has no answer of its own: its answered items are the ones at fault
    assert set(issues) == {
        "QuestionnaireResponse.item[3].item[1].item[0]",
        "QuestionnaireResponse.item[3].item[1].item[1]",
    }


def test_required_only_when_enabled(client: httpx.Client, patient: str) -> None:
    body = R.assessment(patient)
    medications = body["item"][1]["item"]
    del medications[1]  # medication-list: required while takes-medications is true
    issues = located(refused(client.post("QuestionnaireResponse", json=body, headers=FHIR)))
    assert "medication-list" in str(issues)
    medications[0]["answer"] = R.answer(boolean=False)
    del medications[1]  # medication-trouble is not enabled either now
    created(client.post("QuestionnaireResponse", json=body, headers=FHIR))


@pytest.mark.parametrize(
    ("positive", "status"),
    [
        pytest.param(set(), 400, id="every-answer-no"),
        pytest.param({"transportation"}, 201, id="one-yes"),
        pytest.param({"safety-unsafe", "food-worry"}, 201, id="two-yes"),
    ],
)
def test_enable_behavior_any(
    client: httpx.Client, patient: str, positive: set[str], status: int
) -> None:
    """The optional SDOH questions are enabled by a Yes to any of the eight core ones."""
    body = R.assessment(patient)
    body["item"][3] = R.sdoh(positive, optional=True)
    answer = client.post("QuestionnaireResponse", json=body, headers=FHIR)
    assert answer.status_code == status, answer.text
    if status == 400:
        assert set(located(answer.json()["issue"])) == {
            "QuestionnaireResponse.item[3].item[4].item[0]",
            "QuestionnaireResponse.item[3].item[4].item[1]",
        }


def test_in_progress_may_omit_required_items(client: httpx.Client, patient: str) -> None:
    body = R.response("comprehensive-assessment", patient, [], status="in-progress")
    body["item"] = [R.group("physical-health", R.question("has-pcp", boolean=False))]
    created(client.post("QuestionnaireResponse", json=body, headers=FHIR))
    body["status"] = "completed"
    issues = located(refused(client.post("QuestionnaireResponse", json=body, headers=FHIR)))
    assert set(issues) == {
        "QuestionnaireResponse.item[0].item.where(linkId='overall-health')",
        "QuestionnaireResponse.item.where(linkId='medications')",
        "QuestionnaireResponse.item.where(linkId='sdoh')",
    }
    # in progress still checks what is there
    body["status"] = "in-progress"
    body["item"][0]["item"][0]["answer"] = R.answer(string="yes")
    refused(client.post("QuestionnaireResponse", json=body, headers=FHIR))


def test_unknown_questionnaire_is_not_checked(client: httpx.Client, patient: str) -> None:
    body = R.engagement(patient)
    body["questionnaire"] = "https://example.org/Questionnaire/elsewhere"
    body["item"][0]["item"][0]["answer"] = R.answer(integer=3)
    created(client.post("QuestionnaireResponse", json=body, headers=FHIR))


def test_questionnaire_written_in_the_same_transaction(client: httpx.Client, patient: str) -> None:
    url = "https://example.org/Questionnaire/one-question"
    form = {
        "resourceType": "Questionnaire",
        "url": url,
        "status": "active",
        "item": [{"linkId": "q", "text": "Q?", "type": "boolean", "required": True}],
    }
    answer = R.response("x", patient, [R.question("q", string="yes")])
    answer["questionnaire"] = url
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": answer, "request": {"method": "POST", "url": "QuestionnaireResponse"}},
            {"resource": form, "request": {"method": "POST", "url": "Questionnaire"}},
        ],
    }
    issues = refused(client.post("", json=bundle, headers=FHIR))
    assert "Bundle.entry[0]" in str(issues)
    assert client.get("Questionnaire", params={"url": url}).json()["total"] == 0
    answer["item"][0]["answer"] = R.answer(boolean=True)
    assert client.post("", json=bundle, headers=FHIR).status_code == 200


# --- every write path --------------------------------------------------------------------


def test_update_patch_and_batch_are_checked(client: httpx.Client, patient: str) -> None:
    body = R.engagement(patient)
    location = created(client.post("QuestionnaireResponse", json=body, headers=FHIR))
    id = location.split("/")[1]
    bad = R.clone(body) | {"id": id}
    bad["item"][1]["item"][0]["answer"] = R.answer(boolean=True)
    refused(client.put(location, json=bad, headers=FHIR))
    patch = [{"op": "replace", "path": "/item/1/item/0/answer/0", "value": {"valueInteger": 1}}]
    refused(
        client.patch(location, json=patch, headers={"Content-Type": "application/json-patch+json"})
    )
    assert client.get(location).json()["meta"]["versionId"] == "1"
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": bad, "request": {"method": "PUT", "url": location}},
            {"resource": body, "request": {"method": "POST", "url": "QuestionnaireResponse"}},
        ],
    }
    statuses = [
        e["response"]["status"] for e in client.post("", json=batch, headers=FHIR).json()["entry"]
    ]
    assert statuses[0].startswith("400") and statuses[1].startswith("201")
    good = R.clone(body) | {"id": id}
    good["item"][1]["item"][0]["answer"] = R.answer(string="My kids")
    assert client.put(location, json=good, headers=FHIR).status_code == 200


def test_transaction_entry_is_checked(client: httpx.Client, patient: str) -> None:
    bad = R.engagement(patient)
    del bad["item"][2]  # reach-me is required
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": R.engagement(patient),
                "request": {"method": "POST", "url": "QuestionnaireResponse"},
            },
            {"resource": bad, "request": {"method": "POST", "url": "QuestionnaireResponse"}},
        ],
    }
    issues = refused(client.post("", json=bundle, headers=FHIR))
    assert any("reach-me" in i["diagnostics"] for i in issues)
    assert any("Bundle.entry[1]" in str(i.get("expression")) for i in issues), issues
    assert count(client, patient) == 0


def test_validate_checks_against_the_questionnaire(client: httpx.Client, patient: str) -> None:
    body = R.engagement(patient)
    ok = client.post("QuestionnaireResponse/$validate", json=body, headers=FHIR)
    assert ok.status_code == 200 and ok.json()["issue"][0]["severity"] == "information"
    del body["item"][2]
    outcome = client.post("QuestionnaireResponse/$validate", json=body, headers=FHIR).json()
    assert [i["expression"] for i in outcome["issue"]] == [
        ["QuestionnaireResponse.item.where(linkId='reach-me')"]
    ]
    assert count(client, patient) == 0


def test_canonical_is_matched_whole(client: httpx.Client, patient: str) -> None:
    """A comma in the canonical is part of the url, not a list of two to search."""
    body = R.engagement(patient)
    body["questionnaire"] = f"{R.BASE}/Questionnaire/engagement-sheet,https://example.org/q"
    del body["item"][2]  # would be refused by the engagement sheet
    created(client.post("QuestionnaireResponse", json=body, headers=FHIR))
    body["questionnaire"] = f"{R.BASE}/Questionnaire/engagement-sheet|0.1.0"
    refused(client.post("QuestionnaireResponse", json=body, headers=FHIR))
    body["questionnaire"] = f"{R.BASE}/Questionnaire/engagement-sheet|9.9"
    created(client.post("QuestionnaireResponse", json=body, headers=FHIR))

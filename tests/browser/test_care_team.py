"""The care-team console (/apps/care-team/) in headless Chromium: a care manager signs in
through the real authorize form, sees a gap made through the API on the worklist and
acknowledges it, fills the comprehensive assessment (which the gap engine then counts,
closing `assessment-overdue`), logs a contact (with the satisfaction-survey Task for the
member), sees a new gap arrive live, and opens the supervisor view; axe-core runs on every
screen and each is saved as a screenshot (.artifacts/screenshots/care-team-*.png)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from tests.browser.conftest import (
    AppServer,
    check_accessibility,
    find,
    go,
    poll,
    replace_text,
    sign_in,
    wait_for,
    wait_text,
)

GAP_STATUS = "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/extension-gapStatus"
CARE_GAP = "https://cmfhir.org/fhir/CodeSystem/care-gap"
CARE_MANAGER = "https://cmfhir.org/fhir/StructureDefinition/care-manager"
ROLE = "https://cmfhir.org/fhir/CodeSystem/care-team-role"
CMFHIR = "https://cmfhir.org/fhir"
# What a member or a care manager typed, rendered as text, never as markup.
HOSTILE = '<img src=x onerror="window.pwned=1">'


@dataclass
class World:
    server: AppServer
    api: httpx.Client
    practitioner: str
    patient: str
    organization: str
    family: str


def _post(api: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    answer = api.post(resource["resourceType"], json=resource)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def _api_gap(world: World, rule: str, detail: str, patient: str | None = None) -> dict[str, Any]:
    """A care gap written through the API (no engine identifier: the engine leaves it be)."""
    return _post(
        world.api,
        {
            "resourceType": "DetectedIssue",
            "modifierExtension": [
                {
                    "url": GAP_STATUS,
                    "valueCodeableConcept": {
                        "coding": [
                            {
                                "system": "http://hl7.org/fhir/us/davinci-deqm/CodeSystem/gaps-status",
                                "code": "open-gap",
                            }
                        ]
                    },
                }
            ],
            "extension": [
                {"url": CARE_MANAGER, "valueReference": {"reference": world.practitioner}}
            ],
            "status": "final",
            "code": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "CAREGAP",
                    },
                    {"system": CARE_GAP, "code": rule},
                ]
            },
            "patient": {"reference": patient or world.patient},
            "identifiedDateTime": (datetime.now(UTC) - timedelta(days=20)).isoformat(),
            "detail": detail,
        },
    )


def _gaps(world: World, rule: str) -> list[dict[str, Any]]:
    answer = world.api.get(
        "DetectedIssue", params={"patient": world.patient, "code": f"{CARE_GAP}|{rule}"}
    )
    assert answer.status_code == 200, answer.text
    return [e["resource"] for e in answer.json().get("entry", [])]


def _status(issue: dict[str, Any]) -> str:
    for extension in issue.get("modifierExtension", []):
        if extension["url"] == GAP_STATUS:
            code: str = extension["valueCodeableConcept"]["coding"][0]["code"]
            return code
    return ""


@pytest.fixture(scope="module")
def world(app_server: AppServer) -> Iterator[World]:
    """A care manager (Dana) at an agency, one enrolled member of hers with a hospital stay,
    a new medication, and an enrollment 90 days old with no assessment (so the engine opens
    `assessment-overdue` while the browser signs in)."""
    api = app_server.client()
    family = f"Rivera{uuid.uuid4().hex[:6]}"
    org = _post(api, {"resourceType": "Organization", "name": "Piedmont Care Agency"})
    cm = _post(
        api,
        {
            "resourceType": "Practitioner",
            "name": [{"given": ["Dana"], "family": "Smith"}],
            "telecom": [{"system": "phone", "value": "919-555-0100"}],
        },
    )
    practitioner = f"Practitioner/{cm['id']}"
    _post(
        api,
        {
            "resourceType": "PractitionerRole",
            "practitioner": {"reference": practitioner},
            "organization": {"reference": f"Organization/{org['id']}"},
            "code": [{"coding": [{"system": ROLE, "code": "care-manager"}]}],
        },
    )
    patient = _post(
        api,
        {
            "resourceType": "Patient",
            "name": [{"given": ["Alex", HOSTILE], "family": family}],
            "telecom": [{"system": "phone", "value": "336-555-0199", "use": "mobile"}],
            "birthDate": "1988-04-02",
        },
    )
    member = f"Patient/{patient['id']}"
    today = datetime.now(ZoneInfo("America/New_York")).date()  # the engine's calendar
    _post(
        api,
        {
            "resourceType": "EpisodeOfCare",
            "extension": [
                {
                    "url": "https://cmfhir.org/fhir/StructureDefinition/acuity-tier",
                    "valueCode": "high",
                }
            ],
            "status": "active",
            "type": [
                {
                    "coding": [
                        {"system": "https://cmfhir.org/fhir/CodeSystem/program", "code": "tcm"}
                    ]
                }
            ],
            "patient": {"reference": member},
            "managingOrganization": {"reference": f"Organization/{org['id']}"},
            "period": {"start": (today - timedelta(days=90)).isoformat()},
            "careManager": {"reference": practitioner},
        },
    )
    _post(
        api,
        {
            "resourceType": "CareTeam",
            "status": "active",
            "subject": {"reference": member},
            "participant": [
                {
                    "role": [
                        {
                            "coding": [
                                {"system": ROLE, "code": "care-manager", "display": "Care manager"}
                            ]
                        }
                    ],
                    "member": {"reference": practitioner},
                }
            ],
        },
    )
    discharged = datetime.now(UTC) - timedelta(days=3)
    _post(
        api,
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "IMP",
                "display": "inpatient encounter",
            },
            "subject": {"reference": member},
            "period": {
                "start": (discharged - timedelta(days=2)).isoformat(),
                "end": discharged.isoformat(),
            },
        },
    )
    _post(
        api,
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {
                "coding": [
                    {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197361"}
                ],
                "text": "Amlodipine 5 mg tablet",
            },
            "subject": {"reference": member},
            "authoredOn": today.isoformat(),
        },
    )
    yield World(app_server, api, practitioner, member, org["id"], family)
    api.close()


@pytest.fixture(scope="module")
def console(browser: Any, world: World) -> Any:
    """The browser, signed in to the console as the care manager (once per module)."""
    user = world.server.add_user(world.practitioner)
    sign_in(browser, world.server, "care-team", user.username)
    find(browser, "main h1")
    return browser


def test_worklist_shows_an_api_gap_and_acknowledges_it(console: Any, world: World) -> None:
    from selenium.webdriver.common.by import By

    gap = _api_gap(world, "new-specialist", f"First visit with a cardiologist {HOSTILE}")
    poll(
        lambda: [g for g in _gaps(world, "assessment-overdue") if _status(g) == "open-gap"],
        "the gap engine to open assessment-overdue",
    )
    go(console, world.server, "care-team", "worklist")
    console.refresh()
    card = find(console, f'li[data-gap="{gap["id"]}"]')
    assert "New specialist visit" in card.text
    assert HOSTILE in card.text  # shown as text, not run as markup
    assert console.execute_script("return window.pwned === undefined")
    assert "Comprehensive assessment due" in console.find_element(By.CSS_SELECTOR, "main").text
    check_accessibility(console, "care-team-worklist")

    # The filter by rule keeps only that kind.
    select = console.find_element(By.ID, "filter-rule")
    select.find_element(By.CSS_SELECTOR, 'option[value="new-specialist"]').click()
    wait_for(
        console,
        lambda d: not d.find_elements(By.XPATH, "//h2[text()='Comprehensive assessment due']"),
    )
    select.find_element(By.CSS_SELECTOR, 'option[value=""]').click()

    card = find(console, f'li[data-gap="{gap["id"]}"]')
    card.find_element(By.CSS_SELECTOR, "input[type=text]").send_keys("Called the cardiology office")
    card.find_element(By.XPATH, ".//button[starts-with(normalize-space(), 'Acknowledge')]").click()
    wait_for(console, lambda d: not d.find_elements(By.CSS_SELECTOR, f'li[data-gap="{gap["id"]}"]'))

    stored = world.api.get(f"DetectedIssue/{gap['id']}").json()
    assert _status(stored) == "closed-gap"
    (mitigation,) = stored["mitigation"]
    assert "Called the cardiology office" in mitigation["action"]["text"]
    assert mitigation["author"] == {"reference": world.practitioner}


def test_worklist_filters_by_acuity_tier(console: Any, world: World) -> None:
    from selenium.webdriver.support.ui import Select

    # A second member of Dana's, enrolled today at moderate acuity (Alex's tier is high).
    other = _post(
        world.api,
        {"resourceType": "Patient", "name": [{"given": ["Sam"], "family": world.family}]},
    )
    _post(
        world.api,
        {
            "resourceType": "EpisodeOfCare",
            "extension": [
                {
                    "url": "https://cmfhir.org/fhir/StructureDefinition/acuity-tier",
                    "valueCode": "moderate",
                }
            ],
            "status": "active",
            "type": [{"coding": [{"system": f"{CMFHIR}/CodeSystem/program", "code": "tcm"}]}],
            "patient": {"reference": f"Patient/{other['id']}"},
            "managingOrganization": {"reference": f"Organization/{world.organization}"},
            "period": {"start": datetime.now(ZoneInfo("America/New_York")).date().isoformat()},
            "careManager": {"reference": world.practitioner},
        },
    )
    high = _api_gap(world, "sdoh-referral", "Food pantry referral")
    moderate = _api_gap(world, "sdoh-referral", "Rent help", f"Patient/{other['id']}")
    go(console, world.server, "care-team", "worklist")
    console.refresh()
    cards = (f'li[data-gap="{high["id"]}"]', f'li[data-gap="{moderate["id"]}"]')
    assert "moderate acuity" in find(console, cards[1]).text
    tier = Select(find(console, "#filter-tier"))
    for chosen, shown, hidden in (("high", *cards), ("moderate", *reversed(cards))):
        tier.select_by_value(chosen)
        wait_for(console, lambda d, hidden=hidden: not d.find_elements("css selector", hidden))
        assert find(console, shown)
    tier.select_by_value("")
    for card in cards:
        find(console, card)


def test_a_new_gap_appears_live(console: Any, world: World) -> None:
    go(console, world.server, "care-team", "worklist")
    wait_text(console, "Live updates are on.")
    gap = _api_gap(world, "missed-appointment", "Missed the dentist on Tuesday")
    card = find(console, f'li[data-gap="{gap["id"]}"]')  # no reload: the websocket brought it
    assert "Missed appointment" in card.text


def test_member_page(console: Any, world: World) -> None:
    from selenium.webdriver.common.by import By

    go(console, world.server, "care-team", f"member/{world.patient.split('/')[1]}")
    wait_text(console, "Dana Smith")
    main = console.find_element(By.CSS_SELECTOR, "main").text
    assert world.family in main and HOSTILE in main
    assert "Care manager" in main
    assert "Discharged" in main  # the hospital stay, highlighted
    assert "Amlodipine 5 mg tablet" in main
    assert console.execute_script("return window.pwned === undefined")
    check_accessibility(console, "care-team-member")
    # Readable on a phone: one column, nothing wider than the screen.
    console.set_window_size(390, 844)
    try:
        wide = console.execute_script(
            """return [...document.querySelectorAll('body *')]
                .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
                .slice(0, 5).map((e) => e.tagName + ' ' + e.textContent.slice(0, 40))"""
        )
        assert console.execute_script(
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        ), f"wider than a phone: {wide}"
        check_accessibility(console, "care-team-member-phone")
    finally:
        console.set_window_size(1200, 1000)


def _choose(driver: Any, question: str, answer: str) -> None:
    """Pick `answer` (its label) in the radio group whose id ends with `question`."""
    from selenium.webdriver.common.by import By

    group = find(driver, f'fieldset[id$="{question}"]')
    group.find_element(By.XPATH, f".//label[normalize-space()='{answer}']").click()


def test_filling_the_assessment_closes_assessment_overdue(console: Any, world: World) -> None:
    from selenium.webdriver.common.by import By

    go(console, world.server, "care-team", f"member/{world.patient.split('/')[1]}/form/assessment")
    find(console, 'fieldset[id$="overall-health"]')
    check_accessibility(console, "care-team-assessment")

    # enableWhen: the provider's name is asked only with a primary care provider.
    assert not console.find_elements(By.CSS_SELECTOR, 'input[id$="pcp-name"]')
    _choose(console, "has-pcp", "Yes")
    find(console, 'input[id$="pcp-name"]').send_keys("Dr. Lee")
    _choose(console, "has-pcp", "No")
    wait_for(console, lambda d: not d.find_elements(By.CSS_SELECTOR, 'input[id$="pcp-name"]'))

    # Required items: the form says which are missing and sends nothing.
    console.find_element(By.XPATH, "//button[text()='Save the answers']").click()
    wait_text(console, "Some required questions have no answer")
    assert not [r for r in _responses(world) if "comprehensive-assessment" in r["questionnaire"]]

    # The Questionnaire's own Spanish (its translation extensions), for a member who reads it:
    # the answers sent are still the Questionnaire's values.
    from selenium.webdriver.support.ui import Select

    Select(find(console, "#form-lang")).select_by_value("es")
    wait_text(console, "En general, ¿cómo describiría su salud?", 'fieldset[id$="overall-health"]')
    assert console.find_element(By.CSS_SELECTOR, "form").get_attribute("lang") == "es"
    wait_text(console, "Salud física", "form h2")
    check_accessibility(console, "care-team-assessment-es")
    _choose(console, "overall-health", "Buena")
    _choose(console, "takes-medications", "Sí")
    find(console, 'textarea[id$="medication-list"]').send_keys("Amlodipine every morning")
    for question in (
        "food-worry",
        "food-did-not-last",
        "housing-stayed-outside",
        "housing-worried-losing",
        "utilities-unable",
        "transportation",
        "safety-unsafe",
        "safety-hurt",
    ):
        _choose(console, question, "No")
    find(console, 'textarea[id$="goal-text"]').send_keys("Walk to church again")
    console.find_element(By.XPATH, "//button[text()='Save the answers']").click()
    wait_text(console, "Comprehensive assessment saved.")

    console.execute_script("localStorage.removeItem('cmfhir-care-team-form-lang')")
    (response,) = [r for r in _responses(world) if "comprehensive-assessment" in r["questionnaire"]]
    assert response["status"] == "completed"
    physical = next(i for i in response["item"] if i["linkId"] == "physical-health")
    overall = next(i for i in physical["item"] if i["linkId"] == "overall-health")
    assert overall == {
        "linkId": "overall-health",
        "text": "In general, how would you describe your health?",
        "answer": [{"valueString": "Good"}],
    }
    assert response["author"] == {"reference": world.practitioner}
    poll(
        lambda: all(_status(g) == "closed-gap" for g in _gaps(world, "assessment-overdue")),
        "the gap engine to close assessment-overdue",
    )


def _responses(world: World) -> list[dict[str, Any]]:
    answer = world.api.get("QuestionnaireResponse", params={"patient": world.patient})
    return [e["resource"] for e in answer.json().get("entry", [])]


def test_engagement_sheet_in_their_own_words(console: Any, world: World) -> None:
    from selenium.webdriver.common.by import By

    go(console, world.server, "care-team", f"member/{world.patient.split('/')[1]}/form/engagement")
    find(console, 'textarea[id$="what-matters-most"]').send_keys(f"My grandkids {HOSTILE}")
    group = find(console, 'fieldset[id$="contact-method"]')
    group.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
    find(console, 'input[id$="pronouns-other"]').send_keys("xe/xem")
    check_accessibility(console, "care-team-engagement")
    console.find_element(By.XPATH, "//button[text()='Save the answers']").click()
    wait_text(console, "Engagement sheet saved.")
    wait_text(console, "xe/xem")
    main = console.find_element(By.CSS_SELECTOR, "main").text
    assert f"My grandkids {HOSTILE}" in main
    assert console.execute_script("return window.pwned === undefined")


def test_logging_a_contact_asks_the_member_for_feedback(console: Any, world: World) -> None:
    from selenium.webdriver.common.by import By

    go(console, world.server, "care-team", f"member/{world.patient.split('/')[1]}")
    medium = find(console, "#contact-medium")
    medium.find_element(By.CSS_SELECTOR, 'option[value="PHONE"]').click()
    console.find_element(By.ID, "contact-note").send_keys("Talked about the new medicine")
    console.find_element(By.XPATH, "//button[text()='Log the contact']").click()
    wait_text(console, "Contact logged.")
    wait_text(console, "Talked about the new medicine")

    answer = world.api.get("Communication", params={"patient": world.patient})
    (contact,) = [e["resource"] for e in answer.json()["entry"]]
    assert contact["status"] == "completed"
    assert contact["medium"][0]["coding"][0]["code"] == "PHONE"
    assert contact["sender"] == {"reference": world.practitioner}
    tasks = world.api.get("Task", params={"patient": world.patient, "status": "requested"})
    (task,) = [e["resource"] for e in tasks.json()["entry"]]
    assert task["focus"] == {"reference": f"Communication/{contact['id']}"}
    assert task["input"][0]["valueCanonical"].endswith("Questionnaire/contact-satisfaction")
    check_accessibility(console, "care-team-member-after-contact")


def test_care_plan_and_goal(console: Any, world: World) -> None:
    from selenium.webdriver.common.by import By

    go(console, world.server, "care-team", f"member/{world.patient.split('/')[1]}")
    find(console, "#goal-new").send_keys("Walk to church again")
    console.find_element(By.XPATH, "//button[text()='Add the goal']").click()
    wait_text(console, "Goal added.")
    wait_text(console, "Walk to church again", "ul.goals")
    find(console, "#plan-text").send_keys("Weekly calls; ride to cardiology")
    console.find_element(By.XPATH, "//button[text()='Write the care plan']").click()
    wait_text(console, "Care plan written.")
    plans = world.api.get("CarePlan", params={"patient": world.patient}).json()["entry"]
    (plan,) = [e["resource"] for e in plans]
    assert plan["description"] == "Weekly calls; ride to cardiology"
    assert plan["status"] == "active" and len(plan["goal"]) == 1

    # Revising: the goal in the member's new words, the plan as a new version of itself.
    goal_id = plan["goal"][0]["reference"].split("/")[1]
    console.find_element(By.XPATH, "//ul[@class='goals']//button[starts-with(., 'Revise')]").click()
    replace_text(console, f"#goal-{goal_id}", "Walk to church and back")
    console.find_element(By.XPATH, "//button[text()='Save the goal']").click()
    wait_text(console, "Goal revised.")
    goal = world.api.get(f"Goal/{goal_id}").json()
    assert goal["description"]["text"] == "Walk to church and back"
    replace_text(console, "#plan-text", "Calls twice a week")
    console.find_element(By.XPATH, "//button[text()='Save a revision']").click()
    wait_text(console, "Care plan revised.")
    stored = world.api.get(f"CarePlan/{plan['id']}").json()
    assert stored["description"] == "Calls twice a week"
    assert stored["meta"]["versionId"] == "2"


def test_supervisor_view(console: Any, world: World, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    go(console, world.server, "care-team", "supervisor")
    wait_text(console, "Piedmont Care Agency")
    # Every report a care manager or supervisor may run, for her organization, narrowed to what
    # her token may see: the contact logged above counts this month.
    wait_text(console, "Dana Smith", "main table")
    headings = [h.text for h in console.find_elements(By.CSS_SELECTOR, "main section h2")]
    assert headings == [
        "Caseload",
        "Contacts against the requirement",
        "Assessments, care plans and follow-up",
        "Care gaps by kind over time",
        "Member experience",
        "Billable TCM encounters",
    ]
    captions = [c.text for c in console.find_elements(By.CSS_SELECTOR, "main table caption")]
    assert captions == [
        "Members by care manager and acuity tier at the end of the period",
        "Contacts per care manager and month",
        "Current assessments and care plans per care manager",
        "Care gaps open at some time in each month, by kind",
        "Billable member-months per care manager and month",
    ]
    tables = {
        t.find_element(By.TAG_NAME, "caption").text: t.text
        for t in console.find_elements(By.CSS_SELECTOR, "main table")
    }
    assert "Comprehensive assessment due" in tables[captions[3]]
    assert "Dana Smith High 1" in tables[captions[0]]
    assert "No survey answers in this period." in console.find_element(By.TAG_NAME, "main").text
    assert len(console.find_elements(By.CSS_SELECTOR, "main figure svg[role=img]")) == 2
    check_accessibility(console, "care-team-supervisor")

    # The period: this month alone (the gaps table then has one month's column).
    month = datetime.now(ZoneInfo("America/New_York")).strftime("%Y-%m")
    Select(find(console, "#period-from")).select_by_value(month)
    console.find_element(By.XPATH, "//button[text()='Show the reports']").click()
    gap_columns = "//table[starts-with(caption, 'Care gaps')]/thead//th"
    wait_for(console, lambda d: len(d.find_elements(By.XPATH, gap_columns)) == 2)

    # The billable encounters of this month as a CSV file.
    console.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)}
    )
    console.find_element(By.XPATH, "//button[text()='Download the CSV']").click()
    saved = tmp_path / f"tcm-encounters-{month}.csv"
    poll(saved.exists, "the CSV download")
    header, *rows = saved.read_text().splitlines()
    assert header == "member,month,first_contact_date,care_manager,acuity_tier,hcpcs,modifiers"
    (row,) = [r for r in rows if world.patient.split("/")[1] in r]
    assert f",{month}," in row and ",T1017," in row and world.practitioner in row

"""The member app (/apps/member/) in headless Chromium: a member signs in through the real
authorize form and sees, on each screen, what was created through the API; adds and edits a
goal, updates the engagement sheet, rates the last contact, sees a care manager's access in
"who looked at my record", downloads the record, switches to Spanish. axe-core runs on every
screen and each is saved as a screenshot."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.browser.conftest import (
    AppServer,
    check_accessibility,
    find,
    poll,
    replace_text,
    save_screenshot,
    sign_in,
    wait_for,
    wait_text,
)

ENGAGEMENT = "https://cmfhir.org/fhir/Questionnaire/engagement-sheet"
SATISFACTION = "https://cmfhir.org/fhir/Questionnaire/contact-satisfaction"
HOSTILE = "<img src=x onerror=\"document.title='pwned'\">Walk & talk"


class World:
    """What the care team recorded about one member, through the API."""

    def __init__(self, server: AppServer) -> None:
        now = datetime.now(UTC)
        self.dana = server.create(
            {
                "resourceType": "Practitioner",
                "name": [{"given": ["Dana"], "family": "Smith"}],
                "telecom": [
                    {"system": "phone", "value": "+1 919 555 0100"},
                    {"system": "email", "value": "dana.smith@care.example"},
                ],
            }
        )
        self.sam = server.create(
            {"resourceType": "Practitioner", "name": [{"given": ["Sam"], "family": "Lee"}]}
        )
        self.patient = server.create(
            {"resourceType": "Patient", "name": [{"given": ["Alex"], "family": "Rivera"}]}
        )
        me = f"Patient/{self.patient['id']}"
        role = "https://cmfhir.org/fhir/CodeSystem/care-team-role"
        server.create(
            {
                "resourceType": "CareTeam",
                "status": "active",
                "subject": {"reference": me},
                "participant": [
                    {
                        "role": [{"coding": [{"system": role, "code": "care-manager"}]}],
                        "member": {"reference": f"Practitioner/{self.dana['id']}"},
                    },
                    {
                        "role": [{"coding": [{"system": role, "code": "peer-support"}]}],
                        "member": {"reference": f"Practitioner/{self.sam['id']}"},
                    },
                ],
            }
        )
        self.goal = server.create(
            {
                "resourceType": "Goal",
                "lifecycleStatus": "active",
                "description": {"text": HOSTILE},
                "subject": {"reference": me},
                "expressedBy": {"reference": me},
            }
        )
        self.plan = server.create(
            {
                "resourceType": "CarePlan",
                "status": "active",
                "intent": "plan",
                "title": "Alex's plan for the spring",
                "description": "Get back to work and sleep better.",
                "subject": {"reference": me},
                "goal": [{"reference": f"Goal/{self.goal['id']}"}],
                "activity": [{"detail": {"status": "scheduled", "description": "Weekly call"}}],
            }
        )
        self.appointment = server.create(
            {
                "resourceType": "Appointment",
                "status": "booked",
                "description": "Check-in with Dana",
                "start": (now + timedelta(days=2)).isoformat(timespec="seconds"),
                "end": (now + timedelta(days=2, hours=1)).isoformat(timespec="seconds"),
                "participant": [
                    {"actor": {"reference": me}, "status": "accepted"},
                    {
                        "actor": {
                            "reference": f"Practitioner/{self.dana['id']}",
                            "display": "Dana Smith",
                        },
                        "status": "accepted",
                    },
                ],
            }
        )
        self.contact = server.create(
            {
                "resourceType": "Communication",
                "status": "completed",
                "subject": {"reference": me},
                "sender": {"reference": f"Practitioner/{self.dana['id']}"},
                "sent": (now - timedelta(hours=3)).isoformat(timespec="seconds"),
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
        )
        self.sheet = server.create(
            {
                "resourceType": "QuestionnaireResponse",
                "questionnaire": ENGAGEMENT,
                "status": "completed",
                "subject": {"reference": me},
                "authored": (now - timedelta(days=1)).isoformat(timespec="seconds"),
                "item": [
                    {
                        "linkId": "what-matters",
                        "item": [
                            {"linkId": "what-matters-most", "answer": [{"valueString": "My kids"}]}
                        ],
                    },
                    {
                        "linkId": "reach-me",
                        "item": [
                            {
                                "linkId": "contact-method",
                                "answer": [
                                    {
                                        "valueCoding": {
                                            "system": "https://cmfhir.org/fhir/CodeSystem/contact-preference",
                                            "code": "phone-call",
                                        }
                                    }
                                ],
                            }
                        ],
                    },
                ],
            }
        )
        self.me = me
        self.member = server.add_user(me)
        self.server = server


@pytest.fixture(scope="module")
def world(app_server: AppServer) -> World:
    return World(app_server)


@pytest.fixture(scope="module")
def member(browser: Any, app_server: AppServer, world: World) -> Iterator[Any]:
    """The browser signed in as the member (once for the module), at phone width."""
    browser.set_window_size(412, 915)
    browser.get(app_server.app_url("member"))
    find(browser, "[data-sign-in]")
    check_accessibility(browser, "member-sign-in")
    sign_in(browser, app_server, "member", world.member.username, world.member.password)
    find(browser, "nav")
    yield browser


def screen(browser: Any, route: str, title: str) -> None:
    """Open the member app's screen #/route (the browser is on the app) and wait until it
    has loaded."""
    browser.execute_script("location.hash = arguments[0]", f"#/{route}")
    wait_text(browser, title, "h1")
    wait_for(browser, lambda d: not d.find_elements("css selector", "main .loading"))


def test_care_team_and_how_to_reach_them(member: Any, world: World) -> None:
    screen(member, "team", "My care team")
    wait_text(member, "Dana Smith")
    main = member.find_element("css selector", "main").text
    assert "your care manager" in main
    assert "Sam Lee" in main and "your peer support specialist" in main
    phone = member.find_element("css selector", "a[href^='tel:']")
    assert phone.get_attribute("href") == "tel:+19195550100"
    assert "Alex Rivera" in member.find_element("css selector", "header").text
    check_accessibility(member, "member-care-team")


def test_goals_shown_as_text_added_and_edited(member: Any, world: World) -> None:
    screen(member, "goals", "My goals")
    wait_text(member, HOSTILE)
    # The member's words are text: no element made of them, no script run.
    assert not member.find_elements("css selector", "main img")
    assert member.title != "pwned"
    check_accessibility(member, "member-goals")

    find(member, "#new-goal").send_keys("Sleep eight hours")
    find(member, "form button[type=submit]").click()
    wait_text(member, "Your goal was added.")
    wait_text(member, "Sleep eight hours", ".cards")
    client = world.server.system()
    goals = client.get(f"/Goal?patient={world.patient['id']}").json()["entry"]
    added = [
        e["resource"] for e in goals if e["resource"]["description"]["text"] == "Sleep eight hours"
    ]
    assert len(added) == 1
    assert added[0]["expressedBy"]["reference"] == world.me

    change = member.find_element("css selector", "button[aria-label='Change: Sleep eight hours']")
    change.click()
    field = replace_text(member, f"#goal-{added[0]['id']}", "Sleep eight hours most nights")
    field.find_element("xpath", "ancestor::form//button[@type='submit']").click()
    wait_text(member, "Your goal was saved.")
    stored = client.get(f"/Goal/{added[0]['id']}").json()
    assert stored["description"]["text"] == "Sleep eight hours most nights"
    assert stored["meta"]["versionId"] == "2"


def test_care_plan_printable(member: Any, world: World) -> None:
    screen(member, "plan", "My care plan")
    wait_text(member, "Alex's plan for the spring")
    main = member.find_element("css selector", "main").text
    assert "Weekly call" in main and "Get back to work" in main
    assert HOSTILE in main  # the plan's goal, by its words
    # A print stylesheet hides the navigation when printed.
    assert member.execute_script(
        """for (const sheet of document.styleSheets)
             for (const rule of sheet.cssRules)
               if (rule.media && rule.media.mediaText === 'print'
                   && rule.cssText.includes('nav')) return true;
           return false;"""
    )
    find(member, "button.primary")  # "Print my care plan"
    check_accessibility(member, "member-care-plan")


def test_upcoming_appointments(member: Any, world: World) -> None:
    screen(member, "appointments", "My appointments")
    wait_text(member, "Check-in with Dana")
    assert "With: Dana Smith" in member.find_element("css selector", "main").text
    check_accessibility(member, "member-appointments")


def test_engagement_sheet_answers_updated(member: Any, world: World) -> None:
    screen(member, "about-me", "About me")
    field = find(member, "#q-what-matters-most")
    assert field.get_attribute("value") == "My kids"
    check_accessibility(member, "member-about-me")
    find(member, "#q-best-times").send_keys("Weekday mornings")
    member.find_element("css selector", "form.questionnaire button[type=submit]").click()
    wait_text(member, "Your answers were saved.")
    stored = world.server.system().get(f"/QuestionnaireResponse/{world.sheet['id']}").json()
    assert stored["meta"]["versionId"] == "2"
    reach = next(i for i in stored["item"] if i["linkId"] == "reach-me")
    times = next(i for i in reach["item"] if i["linkId"] == "best-times")
    assert times["answer"] == [{"valueString": "Weekday mornings"}]
    matters = next(i for i in stored["item"] if i["linkId"] == "what-matters")
    assert matters["item"][0]["answer"] == [{"valueString": "My kids"}]


def test_rate_last_contact_in_three_taps(member: Any, world: World) -> None:
    screen(member, "rate", "Rate my last contact")
    wait_text(member, "with Dana Smith")
    check_accessibility(member, "member-rate")
    find(member, "input[name=overall][value='5']").find_element("xpath", "..").click()
    find(member, "input[name=helpful][value='Very helpful']").find_element("xpath", "..").click()
    member.find_element("css selector", "form button[type=submit]").click()
    wait_text(member, "You rated this contact 5 out of 5.")
    found = (
        world.server.system()
        .get(f"/QuestionnaireResponse?contact=Communication/{world.contact['id']}")
        .json()
    )
    [response] = [e["resource"] for e in found["entry"]]
    assert response["questionnaire"] == SATISFACTION
    assert response["status"] == "completed"
    answers = {i["linkId"]: i["answer"][0] for i in response["item"]}
    assert answers["overall"] == {"valueInteger": 5}
    assert answers["helpful"] == {"valueString": "Very helpful"}
    check_accessibility(member, "member-rate-done")


def test_who_looked_at_my_record(member: Any, world: World) -> None:
    dana = world.server.token("user/*.cruds", fhir_user=f"Practitioner/{world.dana['id']}")
    assert dana.get(f"/CarePlan/{world.plan['id']}").status_code == 200
    # The audit trail is written every 0.2 s here: wait until the member can see it.
    mine = world.server.token("patient/*.rs", patient=world.patient["id"])
    query = f"/AuditEvent?patient={world.patient['id']}&_sort=-date&_count=100"
    poll(
        lambda: any(
            e["resource"]["agent"][0]["who"].get("reference") == f"Practitioner/{world.dana['id']}"
            for e in mine.get(query).json().get("entry", [])
        ),
        "the care manager's read in the member's audit trail",
    )
    screen(member, "access", "Who looked at my record")
    wait_text(member, "Dana Smith, your care manager, viewed your care plan on")
    check_accessibility(member, "member-who-looked")


def test_download_my_record(member: Any, world: World) -> None:
    screen(member, "record", "Download my record")
    check_accessibility(member, "member-download")
    member.find_element("css selector", "main button.primary").click()
    wait_text(member, "Your record is ready:")
    link = find(member, "a[download]")
    assert link.get_attribute("href").startswith("blob:")
    text = member.find_element("css selector", "main").text
    count = int(text.split("Your record is ready:")[1].split()[0])
    assert count >= 8  # the Patient, the care team, goals, plan, appointment, contact...


def test_spanish_is_remembered(member: Any, world: World) -> None:
    screen(member, "team", "My care team")
    from selenium.webdriver.support.ui import Select

    Select(find(member, "#language")).select_by_value("es")
    wait_text(member, "Mi equipo de cuidado", "h1")
    assert member.find_element("css selector", "html").get_attribute("lang") == "es"
    wait_text(member, "su administrador/a de cuidado")
    check_accessibility(member, "member-care-team-es")
    member.refresh()
    wait_text(member, "Mi equipo de cuidado", "h1")
    assert member.find_element("css selector", "html").get_attribute("lang") == "es"
    screen(member, "access", "Quién miró mi expediente")
    wait_text(member, "Dana Smith, su administrador/a de cuidado, vio su plan de cuidado el")
    save_screenshot(member, "member-who-looked-es")
    # The engagement sheet's own texts in Spanish (its translation extensions); what is stored
    # is still the Questionnaire's (English) item text beside the member's answer.
    screen(member, "about-me", "Sobre mí")
    wait_text(member, "Lo que más me importa ahora", "label[for=q-what-matters-most]")
    wait_text(member, "No tiene que contestar estas preguntas.", "form.questionnaire")
    wait_text(member, "Está bien dejar un mensaje", "form.questionnaire legend")
    check_accessibility(member, "member-about-me-es")
    find(member, "#q-strengths").send_keys("Cocino bien")
    member.find_element("css selector", "form.questionnaire button[type=submit]").click()
    wait_text(member, "Sus respuestas fueron guardadas.")
    stored = world.server.system().get(f"/QuestionnaireResponse/{world.sheet['id']}").json()
    matters = next(i for i in stored["item"] if i["linkId"] == "what-matters")
    strengths = next(i for i in matters["item"] if i["linkId"] == "strengths")
    assert strengths["text"].startswith("My strengths")
    assert strengths["answer"] == [{"valueString": "Cocino bien"}]
    Select(find(member, "#language")).select_by_value("en")
    wait_text(member, "About me", "h1")
    wait_text(member, "What matters most to me right now", "label[for=q-what-matters-most]")

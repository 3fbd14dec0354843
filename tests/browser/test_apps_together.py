"""The two apps together, in one browser: from the start page's link and the sign-in form,
a care manager logs a contact in the care-team console (which asks the member for feedback
with a survey-request Task); the member then signs in to the member app (a new SMART session
in the same browser), rates that contact in three taps, which answers the Task, and sees the
care manager's visit through the console in "who looked at my record" (the console's
requests are audited like any other)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from tests.browser.conftest import (
    AppServer,
    User,
    check_accessibility,
    fill_sign_in_form,
    find,
    go,
    new_session,
    poll,
    sign_in,
    wait_for,
    wait_text,
)

ROLE = "https://cmfhir.org/fhir/CodeSystem/care-team-role"
SATISFACTION = "https://cmfhir.org/fhir/Questionnaire/contact-satisfaction"


@dataclass
class People:
    name: str  # the care manager's, as the member app says it
    practitioner: str
    patient: str
    care_manager: User
    member: User


@pytest.fixture(scope="module")
def people(app_server: AppServer) -> People:
    """A care manager with a name of her own, and one member whose care team she is on."""
    family = f"Okafor{uuid.uuid4().hex[:6]}"
    cm = app_server.create(
        {"resourceType": "Practitioner", "name": [{"given": ["Robin"], "family": family}]}
    )
    patient = app_server.create(
        {"resourceType": "Patient", "name": [{"given": ["Jordan"], "family": "Baker"}]}
    )
    practitioner, member = f"Practitioner/{cm['id']}", f"Patient/{patient['id']}"
    app_server.create(
        {
            "resourceType": "CareTeam",
            "status": "active",
            "subject": {"reference": member},
            "participant": [
                {
                    "role": [{"coding": [{"system": ROLE, "code": "care-manager"}]}],
                    "member": {"reference": practitioner},
                }
            ],
        }
    )
    return People(
        f"Robin {family}",
        practitioner,
        member,
        app_server.add_user(practitioner),
        app_server.add_user(member),
    )


def _search(app_server: AppServer, query: str) -> list[dict[str, Any]]:
    answer = app_server.system().get(query)
    assert answer.status_code == 200, answer.text
    return [e["resource"] for e in answer.json().get("entry", [])]


def test_a_contact_logged_in_the_console_is_rated_in_the_member_app(
    browser: Any, app_server: AppServer, people: People
) -> None:
    from selenium.webdriver.common.by import By

    member_id = people.patient.split("/")[1]
    # The start page launches the console standalone: its link leads to the sign-in form.
    browser.get(f"{app_server.origin}/")
    check_accessibility(browser, "start-page")
    browser.find_element(By.CSS_SELECTOR, 'a[href="/apps/care-team/"]').click()
    find(browser, "#username")
    assert "/auth/authorize" in browser.current_url
    check_accessibility(browser, "sign-in-form")
    fill_sign_in_form(browser, app_server, "care-team", people.care_manager.username)
    find(browser, "main h1")
    # The care manager logs a phone call in the console.
    go(browser, app_server, "care-team", f"member/{member_id}")
    find(browser, "#contact-medium").find_element(By.CSS_SELECTOR, 'option[value="PHONE"]').click()
    browser.find_element(By.ID, "contact-note").send_keys("Went over the new bus route")
    browser.find_element(By.XPATH, "//button[text()='Log the contact']").click()
    wait_text(browser, "Contact logged.")
    (contact,) = _search(app_server, f"/Communication?subject={people.patient}")
    (task,) = _search(app_server, f"/Task?patient={people.patient}&status=requested")
    assert task["focus"] == {"reference": f"Communication/{contact['id']}"}

    # The member, in the same browser: the console's SMART session forgotten, a new sign-in.
    new_session(browser)
    sign_in(browser, app_server, "member", people.member.username)
    find(browser, "nav")
    go(browser, app_server, "member", "rate")
    wait_text(browser, "Your care team asked how this contact went")
    wait_text(browser, f"with {people.name}")
    check_accessibility(browser, "apps-together-rate-requested")
    # Three taps: a rating, how helpful, Send.
    find(browser, "input[name=overall][value='4']").find_element(By.XPATH, "..").click()
    find(browser, "input[name=helpful][value='Somewhat helpful']").find_element(
        By.XPATH, ".."
    ).click()
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_text(browser, "You rated this contact 4 out of 5.")

    (response,) = _search(
        app_server, f"/QuestionnaireResponse?contact=Communication/{contact['id']}"
    )
    assert response["questionnaire"] == SATISFACTION
    assert response["author"] == {"reference": people.patient}
    answers = {i["linkId"]: i["answer"][0] for i in response["item"]}
    assert answers["contact"] == {"valueReference": {"reference": f"Communication/{contact['id']}"}}
    assert answers["overall"] == {"valueInteger": 4}
    answered = app_server.system().get(f"/Task/{task['id']}").json()
    assert answered["status"] == "completed"
    assert [o["valueReference"] for o in answered["output"]] == [
        {"reference": f"QuestionnaireResponse/{response['id']}"}
    ]
    assert not _search(app_server, f"/Task?patient={people.patient}&status=requested")

    # Who looked at my record: the care manager's visit through the console, once the
    # audit trail (written every 0.2 s here) has it.
    mine = app_server.token("patient/*.rs", patient=member_id)
    poll(
        lambda: any(
            e["resource"]["agent"][0]["who"].get("reference") == people.practitioner
            for e in mine.get(f"/AuditEvent?patient={member_id}&_count=100").json().get("entry", [])
        ),
        "the console's requests in the member's audit trail",
    )
    go(browser, app_server, "member", "access")
    wait_text(browser, f"{people.name}, your care manager, viewed your record on")
    wait_text(browser, f"{people.name}, your care manager, added to your contacts on")
    wait_for(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, "main .loading"))
    check_accessibility(browser, "apps-together-who-looked")

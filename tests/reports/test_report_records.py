"""Responses, care plans and encounters count in the reports as they are stored now: the
timeliness and member-experience reports select them from `report_record`, which a
trigger keeps in the writing transaction, so a record changed or deleted a moment ago
counts as changed or not at all."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import httpx
from bench.report_data import assessment_items
from tests.reports.test_report_timeliness import ASSESSMENT, SATISFACTION, _encounter, _response
from tests.reports.test_reports import NC, Caseload, Version, _report


def _timeliness(client: httpx.Client, manager: str) -> tuple[Any, ...]:
    found = _report(client, "timeliness", practitioner=manager, period="2026-11")
    (row,) = found["rows"]
    discharges = [(d["discharged"], d["follow_up"]) for d in found["discharges"]]
    return row["last_assessment"], row["last_care_plan"], discharges


def _responses(client: httpx.Client, manager: str) -> int | None:
    found = _report(client, "member-experience", practitioner=manager, period="2026-11")
    return sum(r["responses"] or 0 for r in found["rows"]) if found["rows"] else None


def test_changed_and_deleted_records_change_the_reports(
    client: httpx.Client, database_url: str
) -> None:
    load = Caseload(client)
    manager = load.managers[0]
    early = datetime(2026, 6, 1, tzinfo=UTC)
    member = load.add_member([[Version(early, load.org_a, manager, "low", date(2026, 7, 1))]])
    member.contacts.append((datetime(2026, 11, 6, 9, tzinfo=NC), "PHONE", "completed"))
    load.write(database_url)
    me = manager.split("/")[1]
    assert _timeliness(client, me) == (None, None, [])

    assessment = _response(member.id, ASSESSMENT, "2026-11-02", assessment_items())
    assessment["id"] = load._create(assessment).split("/")[1]
    plan = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": f"Patient/{member.id}"},
        "created": "2026-11-04",
    }
    plan["id"] = load._create(plan).split("/")[1]
    encounter = load._create(_encounter(member.id, "IMP", "2026-11-03T10:00:00-05:00"))
    assert _timeliness(client, me) == (
        "2026-11-02",
        "2026-11-04",
        [("2026-11-03", "2026-11-06")],
    )

    # Entered in error, dated otherwise, deleted: each counts as it is now.
    assessment["status"] = "entered-in-error"
    assert client.put(f"/QuestionnaireResponse/{assessment['id']}", json=assessment).is_success
    plan["created"] = "2026-11-09"
    assert client.put(f"/CarePlan/{plan['id']}", json=plan).is_success
    assert client.delete(f"/{encounter}").status_code in (200, 204)
    assert _timeliness(client, me) == (None, "2026-11-09", [])

    # Five satisfaction answers are shown (fewer are suppressed); one deleted, none is.
    ids = [
        load._create(
            _response(
                member.id,
                SATISFACTION,
                "2026-11-07",
                [{"linkId": "overall", "answer": [{"valueInteger": 4}]}],
            )
        )
        for _ in range(5)
    ]
    assert _responses(client, me) == 5
    assert client.delete(f"/{ids[0]}").status_code in (200, 204)
    assert _responses(client, me) == 0

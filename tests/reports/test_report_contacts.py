"""A contact counts in the reports as it is stored now: the reports read each contact from
`report_contact`, which a trigger keeps in the writing transaction, so a Communication
changed or deleted a moment ago counts as changed or not at all."""

from __future__ import annotations

from datetime import UTC, date, datetime

import httpx
from tests.reports.test_reports import NC, Caseload, Version, _contact, _report


def _months(client: httpx.Client, manager: str) -> list[tuple[str, int, int]]:
    found = _report(client, "contact-compliance", practitioner=manager, period="2026-10..2026-11")
    return [(r["month"], r["contacts"], r["in_person"]) for r in found["rows"]]


def test_changed_and_deleted_contacts_change_the_report(
    client: httpx.Client, database_url: str
) -> None:
    load = Caseload(client)
    manager = load.managers[0]
    early = datetime(2026, 6, 1, tzinfo=UTC)
    member = load.add_member([[Version(early, load.org_a, manager, "low", date(2026, 7, 1))]])
    load.write(database_url)
    sent = datetime(2026, 11, 5, 10, tzinfo=NC)
    ids = [
        load._create(_contact(member.id, sent, medium, "completed")) for medium in ("FACE", "PHONE")
    ]
    manager_id = manager.split("/")[1]
    assert _months(client, manager_id) == [("2026-10", 0, 0), ("2026-11", 2, 1)]

    # Sent a month earlier, then no longer completed: it moves, then stops counting.
    moved = {**_contact(member.id, sent.replace(month=10), "FACE", "completed")}
    moved["id"] = ids[0].split("/")[1]
    assert client.put(f"/{ids[0]}", json=moved).status_code == 200
    assert _months(client, manager_id) == [("2026-10", 1, 1), ("2026-11", 1, 0)]
    moved["status"] = "entered-in-error"
    assert client.put(f"/{ids[0]}", json=moved).status_code == 200
    assert _months(client, manager_id) == [("2026-10", 0, 0), ("2026-11", 1, 0)]

    assert client.delete(f"/{ids[1]}").status_code in (200, 204)
    assert _months(client, manager_id) == [("2026-10", 0, 0), ("2026-11", 0, 0)]

"""A past month of a report counts for a care-team member who was on the member's active
CareTeam at that month's end, even after they left the team: CareTeam membership is read
from the team's recorded versions, as enrollments are (docs/reports.md, "Who may run
them"). The right answers are worked out here from what the test wrote."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url
from tests.auth.conftest import Smart
from tests.reports.test_reports import NC, Caseload, Version

PERIOD = "2026-09..2026-11"


def _team(member: str, practitioners: list[str], status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "CareTeam",
        "status": status,
        "subject": {"reference": f"Patient/{member}"},
        "participant": [{"member": {"reference": p}} for p in practitioners],
    }


async def _stamp(database_url: str, team: str, recorded: list[datetime]) -> None:
    """The test's clock: when each version of the CareTeam was recorded."""
    url = make_url(database_url)
    conn = await asyncpg.connect(
        user=url.username,
        password=url.password,
        host=url.query.get("host") or url.host,
        port=url.port,
        database=url.database,
    )
    try:
        for version, at in enumerate(recorded, start=1):
            await conn.execute(
                "UPDATE resource_history SET last_updated = $3 "
                "WHERE resource_type = 'CareTeam' AND id = $1 AND version = $2",
                team,
                version,
                at,
            )
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def teams(smart: Smart) -> dict[str, Any]:
    system = smart.system()
    http = httpx.Client(
        base_url=smart.base, headers={"Authorization": f"Bearer {system.token}"}, timeout=60
    )
    load = Caseload(http)
    cm0 = load.managers[0]
    helper = load._create({"resourceType": "Practitioner", "name": [{"family": "Helper"}]})
    early = datetime(2026, 6, 1, tzinfo=UTC)
    # Both managed by cm0 all along; the helper was on the first member's team until
    # 5 October, and on the second member's team only while it was inactive.
    left = load.add_member([[Version(early, load.org_a, cm0, "low", date(2026, 7, 1))]])
    never = load.add_member([[Version(early, load.org_a, cm0, "low", date(2026, 7, 1))]])
    for member in (left, never):
        member.contacts.append((datetime(2026, 9, 10, 10, tzinfo=NC), "PHONE", "completed"))
        member.contacts.append((datetime(2026, 10, 10, 10, tzinfo=NC), "PHONE", "completed"))
    load.write(smart.database_url)

    first = load._create(_team(left.id, [cm0, helper]))
    response = http.put(f"/{first}", json={**_team(left.id, [cm0]), "id": first.split("/")[1]})
    assert response.status_code == 200, response.text
    second = load._create(_team(never.id, [cm0, helper], status="inactive"))
    response = http.put(f"/{second}", json={**_team(never.id, [cm0]), "id": second.split("/")[1]})
    assert response.status_code == 200, response.text
    removed = datetime(2026, 10, 5, 9, tzinfo=NC)
    asyncio.run(_stamp(smart.database_url, first.split("/")[1], [early, removed]))
    asyncio.run(_stamp(smart.database_url, second.split("/")[1], [early, removed]))
    http.close()
    return {"helper": helper.split("/")[1], "left": left.id, "never": never.id}


def test_a_past_month_counts_for_who_was_on_the_care_team_then(
    smart: Smart, teams: dict[str, Any]
) -> None:
    bearer = smart.as_token("user/*.rs", fhir_user=f"Practitioner/{teams['helper']}")
    root = bearer.base.removesuffix("/fhir")
    response = bearer.get(f"{root}/reports/contact-compliance", params={"period": PERIOD})
    assert response.status_code == 200, response.text
    rows = {(r["member"], r["month"], r["contacts"]) for r in response.json()["rows"]}
    # September ended while the helper was on the team; October and November after.
    assert rows == {(teams["left"], "2026-09", 1)}

    response = bearer.get(f"{root}/reports/caseload", params={"period": "2026-09"})
    assert response.status_code == 200, response.text
    members = [r for r in response.json()["rows"] if r["kind"] == "members"]
    assert [r["count"] for r in members] == [1]

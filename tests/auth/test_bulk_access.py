"""Bulk Data `$export` under tokens that see only part of the data, over HTTP with
authorization on: a care manager's export holds exactly the members they may see (compared
with the database), a member's token only their own record (and no system-level export),
and nobody but the principal that asked may poll the export or fetch its files."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from tests.auth.conftest import Bearer, Smart

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
TYPES = ["CareTeam", "Observation", "Patient"]


@dataclass
class Panel:
    members: list[str]  # three members; the care manager is on the first two's CareTeams
    manager: str
    stranger: str


def _create(system: Bearer, resource: dict[str, Any]) -> str:
    answer = system.post(f"/{resource['resourceType']}", json=resource)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


@pytest.fixture(scope="module")
def panel(smart: Smart) -> Panel:
    system = smart.system()
    manager = _create(system, {"resourceType": "Practitioner"})
    stranger = _create(system, {"resourceType": "Practitioner"})
    members = [_create(system, {"resourceType": "Patient", "active": True}) for _ in range(3)]
    for n, member in enumerate(members):
        for code in ("a", "b"):
            _create(
                system,
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "urn:test", "code": code}]},
                    "subject": {"reference": f"Patient/{member}"},
                },
            )
        participant = manager if n < 2 else stranger
        _create(
            system,
            {
                "resourceType": "CareTeam",
                "status": "active",
                "subject": {"reference": f"Patient/{member}"},
                "participant": [{"member": {"reference": f"Practitioner/{participant}"}}],
            },
        )
    return Panel(members, manager, stranger)


async def _stored(database_url: str, members: list[str]) -> set[str]:
    url = make_url(database_url)
    conn = await asyncpg.connect(
        user=url.username,
        password=url.password,
        host=url.query.get("host") or url.host,
        port=url.port,
        database=url.database,
    )
    try:
        rows = await conn.fetch(
            "SELECT resource_type, id FROM resource WHERE NOT deleted"
            " AND patient_id = ANY($1::text[]) AND resource_type = ANY($2::text[])",
            members,
            TYPES,
        )
    finally:
        await conn.close()
    return {f"{r[0]}/{r[1]}" for r in rows}


def _export(who: Bearer, url: str) -> tuple[str, dict[str, Any]]:
    kickoff = who.get(url, headers=ASYNC)
    assert kickoff.status_code == 202, kickoff.text
    status_url = kickoff.headers["Content-Location"]
    deadline = time.monotonic() + 60
    while True:
        answer = who.get(status_url)
        if answer.status_code == 200:
            return status_url, answer.json()
        assert answer.status_code == 202, answer.text
        assert time.monotonic() < deadline, "the export did not finish"
        time.sleep(0.2)


def _exported(who: Bearer, manifest: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for item in manifest["output"]:
        answer = who.get(item["url"])
        assert answer.status_code == 200, answer.text
        for line in answer.text.splitlines():
            resource = json.loads(line)
            found.add(f"{resource['resourceType']}/{resource['id']}")
    return found


def test_a_care_manager_exports_exactly_the_members_they_see(smart: Smart, panel: Panel) -> None:
    manager = smart.as_token("user/*.rs", fhir_user=f"Practitioner/{panel.manager}")
    status_url, manifest = _export(manager, f"/Patient/$export?_type={','.join(TYPES)}")
    assert manifest["requiresAccessToken"] is True
    exported = _exported(manager, manifest)
    seen = asyncio.run(_stored(smart.database_url, panel.members[:2]))
    assert len(seen) == 2 * (1 + 2 + 1)  # each: the Patient, two Observations, a CareTeam
    assert exported == seen
    hidden = asyncio.run(_stored(smart.database_url, panel.members[2:]))
    assert not exported & hidden

    # System level too: every Patient the care manager may see, and no other.
    _, everyone = _export(manager, "/$export?_type=Patient")
    assert _exported(manager, everyone) == {f"Patient/{m}" for m in panel.members[:2]}

    # Nobody else polls it or fetches its files: not another client, not another user of
    # the same app.
    file_url = manifest["output"][0]["url"]
    other_user = smart.as_token("user/*.rs", fhir_user=f"Practitioner/{panel.stranger}")
    for other in (smart.system(), other_user):
        assert other.get(status_url).status_code == 403
        assert other.get(file_url).status_code == 403
        assert other.delete(status_url).status_code == 403
    assert manager.get(file_url).status_code == 200


def test_a_member_exports_their_own_record_only(smart: Smart, panel: Panel) -> None:
    member = panel.members[2]
    me = smart.as_token("patient/*.rs", fhir_user=f"Patient/{member}", patient=member)
    refused = me.get("/$export?_type=Patient", headers=ASYNC)
    assert refused.status_code == 403, refused.text
    assert "Patient/$export" in refused.json()["issue"][0]["diagnostics"]
    _, manifest = _export(me, f"/Patient/$export?_type={','.join(TYPES)}")
    assert _exported(me, manifest) == asyncio.run(_stored(smart.database_url, [member]))


def test_types_no_scope_permits_are_left_out_and_named(smart: Smart, panel: Panel) -> None:
    manager = smart.as_token("user/Patient.rs", fhir_user=f"Practitioner/{panel.manager}")
    _, manifest = _export(manager, "/Patient/$export?_type=Patient,Observation")
    assert _exported(manager, manifest) == {f"Patient/{m}" for m in panel.members[:2]}
    [error] = manifest["error"]
    outcome = json.loads(manager.get(error["url"]).text)
    assert "Observation" in outcome["issue"][0]["diagnostics"]
    assert outcome["issue"][0]["code"] == "forbidden"

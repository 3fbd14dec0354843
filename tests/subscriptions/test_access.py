"""A Subscription delivers only what its creator may see, decided when it is matched and
again when it is sent: a care manager who leaves the member's care team stops receiving that
member's events (with authorization on: SMART user tokens)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.subscriptions.conftest import Delivery, subscription
from tests.subscriptions.receiver import Receiver

from cmfhir.auth.keys import SigningKeys
from cmfhir.auth.tokens import issue_access_token
from cmfhir.config import Settings

ROLE = "https://cmfhir.org/fhir/CodeSystem/care-team-role"


@pytest.fixture
def delivery_settings(scratch_database: str, tmp_path: Path) -> Settings:
    """The conftest's delivery server, with authorization on."""
    return Settings(
        database_url=scratch_database,
        data_dir=tmp_path,
        auth="smart",
        audit=False,
        workers=False,
        subscription_allow_loopback=True,
    )


def _client(delivery: Delivery, scope: str, fhir_user: str | None = None) -> httpx.AsyncClient:
    base = delivery.base
    issued = issue_access_token(
        SigningKeys(delivery.settings.data_dir / "auth-keys"),
        issuer=f"{base.rsplit('/fhir', 1)[0]}/auth",
        audience=base,
        client_id="test-app",
        scope=scope,
        lifetime=600,
        subject="tester",
        fhir_user=fhir_user,
    )
    return httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {issued.token}"})


async def _create(http: httpx.AsyncClient, resource: dict[str, Any]) -> str:
    answer = await http.post(f"/{resource['resourceType']}", json=resource)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _team(patient: str, practitioners: list[str]) -> dict[str, Any]:
    return {
        "resourceType": "CareTeam",
        "status": "active",
        "subject": {"reference": f"Patient/{patient}"},
        "participant": [
            {
                "role": [{"coding": [{"system": ROLE, "code": "care-manager"}]}],
                "member": {"reference": f"Practitioner/{p}"},
            }
            for p in practitioners
        ],
    }


def _admission(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": f"Patient/{patient}"},
    }


async def test_a_care_manager_who_leaves_the_team_stops_receiving(
    delivery: Delivery, receiver: Receiver
) -> None:
    async with _client(delivery, "system/*.cruds") as system:
        patient = await _create(system, {"resourceType": "Patient"})
        manager = await _create(system, {"resourceType": "Practitioner"})
        other = await _create(system, {"resourceType": "Practitioner"})
        team = await _create(system, _team(patient, [manager, other]))
        async with _client(
            delivery, "user/Encounter.rs user/Subscription.cruds", f"Practitioner/{manager}"
        ) as user:
            sid = await _create(
                user,
                subscription(
                    "encounter-admission-discharge",
                    receiver.url,
                    filters=(f"Encounter?patient=Patient/{patient}",),
                ),
            )
        await delivery.step()
        seen = await _create(system, _admission(patient))
        await delivery.step()
        # Numbered while the manager was on the team, sent after they left: the number
        # goes out (no gap), the focus does not.
        numbered = await _create(system, _admission(patient))
        await delivery.matcher.drain()
        left = await system.put(f"/CareTeam/{team}", json={**_team(patient, [other]), "id": team})
        assert left.status_code == 200, left.text
        await delivery.step()
        await _create(system, _admission(patient))  # not theirs to see: not numbered
        await delivery.step()
        status = (await system.get(f"/Subscription/{sid}/$status")).json()

    statuses = [s for s in receiver.statuses() if s["type"] == "event-notification"]
    assert [s["events"] for s in statuses] == [[1], [2]]
    assert statuses[0]["foci"] == [f"Encounter/{seen}"]
    assert statuses[1]["foci"] == []
    assert f"Encounter/{numbered}" not in str(receiver.bundles[-1])
    parameters = status["entry"][0]["resource"]["parameter"]
    assert {"name": "events-since-subscription-start", "valueString": "2"} in parameters

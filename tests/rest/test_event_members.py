"""The outbox names the members a change concerns: a delete carries the Patient compartment
the resource left, and an update that moves a resource to another member names both."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from cmfhir.config import Settings
from cmfhir.store.database import async_url

FHIR = {"Content-Type": "application/fhir+json"}


def _events(settings: Settings, resource_type: str, id: str) -> list[tuple[Any, ...]]:
    """(version, method, patient_id, previous_patient_id) of each event of a resource, and
    the history row's patient_id."""

    async def read() -> list[tuple[Any, ...]]:
        engine = create_async_engine(async_url(settings.database_url or ""))
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    text(
                        "SELECT e.version, e.method, e.patient_id, e.previous_patient_id, "
                        "h.patient_id FROM event e JOIN resource_history h "
                        "ON h.rid = e.rid AND h.version = e.version "
                        "WHERE e.resource_type = :t AND e.id = :i ORDER BY e.version"
                    ),
                    {"t": resource_type, "i": id},
                )
                return [tuple(row) for row in rows]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _create(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post(body["resourceType"], json=body, headers=FHIR)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _observation(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": f"Patient/{patient}"},
    }


def test_move_then_delete_names_both_members(client: httpx.Client, settings: Settings) -> None:
    first = _create(client, {"resourceType": "Patient"})
    second = _create(client, {"resourceType": "Patient"})
    obs = _create(client, _observation(first))
    moved = {**_observation(second), "id": obs}
    assert client.put(f"Observation/{obs}", json=moved, headers=FHIR).status_code == 200
    same = {**moved, "status": "amended"}
    assert client.put(f"Observation/{obs}", json=same, headers=FHIR).status_code == 200
    assert client.delete(f"Observation/{obs}").status_code in (200, 204)
    assert _events(settings, "Observation", obs) == [
        (1, "create", first, None, first),
        (2, "update", second, first, second),  # moved: both members
        (3, "update", second, None, second),  # stayed
        (4, "delete", second, None, second),  # the compartment it left
    ]


def test_delete_in_a_transaction_carries_the_member(
    client: httpx.Client, settings: Settings
) -> None:
    member = _create(client, {"resourceType": "Patient"})
    obs = _create(client, _observation(member))
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": f"Observation/{obs}"}}],
    }
    assert client.post("", json=bundle, headers=FHIR).status_code == 200
    assert _events(settings, "Observation", obs)[-1] == (2, "delete", member, None, member)


def test_moving_out_of_every_compartment_names_the_one_left(
    client: httpx.Client, settings: Settings
) -> None:
    member = _create(client, {"resourceType": "Patient"})
    obs = _create(client, _observation(member))
    unlinked = {**_observation(member), "id": obs}
    del unlinked["subject"]
    assert client.put(f"Observation/{obs}", json=unlinked, headers=FHIR).status_code == 200
    assert _events(settings, "Observation", obs)[-1] == (2, "update", None, member, None)


def test_a_patient_deleted_and_created_again(client: httpx.Client, settings: Settings) -> None:
    member = _create(client, {"resourceType": "Patient"})
    assert client.delete(f"Patient/{member}").status_code in (200, 204)
    again = {"resourceType": "Patient", "id": member}
    assert client.put(f"Patient/{member}", json=again, headers=FHIR).status_code == 201
    assert _events(settings, "Patient", member) == [
        (1, "create", member, None, member),
        (2, "delete", member, None, member),
        (3, "create", member, None, member),
    ]

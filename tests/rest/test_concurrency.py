"""Concurrent writers: If-Match has exactly one winner, racing conditional creates make one
resource, and no update is lost."""

from __future__ import annotations

import asyncio
import uuid

import httpx

FHIR = {"Content-Type": "application/fhir+json"}


async def test_concurrent_if_match_updates_have_one_winner(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        created = (
            await client.post(
                "Patient", json={"resourceType": "Patient", "active": True}, headers=FHIR
            )
        ).json()
        pid = created["id"]

        async def attempt(i: int) -> int:
            body = {**created, "name": [{"family": f"Writer{i}"}]}
            response = await client.put(
                f"Patient/{pid}", json=body, headers={**FHIR, "If-Match": 'W/"1"'}
            )
            return response.status_code

        statuses = await asyncio.gather(*(attempt(i) for i in range(20)))
        assert statuses.count(200) == 1
        assert all(s in (409, 412) for s in statuses if s != 200)
        final = (await client.get(f"Patient/{pid}")).json()
        assert final["meta"]["versionId"] == "2"
        history = (await client.get(f"Patient/{pid}/_history")).json()
        assert len(history["entry"]) == 2


async def test_concurrent_plain_updates_lose_nothing(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        created = (
            await client.post(
                "Patient", json={"resourceType": "Patient", "active": True}, headers=FHIR
            )
        ).json()
        pid = created["id"]
        statuses = await asyncio.gather(
            *(
                client.put(f"Patient/{pid}", json={**created, "gender": "other"}, headers=FHIR)
                for _ in range(15)
            )
        )
        assert [s.status_code for s in statuses].count(200) == 15
        versions = sorted(int(s.json()["meta"]["versionId"]) for s in statuses)
        assert versions == list(range(2, 17))


async def test_racing_conditional_creates_make_one_resource(base: str) -> None:
    mrn = uuid.uuid4().hex
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:test:race", "value": mrn}]}
    headers = {**FHIR, "If-None-Exist": f"identifier=urn:test:race|{mrn}"}
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        responses = await asyncio.gather(
            *(client.post("Patient", json=body, headers=headers) for _ in range(50))
        )
        statuses = [r.status_code for r in responses]
        assert statuses.count(201) == 1
        assert statuses.count(200) == 49
        assert len({r.json()["id"] for r in responses}) == 1
        found = (await client.get("Patient", params={"identifier": f"urn:test:race|{mrn}"})).json()
        assert found["total"] == 1


async def test_racing_update_as_create_of_one_id(base: str) -> None:
    pid = f"race-{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        responses = await asyncio.gather(
            *(
                client.put(
                    f"Patient/{pid}",
                    json={"resourceType": "Patient", "id": pid, "active": True},
                    headers=FHIR,
                )
                for _ in range(20)
            )
        )
        statuses = [r.status_code for r in responses]
        assert statuses.count(201) == 1
        assert statuses.count(200) == 19
        assert sorted(int(r.json()["meta"]["versionId"]) for r in responses) == list(range(1, 21))


async def test_concurrent_transactions_on_the_same_resources_serialize(base: str) -> None:
    """Transactions that update the same two resources in opposite orders: no deadlock
    surfaces as a 500, every success is one new version of both, history has no gaps."""
    ids = [f"tx-race-{uuid.uuid4().hex[:10]}" for _ in range(2)]

    def bundle(order: list[str], n: int) -> dict[str, object]:
        return {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": {"resourceType": "Patient", "id": i, "name": [{"text": f"v{n}"}]},
                    "request": {"method": "PUT", "url": f"Patient/{i}"},
                }
                for i in order
            ],
        }

    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        responses = await asyncio.gather(
            *(
                client.post("", json=bundle(ids if n % 2 else ids[::-1], n), headers=FHIR)
                for n in range(24)
            )
        )
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 409}, statuses
        wins = statuses.count(200)
        assert wins >= 1
        for i in ids:
            current = (await client.get(f"Patient/{i}")).json()
            assert current["meta"]["versionId"] == str(wins)
            history = (await client.get(f"Patient/{i}/_history", params={"_count": 100})).json()
            versions = [int(e["response"]["etag"][3:-1]) for e in history["entry"]]
            assert versions == list(range(wins, 0, -1))
        # Both resources were always written together: their names agree.
        names = {(await client.get(f"Patient/{i}")).json()["name"][0]["text"] for i in ids}
        assert len(names) == 1


def _spellings(system: str, value: str) -> list[tuple[str, dict[str, str]]]:
    """Four spellings of `identifier=system|value&active=true`: (query string, headers)."""
    return [
        ("", {"If-None-Exist": f"identifier={system}|{value}&active=true"}),
        ("", {"If-None-Exist": f"active=true&identifier={system}%7C{value}"}),
        (f"?active=true&identifier={system}%7C{value}", {}),
        (
            "",
            {
                "If-None-Exist": f"identifier={system}|{value}&active=true"
                f"&identifier={system}|{value}"
            },
        ),
    ]


async def test_racing_conditional_creates_in_four_spellings_make_one_resource(base: str) -> None:
    """The lock is on what the criteria mean, not on how they are written."""
    mrn = uuid.uuid4().hex
    body = {
        "resourceType": "Patient",
        "active": True,
        "identifier": [{"system": "urn:test:spell", "value": mrn}],
    }
    spellings = _spellings("urn:test:spell", mrn)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        responses = await asyncio.gather(
            *(
                client.post(f"Patient{query}", json=body, headers={**FHIR, **headers})
                for i in range(40)
                for query, headers in [spellings[i % 4]]
            )
        )
        statuses = [r.status_code for r in responses]
        assert statuses.count(201) == 1, statuses
        assert statuses.count(200) == 39, statuses
        assert len({r.json()["id"] for r in responses}) == 1
        found = (await client.get("Patient", params={"identifier": f"urn:test:spell|{mrn}"})).json()
        assert found["total"] == 1


async def test_racing_conditional_updates_in_four_spellings_make_one_resource(base: str) -> None:
    mrn = uuid.uuid4().hex
    body = {
        "resourceType": "Patient",
        "active": True,
        "identifier": [{"system": "urn:test:spell", "value": mrn}],
    }
    queries = [
        f"identifier=urn:test:spell|{mrn}&active=true",
        f"active=true&identifier=urn:test:spell%7C{mrn}",
        f"identifier=urn:test:spell%7C{mrn}&active=true&active=true",
        f"active=true&identifier=urn:test:spell|{mrn}&identifier=urn:test:spell|{mrn}",
    ]
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        responses = await asyncio.gather(
            *(client.put(f"Patient?{queries[i % 4]}", json=body, headers=FHIR) for i in range(40))
        )
        statuses = [r.status_code for r in responses]
        assert statuses.count(201) == 1, statuses
        assert statuses.count(200) == 39, statuses
        assert len({r.json()["id"] for r in responses}) == 1
        found = (await client.get("Patient", params={"identifier": f"urn:test:spell|{mrn}"})).json()
        assert found["total"] == 1


async def test_racing_transactions_creating_many_same_ids_never_duplicate(base: str) -> None:
    """Past 64 new names a transaction claims none (PostgreSQL's lock table is shared): the
    unique key alone keeps racing creators apart, and the loser is told to retry."""
    ids = [f"many-{uuid.uuid4().hex[:10]}" for _ in range(100)]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "id": i, "active": True},
                "request": {"method": "PUT", "url": f"Patient/{i}"},
            }
            for i in ids
        ],
    }
    headers = {**FHIR, "Prefer": "return=minimal"}
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        responses = await asyncio.gather(
            *(client.post("", json=bundle, headers=headers) for _ in range(6))
        )
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 409}, statuses
        wins = statuses.count(200)
        assert wins >= 1
        for i in (ids[0], ids[-1]):
            current = (await client.get(f"Patient/{i}")).json()
            assert current["meta"]["versionId"] == str(wins)

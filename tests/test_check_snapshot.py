"""`cmfhir check` while the server is writing: it reads content and index rows from one
snapshot, so concurrent updates, creates and deletes never look like damage (the damage
tests are in test_durability.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from cmfhir.app import open_context
from cmfhir.config import Settings
from cmfhir.interactions.check import check
from serving import run_cmfhir

FHIR = {"Content-Type": "application/fhir+json"}


def _patient(n: int, round_: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": f"p{n}",
        "identifier": [{"system": "urn:test:check", "value": f"{n}-{round_}"}],
        "name": [{"family": f"Family{round_}", "given": [f"Given{n}"]}],
        "birthDate": f"19{50 + round_ % 50}-01-0{1 + n % 9}",
    }


async def _write_until(base: str, until: float) -> int:
    """Update patients, add and delete observations, until `until`; how many writes."""
    writes = 0
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:

        async def writer(n: int) -> None:
            nonlocal writes
            round_ = 0
            while time.monotonic() < until:
                round_ += 1
                put = await http.put(f"Patient/p{n}", json=_patient(n, round_), headers=FHIR)
                assert put.status_code in (200, 201), put.text
                obs = {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                    "subject": {"reference": f"Patient/p{n}"},
                    "valueQuantity": {"value": 60 + round_, "unit": "kg"},
                }
                created = await http.post("Observation", json=obs, headers=FHIR)
                assert created.status_code == 201, created.text
                if round_ % 2:
                    gone = await http.delete(f"Observation/{created.json()['id']}")
                    assert gone.status_code in (200, 204)
                writes += 3

        await asyncio.gather(*(writer(n) for n in range(4)))
    return writes


def test_check_during_writes_reports_nothing(
    scratch_database: str, start_server: type, tmp_path: Path
) -> None:
    settings = Settings(database_url=scratch_database)
    with start_server(settings) as server:

        async def run() -> tuple[list[dict[str, list[str]]], int, int]:
            async with open_context(settings) as ctx:
                # Enough live resources for several check batches, then writes beside it.
                await _write_until(server.base, time.monotonic() + 2)
                until = time.monotonic() + 12
                writing = asyncio.create_task(_write_until(server.base, until))
                cli = asyncio.create_task(
                    asyncio.to_thread(run_cmfhir, scratch_database, tmp_path, "check")
                )
                found = []
                while time.monotonic() < until:
                    found.append(await check(ctx, batch=7))
                writes = await writing
                done = await cli
                return found, writes, done.returncode

        found, writes, cli_code = asyncio.run(run())
    assert writes > 50, "too few writes happened beside the checks"
    assert len(found) >= 3
    assert [f for f in found if f] == []
    assert cli_code == 0

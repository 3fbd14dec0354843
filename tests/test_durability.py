"""Crashes lose nothing: `kill -9` of the server during concurrent transactions leaves every
acknowledged Bundle whole and no unacknowledged one half-applied, and `cmfhir check` finds
the store consistent; it does find damage when there is some."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from cmfhir.store.database import async_url
from serving import run_cmfhir, serve

FHIR = {"Content-Type": "application/fhir+json"}
PER_BUNDLE = 6


def _bundle(marker: str) -> dict[str, Any]:
    tag = {"system": "urn:test:crash", "code": marker}
    entries = []
    for n in range(PER_BUNDLE // 2):
        url = f"urn:uuid:{uuid.uuid4()}"
        entries.append(
            {
                "fullUrl": url,
                "resource": {"resourceType": "Patient", "meta": {"tag": [tag]}},
                "request": {"method": "POST", "url": "Patient"},
            }
        )
        entries.append(
            {
                "resource": {
                    "resourceType": "Encounter",
                    "meta": {"tag": [tag]},
                    "status": "finished",
                    "class": {"code": "AMB"},
                    "subject": {"reference": url},
                    "period": {"start": f"2024-01-0{n + 1}"},
                },
                "request": {"method": "POST", "url": "Encounter"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


async def _load(
    base: str, until: float, under_way: asyncio.Event | None = None
) -> tuple[list[str], list[str]]:
    """Send transactions from 8 clients until `until` or the server dies; `under_way` is
    set once 20 of them are acknowledged."""
    acknowledged: list[str] = []
    sent: list[str] = []

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            while time.monotonic() < until:
                marker = uuid.uuid4().hex
                sent.append(marker)
                try:
                    response = await http.post("", json=_bundle(marker), headers=FHIR)
                except httpx.TransportError:
                    return
                if response.status_code == 200:
                    acknowledged.append(marker)
                    if under_way is not None and len(acknowledged) >= 20:
                        under_way.set()

    await asyncio.gather(*(client() for _ in range(8)))
    return sent, acknowledged


def _count(http: httpx.Client, marker: str) -> int:
    total = 0
    for resource_type in ("Patient", "Encounter"):
        found = http.get(
            resource_type, params={"_tag": f"urn:test:crash|{marker}", "_summary": "count"}
        )
        total += int(found.json()["total"])
    return total


def test_kill_9_during_transactions_loses_nothing(scratch_database: str, tmp_path: Path) -> None:
    with serve(scratch_database, tmp_path) as served:

        async def load_then_kill() -> tuple[list[str], list[str]]:
            # Killed once the load is under way (on a busy machine that takes a while), in
            # the middle of transactions.
            under_way = asyncio.Event()
            task = asyncio.create_task(_load(served.base, time.monotonic() + 90, under_way))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(under_way.wait(), 60)
            await asyncio.sleep(0.5)
            served.process.send_signal(signal.SIGKILL)
            return await task

        sent, acknowledged = asyncio.run(load_then_kill())
        served.process.wait(10)
    assert len(acknowledged) > 5, "the load did not get going before the kill"
    with serve(scratch_database, tmp_path) as again, httpx.Client(base_url=again.base) as http:
        for marker in acknowledged:
            assert _count(http, marker) == PER_BUNDLE
        for marker in set(sent) - set(acknowledged):
            assert _count(http, marker) in (0, PER_BUNDLE)
    done = run_cmfhir(scratch_database, tmp_path, "check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "consistent" in done.stdout


async def _damage(url: str) -> None:
    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "DELETE FROM idx_token WHERE rid = "
                    "(SELECT min(rid) FROM resource WHERE resource_type = 'Patient')"
                )
            )
            await conn.execute(
                text(
                    "UPDATE resource SET content = content || '{\"active\": false}' "
                    "WHERE rid = (SELECT max(rid) FROM resource WHERE resource_type = 'Patient')"
                )
            )
    finally:
        await engine.dispose()


def test_check_finds_damage(scratch_database: str, tmp_path: Path) -> None:
    with serve(scratch_database, tmp_path) as served, httpx.Client(base_url=served.base) as http:
        for n in range(3):
            body = {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:test:check", "value": str(n)}],
                "gender": "female",
            }
            assert http.post("Patient", json=body, headers=FHIR).status_code == 201
    assert run_cmfhir(scratch_database, tmp_path, "check").returncode == 0
    asyncio.run(_damage(scratch_database))
    done = run_cmfhir(scratch_database, tmp_path, "check")
    assert done.returncode == 1
    assert "index rows differ" in done.stdout
    assert "current content differs from its history row" in done.stdout

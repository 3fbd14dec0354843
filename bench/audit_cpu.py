"""The CPU the audit trail costs a read, measured in one process: two servers in this process
on one database (audit on, audit off; no workers, CMFHIR_AUTH=off), driven in turn through
ASGI with the same reads, rounds interleaved, and the trail's buffer written (`flush`) at
the end of each round of the audited one, so its cost lands in that round.

CPU is `time.process_time()` of this process (both servers, the HTTP client and the flush)
and the user+system time of the embedded PostgreSQL's processes: counted, not timed, so a
loaded machine slows the run without skewing the figures much. Run it on a checkout to
compare two versions of the code:

    .venv/bin/python -m bench.audit_cpu [--members 100] [--rounds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from bench.scratch import ROOT, admin_url, create_database, postgres_cpu
from cmfhir.app import create_app
from cmfhir.config import Settings


async def _get(app: FastAPI, path: str) -> tuple[int, bytes]:
    """One GET straight through the ASGI app: next to no client CPU in the figures."""
    route, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/fhir/{route}",
        "raw_path": f"/fhir/{route}".encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"accept", b"application/fhir+json")],
        "client": ("127.0.0.1", 40000),
        "server": ("bench", 80),
        "app": app,
    }
    status = 0
    body = bytearray()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, send)
    return status, bytes(body)


@asynccontextmanager
async def _served(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench/fhir/") as http:
            yield http


async def _load(http: httpx.AsyncClient, members: int) -> list[str]:
    paths: list[str] = []
    for n in range(members):
        patient = (await http.post("Patient", json={"resourceType": "Patient"})).json()["id"]
        observation = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{patient}"},
            "valueQuantity": {"value": 60 + n % 40, "unit": "/min"},
        }
        answer = await http.post("Observation", json=observation)
        assert answer.status_code == 201, answer.text
        paths += [f"Patient/{patient}", f"Observation?subject=Patient/{patient}"]
    return paths


async def run(members: int, rounds: int) -> dict[str, Any]:
    admin = admin_url()
    url = await create_database(admin, "cmfhir_auditcpu")
    data_dir = ROOT / ".data" / "bench-audit-cpu"
    common: dict[str, Any] = {
        "database_url": url,
        "data_dir": data_dir,
        "auth": "off",
        "workers": False,
        "audit_interval_s": 3600.0,  # written by the rounds themselves (flush)
    }
    apps = {
        "off": create_app(Settings(audit=False, **common)),
        "on": create_app(Settings(audit=True, **common)),
    }
    cpu = {"off": 0.0, "on": 0.0}
    postgres = {"off": 0.0, "on": 0.0}
    reads = {"off": 0, "on": 0}
    flush = 0.0  # of the server's CPU with audit on: writing the buffer
    async with AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(_served(app)) for name, app in apps.items()
        }
        paths = await _load(clients["off"], members)
        for name in ("off", "on"):  # untimed warm-up
            for path in paths:
                await _get(apps[name], path)
            trail = getattr(apps[name].state, "audit", None)
            if trail is not None:
                await trail.flush()
        for n in range(rounds):
            for name in ("off", "on") if n % 2 == 0 else ("on", "off"):
                pg_before, before = postgres_cpu(admin), time.process_time()
                for path in paths:
                    status, body = await _get(apps[name], path)
                    assert status == 200, body
                trail = getattr(apps[name].state, "audit", None)
                if trail is not None:
                    flushing = time.process_time()
                    await trail.flush()
                    flush += time.process_time() - flushing
                cpu[name] += time.process_time() - before
                postgres[name] += postgres_cpu(admin) - pg_before
                reads[name] += len(paths)
    out: dict[str, Any] = {"reads_per_side": reads["on"]}
    out["server_ms_per_read_writing_the_trail"] = round(1000 * flush / reads["on"], 3)
    for name in ("off", "on"):
        out[f"server_ms_per_read_{name}"] = round(1000 * cpu[name] / reads[name], 3)
        out[f"postgres_ms_per_read_{name}"] = round(1000 * postgres[name] / reads[name], 3)
    for part in ("server", "postgres"):
        out[f"{part}_ms_added_by_audit"] = round(
            out[f"{part}_ms_per_read_on"] - out[f"{part}_ms_per_read_off"], 3
        )
    total_off = out["server_ms_per_read_off"] + out["postgres_ms_per_read_off"]
    total_on = out["server_ms_per_read_on"] + out["postgres_ms_per_read_on"]
    out["cpu_ms_per_read_off"] = round(total_off, 3)
    out["cpu_ms_per_read_on"] = round(total_on, 3)
    # What that CPU cost means for a CPU-bound server: reads/s scale with 1 / CPU per read.
    out["cpu_bound_throughput_change_percent"] = round(100 * (total_off / total_on - 1), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.members, args.rounds)), indent=2))


if __name__ == "__main__":
    main()

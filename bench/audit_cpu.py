"""The CPU the audit trail costs a read, measured in one process: two servers in this
process on one database (audit off; audit on, the trail writing AuditEvents to their own
table, store/audit_events.py), no workers, CMFHIR_AUTH=off, driven
in turn through ASGI with the same reads, rounds interleaved (the order rotates), and the
trail's buffer written (`flush`) at the end of each round of an audited server, so its
cost lands in that round.

CPU is `time.process_time()` of this process (the servers, the requests and the flush)
and the user+system time of the embedded PostgreSQL's processes: counted, not timed, so a
loaded machine slows the run without skewing the figures much:

    .venv/bin/python -m bench.audit_cpu [--members 100] [--rounds 9]
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

SIDES = ("off", "on")


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
    cpu = dict.fromkeys(SIDES, 0.0)
    postgres = dict.fromkeys(SIDES, 0.0)
    reads = dict.fromkeys(SIDES, 0)
    flush = dict.fromkeys(SIDES, 0.0)  # of the server's CPU: writing the buffer
    flush_postgres = dict.fromkeys(SIDES, 0.0)
    async with AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(_served(app)) for name, app in apps.items()
        }
        paths = await _load(clients["off"], members)
        for name in SIDES:  # untimed warm-up
            for path in paths:
                await _get(apps[name], path)
            trail = getattr(apps[name].state, "audit", None)
            if trail is not None:
                await trail.flush()
        for n in range(rounds):
            order = SIDES[n % 2 :] + SIDES[: n % 2]
            for name in order:
                pg_before, before = postgres_cpu(admin), time.process_time()
                for path in paths:
                    status, body = await _get(apps[name], path)
                    assert status == 200, body
                trail = getattr(apps[name].state, "audit", None)
                if trail is not None:
                    pg_flushing, flushing = postgres_cpu(admin), time.process_time()
                    await trail.flush()
                    flush[name] += time.process_time() - flushing
                    flush_postgres[name] += postgres_cpu(admin) - pg_flushing
                cpu[name] += time.process_time() - before
                postgres[name] += postgres_cpu(admin) - pg_before
                reads[name] += len(paths)
    out: dict[str, Any] = {"reads_per_side": reads["on"]}
    for name in SIDES:
        out[f"server_ms_per_read_{name}"] = round(1000 * cpu[name] / reads[name], 3)
        out[f"postgres_ms_per_read_{name}"] = round(1000 * postgres[name] / reads[name], 3)
    for name in ("on",):
        out[f"server_ms_per_read_writing_the_trail_{name}"] = round(
            1000 * flush[name] / reads[name], 3
        )
        out[f"postgres_ms_per_read_writing_the_trail_{name}"] = round(
            1000 * flush_postgres[name] / reads[name], 3
        )
        for part in ("server", "postgres"):
            out[f"{part}_ms_added_by_audit_{name}"] = round(
                out[f"{part}_ms_per_read_{name}"] - out[f"{part}_ms_per_read_off"], 3
            )
    total = {
        name: out[f"server_ms_per_read_{name}"] + out[f"postgres_ms_per_read_{name}"]
        for name in SIDES
    }
    for name in SIDES:
        out[f"cpu_ms_per_read_{name}"] = round(total[name], 3)
    # What that CPU cost means for a CPU-bound server: reads/s scale with 1 / CPU per read.
    for name in ("on",):
        out[f"cpu_bound_throughput_change_percent_{name}"] = round(
            100 * (total["off"] / total[name] - 1), 1
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.members, args.rounds)), indent=2))


if __name__ == "__main__":
    main()

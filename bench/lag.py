"""Where the time goes between a write and its rest-hook notification, and what the gap
engine costs per member: `python -m bench.lag [--members 200] [--probes 20]`.

Starts `cmfhir serve` (workers in-process, rules `BENCH_GAP_RULES`, default
`bench.gap_probe`) on a fresh data directory, loads `--members` members of the caseload,
then measures:

- **sweep**: every member queued (as the sweep queues them) and evaluated by the server's
  own evaluators; wall time, and the CPU seconds of the server and of PostgreSQL, so the
  figure is members per CPU-second whatever else runs on the machine.
- **chain**: a probe member with an admission/discharge Subscription (rest-hook to a
  loopback receiver, filtered to that member). Each probe writes a finished Encounter and
  times, from the write's answer (its commit): the DetectedIssue citing it readable, and
  the notification's arrival.
  Once idle (`--probes`), once while `--load-members` more members are ingested by 4
  clients. The database stamps of the event and of the DetectedIssue version give the
  engine's share.
- **cpu per event**: `--events` writes by 4 clients, until the last is notified:
  the CPU of the server and PostgreSQL per write, less what the idle workers use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from aiohttp import web

from bench.caseload import make_staff, member_bundles, staff_bundle
from bench.ingest import post_bundle, send_bundles, serialize
from bench.server import Server, free_port, start_server
from cmfhir.gaps.detected_issue import issue_id

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "https://cmfhir.org/fhir/SubscriptionTopic/encounter-admission-discharge"
RULES = os.environ.get("BENCH_GAP_RULES", "bench.gap_probe")


def _cpu(pids: list[int], reaped: bool = False) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
        if reaped:
            total += t.children_user + t.children_system
    return total


def _cpu_now(server: Server) -> tuple[float, float]:
    pg = server.postgres_pids()
    return _cpu(server.pids()), _cpu(pg[:1], True) + _cpu(pg[1:])


class Receiver:
    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}

    async def receive(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        bundle = await request.json()
        for entry in bundle.get("entry", [])[1:]:
            url = entry.get("request", {}).get("url", "")
            key = entry.get("fullUrl") or url
            self.arrived.setdefault(f"{key}@{len(self.arrived)}", now)
        status = bundle["entry"][0]["resource"]
        for parameter in status["parameter"]:
            if parameter["name"] == "notification-event":
                number = next(
                    p["valueString"] for p in parameter["part"] if p["name"] == "event-number"
                )
                self.arrived.setdefault(f"#{number}", now)
        return web.Response(status=200)


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=100) if len(ordered) > 1 else ordered * 99
    return {
        "n": len(ordered),
        "p50": round(q[49], 3),
        "p99": round(q[98], 3),
        "max": round(ordered[-1], 3),
    }


async def _settle(conn: asyncpg.Connection, give_up: float = 900) -> float:
    started = time.monotonic()
    while await conn.fetchval(
        "SELECT (SELECT count(*) FROM gap_member) + (SELECT count(*) FROM event e, consumer c "
        "WHERE c.name = 'gaps' AND (e.xid, e.seq) > (c.xid, c.seq))"
    ):
        if time.monotonic() - started > give_up:
            raise RuntimeError("the gap engine did not catch up")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def _sweep(server: Server, conn: asyncpg.Connection) -> dict[str, Any]:
    await _settle(conn)
    members = int(
        await conn.fetchval(
            "SELECT count(*) FROM resource WHERE resource_type = 'Patient' AND NOT deleted"
        )
    )
    before = _cpu_now(server)
    started = time.monotonic()
    await conn.execute(
        "INSERT INTO gap_member (patient_id) SELECT id FROM resource "
        "WHERE resource_type = 'Patient' AND NOT deleted ON CONFLICT DO NOTHING; "
        "SELECT pg_notify('cmfhir_gaps', '')"
    )
    await _settle(conn)
    seconds = time.monotonic() - started
    after = _cpu_now(server)
    server_cpu, pg_cpu = after[0] - before[0], after[1] - before[1]
    return {
        "members": members,
        "seconds": round(seconds, 2),
        "members_per_s": round(members / seconds, 1),
        "server_cpu_s": round(server_cpu, 2),
        "postgres_cpu_s": round(pg_cpu, 2),
        "members_per_cpu_s": round(members / (server_cpu + pg_cpu), 1),
        "cpu_ms_per_member": round(1000 * (server_cpu + pg_cpu) / members, 2),
    }


async def _probe(
    http: httpx.AsyncClient,
    conn: asyncpg.Connection,
    receiver: Receiver,
    patient: str,
    count: int,
    interval: float,
) -> dict[str, Any]:
    issue = f"DetectedIssue/{issue_id(f'{patient}/bench-probe')}"
    to_issue: list[float] = []
    to_notification: list[float] = []
    steps: dict[str, list[float]] = {"event_to_issue": [], "issue_to_attempt": []}
    numbers_before = len([k for k in receiver.arrived if k.startswith("#")])
    for n in range(count):
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        body = {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{patient}"},
            "period": {"start": now, "end": now},
        }
        answer = await http.post("/Encounter", json=body)
        committed = time.monotonic()
        answer.raise_for_status()
        wanted = f"Encounter/{answer.json()['id']}"
        deadline = committed + 120
        while True:
            found = await http.get(f"/{issue}")
            if found.status_code == 200 and wanted in found.text:
                to_issue.append(time.monotonic() - committed)
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        key = f"#{numbers_before + n + 1}"
        while key not in receiver.arrived and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if key in receiver.arrived:
            to_notification.append(receiver.arrived[key] - committed)
        row = await conn.fetchrow(
            """
            SELECT (SELECT created_at FROM event e JOIN resource r ON r.rid = e.rid
                    WHERE r.resource_type = 'Encounter' AND r.id = $1) AS event_at,
                   (SELECT h.last_updated FROM resource_history h JOIN resource r USING (rid)
                    WHERE r.resource_type = 'DetectedIssue' AND r.id = $2
                    AND h.content::text LIKE '%' || $3 || '%'
                    ORDER BY h.version LIMIT 1) AS issue_at
            """,
            wanted.split("/")[1],
            issue.split("/")[1],
            wanted,
        )
        if row and row["event_at"] and row["issue_at"]:
            steps["event_to_issue"].append((row["issue_at"] - row["event_at"]).total_seconds())
        await asyncio.sleep(interval)
    return {
        "write_to_issue_s": _quantiles(to_issue),
        "write_to_notification_s": _quantiles(to_notification),
        "db_event_to_issue_stamp_s": _quantiles(steps["event_to_issue"]),
    }


async def _cpu_per_event(
    server: Server,
    http: httpx.AsyncClient,
    conn: asyncpg.Connection,
    receiver: Receiver,
    patient: str,
    count: int,
) -> dict[str, Any]:
    """CPU of the whole chain per write (the write itself, the gap feed, the evaluation and
    its DetectedIssue, the matcher, the sender): `count` Encounters written one after the
    other by 4 clients, then until the last is notified and the gap queue is empty; the
    idle workers' own CPU over the same time (measured for 10 s before) is taken off."""
    before, started = _cpu_now(server), time.monotonic()
    await asyncio.sleep(10)
    idle = _cpu_now(server)
    idle_rate = (idle[0] - before[0] + idle[1] - before[1]) / (time.monotonic() - started)
    numbers = len([k for k in receiver.arrived if k.startswith("#")])
    before, started = _cpu_now(server), time.monotonic()
    body = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient}"},
    }

    async def writer(n: int) -> None:
        for _ in range(n):
            (await http.post("/Encounter", json=body)).raise_for_status()

    await asyncio.gather(*(writer(count // 4) for _ in range(4)))
    count = 4 * (count // 4)
    wanted = f"#{numbers + count}"
    deadline = time.monotonic() + 300
    while wanted not in receiver.arrived and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await _settle(conn)
    seconds = time.monotonic() - started
    after = _cpu_now(server)
    used = after[0] - before[0] + after[1] - before[1]
    return {
        "events": count,
        "seconds": round(seconds, 1),
        "idle_cpu_per_s": round(idle_rate, 3),
        "server_cpu_s": round(after[0] - before[0], 2),
        "postgres_cpu_s": round(after[1] - before[1], 2),
        "cpu_ms_per_event_raw": round(1000 * used / count, 1),
        "cpu_ms_per_event": round(1000 * (used - idle_rate * seconds) / count, 1),
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/notify", receiver.receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    rport = free_port()
    await web.TCPSite(runner, "127.0.0.1", rport).start()
    data_dir = Path(args.data_dir) / f"lag-{int(time.time())}"
    server = start_server(
        data_dir,
        free_port(),
        args.workers,
        None,
        {"CMFHIR_SUBSCRIPTION_ALLOW_LOOPBACK": "true", "CMFHIR_GAP_RULES": RULES},
    )
    result: dict[str, Any] = {"rules": RULES, "load_at_start": os.getloadavg()}
    try:
        staff = make_staff(args.members + args.load_members)
        post_bundle(server.base_url, staff_bundle(staff))
        bundles = list(member_bundles(1, args.members + args.load_members, staff))
        payloads, counts, _ = serialize(bundles)
        first, rest = payloads[: args.members], payloads[args.members :]
        ingest, _ = await send_bundles(server.base_url, first, counts[: args.members], 4)
        result["ingest"] = {k: ingest[k] for k in ("resources", "resources_per_second")}
        conn = await asyncpg.connect(server.database_url)
        try:
            result["settle_after_ingest_s"] = round(await _settle(conn), 1)
            result["sweep"] = await _sweep(server, conn)
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
                made = await http.post("/Patient", json={"resourceType": "Patient"})
                patient = made.json()["id"]
                sub = {
                    "resourceType": "Subscription",
                    "status": "requested",
                    "reason": "bench",
                    "criteria": TOPIC,
                    "_criteria": {
                        "extension": [
                            {
                                "url": BACKPORT + "backport-filter-criteria",
                                "valueString": f"Encounter?patient=Patient/{patient}",
                            }
                        ]
                    },
                    "channel": {
                        "type": "rest-hook",
                        "endpoint": f"http://127.0.0.1:{rport}/notify",
                        "payload": "application/fhir+json",
                    },
                }
                (await http.post("/Subscription", json=sub)).raise_for_status()
                await asyncio.sleep(2)
                result["cpu_per_event"] = await _cpu_per_event(
                    server, http, conn, receiver, patient, args.events
                )
                before = _cpu_now(server)
                started = time.monotonic()
                result["idle"] = await _probe(http, conn, receiver, patient, args.probes, 0.3)
                after = _cpu_now(server)
                result["idle"]["seconds"] = round(time.monotonic() - started, 1)
                result["idle"]["server_cpu_s"] = round(after[0] - before[0], 2)
                result["idle"]["postgres_cpu_s"] = round(after[1] - before[1], 2)
                if rest:
                    load = asyncio.create_task(
                        send_bundles(server.base_url, rest, counts[args.members :], 4)
                    )
                    await asyncio.sleep(1)
                    probes = []
                    while not load.done():
                        probes.append(await _probe(http, conn, receiver, patient, 1, 0.2))
                    loaded, _ = await load
                    merged: dict[str, list[float]] = {}
                    result["under_ingest"] = {
                        "ingest_resources_per_second": loaded["resources_per_second"],
                        "probes": len(probes),
                    }
                    for key in ("write_to_issue_s", "write_to_notification_s"):
                        merged[key] = [p[key]["p50"] for p in probes if p[key]["p50"] is not None]
                        result["under_ingest"][key] = _quantiles(merged[key])
        finally:
            await conn.close()
    finally:
        result["load_at_end"] = os.getloadavg()
        server.stop()
        await runner.cleanup()
        if not args.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lag", description=__doc__)
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--load-members", type=int, default=100)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--events", type=int, default=30, help="writes for CPU per event")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", default=".data/bench")
    parser.add_argument("--keep-data", action="store_true")
    args = parser.parse_args(argv)
    json.dump(asyncio.run(_run(args)), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Notification lag: `python -m bench.subscriptions [--subscriptions 100] [--rate 500]`.

Starts `cmfhir serve` on a fresh data directory, a rest-hook subscriber (aiohttp, loopback)
and `--subscriptions` active Subscriptions to the admission/discharge topic, each filtered
to one member. Then ingests transaction Bundles of admissions (Encounters of those members,
in-progress) at `--rate` resources/s for `--seconds`, and measures for each admission the
time from the answer to the Bundle that wrote it (its commit) to the arrival of its
notification: p50, p99 and max, and whether every admission was notified once.
Not part of the test suite; figures go in bench/README.md ("Subscriptions").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from bench.server import free_port, start_server

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "https://cmfhir.org/fhir/SubscriptionTopic/encounter-admission-discharge"


class Subscriber:
    """Records when each focus (`Encounter/id`) was first notified."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.notifications = 0
        self.handshakes = 0

    async def receive(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        bundle = await request.json()
        status = bundle["entry"][0]["resource"]
        kind = next(p["valueCode"] for p in status["parameter"] if p["name"] == "type")
        if kind == "handshake":
            self.handshakes += 1
        for parameter in status["parameter"]:
            if parameter["name"] != "notification-event":
                continue
            self.notifications += 1
            for part in parameter["part"]:
                if part["name"] == "focus":
                    self.arrived.setdefault(part["valueReference"]["reference"], now)
        return web.Response(status=200)


def _subscription(endpoint: str, patient: str) -> dict[str, Any]:
    return {
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
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {
                "extension": [
                    {"url": BACKPORT + "backport-payload-content", "valueCode": "id-only"}
                ]
            },
        },
    }


def admission_bundle(patients: list[str]) -> dict[str, Any]:
    """A transaction admitting each of `patients` (an inpatient Encounter each)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "request": {"method": "POST", "url": "Encounter"},
                "resource": {
                    "resourceType": "Encounter",
                    "status": "in-progress",
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "IMP",
                    },
                    "subject": {"reference": f"Patient/{p}"},
                },
            }
            for p in patients
        ],
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    subscriber = Subscriber()
    app = web.Application()
    app.router.add_post("/notify", subscriber.receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    endpoint = f"http://127.0.0.1:{port}/notify"
    data_dir = Path(args.data_dir) / f"run-{int(time.time())}"
    server = start_server(
        data_dir,
        free_port(),
        args.workers,
        None,
        {"CMFHIR_SUBSCRIPTION_ALLOW_LOOPBACK": "true"},
    )
    rng = random.Random(args.seed)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
            patients = []
            for _ in range(args.subscriptions):
                created = await http.post("/Patient", json={"resourceType": "Patient"})
                patients.append(created.json()["id"])
            for patient in patients:
                response = await http.post("/Subscription", json=_subscription(endpoint, patient))
                response.raise_for_status()
            deadline = time.monotonic() + 60
            while subscriber.handshakes < args.subscriptions:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)

            committed: dict[str, float] = {}
            per_bundle = args.bundle
            interval = per_bundle / args.rate
            started = time.monotonic()

            async def send(at: float) -> None:
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                answer = await http.post(
                    "/", json=admission_bundle([rng.choice(patients) for _ in range(per_bundle)])
                )
                done = time.monotonic()
                answer.raise_for_status()
                for entry in answer.json()["entry"]:
                    location = entry["response"]["location"]
                    committed["/".join(location.split("/")[:2])] = done

            bundles = int(args.seconds * args.rate / per_bundle)
            await asyncio.gather(*(send(started + i * interval) for i in range(bundles)))
            elapsed = time.monotonic() - started
            deadline = time.monotonic() + 60
            while len(set(committed) & set(subscriber.arrived)) < len(committed):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
    finally:
        server.stop()
        await runner.cleanup()
        if not args.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)
    lags = sorted(
        subscriber.arrived[k] - committed[k] for k in committed if k in subscriber.arrived
    )
    quantiles = statistics.quantiles(lags, n=100) if len(lags) > 1 else lags * 99
    return {
        "subscriptions": args.subscriptions,
        "rate_target": args.rate,
        "rate_achieved": round(len(committed) / elapsed, 1),
        "admissions": len(committed),
        "notified": len(lags),
        "notification_events": subscriber.notifications,
        "lag_p50_s": round(quantiles[49], 3),
        "lag_p99_s": round(quantiles[98], 3),
        "lag_max_s": round(lags[-1], 3) if lags else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.subscriptions", description=__doc__)
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument("--rate", type=float, default=500, help="resources/s ingested")
    parser.add_argument("--bundle", type=int, default=25, help="admissions per Bundle")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--workers", type=int, default=1, help="cmfhir serve --workers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", default=".data/bench")
    parser.add_argument("--keep-data", action="store_true", help="keep the server's data dir")
    args = parser.parse_args(argv)
    result = asyncio.run(_run(args))
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

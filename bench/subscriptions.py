"""Notification lag: `python -m bench.subscriptions [--subscriptions 100] [--rate 500]`.

Starts `cmfhir serve` on a fresh data directory (with `--background apart`, the default as
in the main harness: `serve --no-workers` and a `cmfhir worker` beside it; `in`: the
workers inside `serve`; `split`: one `cmfhir worker --only subscriptions` beside one for the
other groups), a rest-hook subscriber (aiohttp, loopback, a process of its own:
bench/subscription_receiver.py) and `--subscriptions` active Subscriptions to the
admission/discharge topic, each filtered to one member; once every one is shown active (the
handshakes done) it ingests transaction Bundles of admissions (Encounters of those members,
in-progress) at `--rate` resources/s for `--seconds`, and measures for each admission the
time from the answer to the Bundle that wrote it (its commit) to the arrival of its
notification (wall clocks of one machine): p50, p99 and max, and whether every admission was
notified once.

Where a backlog builds: twice a second it samples the admissions answered, the
notifications numbered by the matcher (`subscription_counter`) and those delivered
(`subscription_state.delivered_through`): `behind_matcher` = answered - numbered (outbox
events not yet matched), `behind_sender` = numbered - delivered (notifications not yet
acknowledged); their mean and max over the run, and each process's CPU (serve, worker,
PostgreSQL) over the ingest and the catch-up. The lag split in two, per notification: from
the commit to the start of the sender round whose send delivered it (its attempt's
`attempted_at`), and from then to its arrival. On a loaded machine Bundles the server
answers 503 (its pool busy) or whose connection drops are sent again (`bundles_sent_again`;
a dropped one may have committed: its admissions are then not counted) and timeouts are
counted (`bundles_failed`).
Not part of the test suite; figures go in bench/README.md ("Subscriptions").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx
import psutil

from bench.server import Server, free_port, start_server

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "https://cmfhir.org/fhir/SubscriptionTopic/encounter-admission-discharge"


def start_subscriber(port: int) -> subprocess.Popen[bytes]:
    """The subscriber in a process of its own (bench/subscription_receiver.py)."""
    command = [sys.executable, "-m", "bench.subscription_receiver", str(port)]
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/count", timeout=2).raise_for_status()
            return process
        except httpx.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.2)


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


_COUNTS = """
SELECT (SELECT coalesce(sum(events_since_start), 0) FROM subscription_counter),
       (SELECT coalesce(sum(delivered_through), 0) FROM subscription_state)
"""


class Backlog:
    """Samples, twice a second, how far behind the matcher and the sender are."""

    def __init__(self, database_url: str, answered: dict[str, float]) -> None:
        self.database_url = database_url
        self.answered = answered
        self.samples: list[tuple[float, int, int, int]] = []  # (t, answered, numbered, sent)

    async def run(self, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(self.database_url)
        try:
            while not stop.is_set():
                numbered, delivered = await conn.fetchrow(_COUNTS)
                self.samples.append(
                    (time.monotonic(), len(self.answered), int(numbered), int(delivered))
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
        finally:
            await conn.close()

    def summary(self, until: float) -> dict[str, Any]:
        during = [s for s in self.samples if s[0] <= until] or self.samples
        matcher = [max(a - n, 0) for _, a, n, _ in during]
        sender = [max(n - d, 0) for _, _, n, d in during]
        return {
            "behind_matcher_mean": round(statistics.fmean(matcher), 1) if matcher else None,
            "behind_matcher_max": max(matcher, default=None),
            "behind_sender_mean": round(statistics.fmean(sender), 1) if sender else None,
            "behind_sender_max": max(sender, default=None),
            "behind_at_end_of_ingest": {"matcher": matcher[-1], "sender": sender[-1]}
            if during
            else None,
        }


# When the delivered send that carried each focus started (its attempt's time).
_SENT_AT = """
SELECT n.focus_type || '/' || n.focus_id, extract(epoch FROM min(a.attempted_at))
FROM subscription_notification n
JOIN subscription_attempt a
  ON a.subscription_id = n.subscription_id AND a.outcome = 'delivered'
 AND n.event_number BETWEEN a.first_event AND a.last_event
GROUP BY 1
"""


async def _sent_at(database_url: str) -> dict[str, float]:
    conn = await asyncpg.connect(database_url)
    try:
        return {r[0]: float(r[1]) for r in await conn.fetch(_SENT_AT)}
    finally:
        await conn.close()


def _p50_p99(values: list[float]) -> list[float] | None:
    if len(values) < 2:
        return None
    q = statistics.quantiles(values, n=100)
    return [round(q[49], 3), round(q[98], 3)]


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def _cpus(server: Server, subscriber: subprocess.Popen[bytes]) -> dict[str, float]:
    cpus = {
        "serve": _cpu(server.pids()),
        "worker": _cpu(server.background_pids()),
        "postgres": _cpu(server.postgres_pids()),
        "harness": _cpu([os.getpid()]),
        "subscriber": _cpu([subscriber.pid]),
    }
    if server.more_workers:  # --background split: each worker process apart
        for n, worker in enumerate(server.more_workers):
            cpus[f"worker_{n}"] = _cpu([worker.pid])
    return cpus


# The worker processes of each --background (their `cmfhir worker --only` groups).
_SPLIT = ("gaps,exchange,housekeeping", "subscriptions")


def _profile(server: Server, out: Path, seconds: float) -> list[subprocess.Popen[bytes]]:
    """py-spy sampling each worker process for `seconds` (flame-graph text per process)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out.mkdir(parents=True, exist_ok=True)
    spies = []
    for pid in server.background_pids():
        command = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds))]
        command += ["--rate", "200", "--format", "raw", "--nonblocking"]
        command += ["--output", str(out / f"worker-{pid}.txt")]
        quiet = subprocess.DEVNULL
        spies.append(subprocess.Popen(command, stdout=quiet, stderr=quiet))
    return spies


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
    load_start = [round(x, 2) for x in os.getloadavg()]
    port = free_port()
    subscriber = start_subscriber(port)
    receiver = f"http://127.0.0.1:{port}"
    endpoint = f"{receiver}/notify"
    data_dir = Path(args.data_dir) / f"run-{int(time.time())}"
    try:
        server = start_server(
            data_dir,
            free_port(),
            args.workers,
            None,
            {"CMFHIR_SUBSCRIPTION_ALLOW_LOOPBACK": "true"},
            separate_worker=args.background == "apart",
            worker_groups=_SPLIT if args.background == "split" else (),
        )
    except BaseException:
        subscriber.kill()
        raise
    rng = random.Random(args.seed)
    stop_sampling = asyncio.Event()
    sampling: asyncio.Task[None] | None = None
    try:
        # No pool timeout: on a loaded machine the Bundles due wait for a connection rather
        # than fail the run (the lag is measured from their answers).
        # Connections kept idle for less than the server's keep-alive (uvicorn: 5 s), so
        # none is reused as the server closes it.
        timeout = httpx.Timeout(120, pool=None)
        limits = httpx.Limits(keepalive_expiry=2.0)
        async with httpx.AsyncClient(
            base_url=server.base_url, timeout=timeout, limits=limits
        ) as http:
            patients = []
            for _ in range(args.subscriptions):
                created = await http.post("/Patient", json={"resourceType": "Patient"})
                patients.append(created.json()["id"])
            for patient in patients:
                response = await http.post("/Subscription", json=_subscription(endpoint, patient))
                response.raise_for_status()
            deadline = time.monotonic() + 120
            while (await http.get(f"{receiver}/count")).json()["handshakes"] < len(patients):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            # And every Subscription resource shown `active` (the sender writes that status
            # after the handshake: 100 updates the matcher then follows), so that the
            # admissions do not share the workers with that start.
            while time.monotonic() < deadline:
                counted = await http.get(
                    "/Subscription", params={"status": "active", "_summary": "count"}
                )
                if counted.json().get("total", 0) >= len(patients):
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(2)

            committed_wall: dict[str, float] = {}
            retried: list[int] = []
            failed: list[str] = []
            per_bundle = args.bundle
            interval = per_bundle / args.rate
            started = time.monotonic()

            # The Bundles go through aiohttp: httpx's pool, with the many connections a slow
            # server leaves open, cost the harness milliseconds of CPU per Bundle, so that
            # it read the answers (the lag's start) late.
            ingest = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=2.0),
                timeout=aiohttp.ClientTimeout(total=120),
            )
            headers = {"Content-Type": "application/fhir+json"}

            async def send(at: float) -> None:
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                bundle = admission_bundle([rng.choice(patients) for _ in range(per_bundle)])
                body = json.dumps(bundle).encode()
                status, answer = None, None
                for attempt in range(5):
                    try:
                        async with ingest.post(
                            f"{server.base_url}/", data=body, headers=headers
                        ) as response:
                            status, answer = response.status, await response.read()
                    except TimeoutError:
                        failed.append("timeout")  # may have committed: not counted
                        return
                    except aiohttp.ClientConnectionError:
                        # The connection dropped before an answer (a loaded machine): sent
                        # again; if the first did commit, its admissions are not counted.
                        retried.append(attempt)
                        continue
                    if status != 503:
                        break
                    retried.append(attempt)  # the server's pool busy: nothing written
                    await asyncio.sleep(0.5)
                wall = time.time()
                if status is None or answer is None or status >= 300:
                    failed.append(str(status or "dropped"))
                    return
                for entry in json.loads(answer)["entry"]:
                    location = entry["response"]["location"]
                    focus = "/".join(location.split("/")[:2])
                    committed_wall[focus] = wall

            bundles = int(args.seconds * args.rate / per_bundle)
            backlog = Backlog(server.database_url, committed_wall)
            sampling = asyncio.create_task(backlog.run(stop_sampling))
            cpu_start = _cpus(server, subscriber)
            spies = []
            if args.profile:
                spies = _profile(server, Path(args.profile), args.seconds + 10)
            try:
                await asyncio.gather(*(send(started + i * interval) for i in range(bundles)))
            finally:
                await ingest.close()
            elapsed = time.monotonic() - started
            ingest_end = time.monotonic()
            cpu_ingest = _cpus(server, subscriber)
            deadline = time.monotonic() + 60
            while (await http.get(f"{receiver}/count")).json()["foci"] < len(committed_wall):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            caught_up = time.monotonic() - ingest_end
            cpu_end = _cpus(server, subscriber)
            sent_at = await _sent_at(server.database_url)
            received = (await http.get(f"{receiver}/arrivals")).json()
            arrived: dict[str, float] = received["arrived"]
            occurred: dict[str, float] = received["occurred"]
            for spy in spies:
                spy.wait()
    finally:
        stop_sampling.set()
        if sampling is not None:
            await asyncio.gather(sampling, return_exceptions=True)
        server.stop()
        subscriber.terminate()
        subscriber.wait(timeout=10)
        if not args.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)
    # The lag in two: commit -> the send that delivered it started (matcher and the
    # sender's queue), and that start -> arrival (building, posting, the subscriber).
    waits = sorted(sent_at[k] - committed_wall[k] for k in committed_wall if k in sent_at)
    posts = sorted(arrived[k] - sent_at[k] for k in committed_wall if k in sent_at and k in arrived)
    lags = sorted(arrived[k] - committed_wall[k] for k in committed_wall if k in arrived)
    # From the change's own time (its transaction's start, in the notification): on a loaded
    # machine the harness reads the answers to its Bundles late, sometimes after the
    # notification arrived, which makes the lag from the answer small or negative.
    written = sorted(arrived[k] - occurred[k] for k in committed_wall if k in occurred)
    quantiles = statistics.quantiles(lags, n=100) if len(lags) > 1 else lags * 99
    return {
        "subscriptions": args.subscriptions,
        "rate_target": args.rate,
        "rate_achieved": round(len(committed_wall) / elapsed, 1),
        "admissions": len(committed_wall),
        "notified": len(lags),
        "notification_events": received["notifications"],
        "lag_p50_s": round(quantiles[49], 3),
        "lag_p99_s": round(quantiles[98], 3),
        "lag_max_s": round(lags[-1], 3) if lags else None,
        "lag_from_write_p50_p99_s": _p50_p99(written),
        "lag_from_write_max_s": round(written[-1], 3) if written else None,
        "commit_to_send_p50_p99_s": _p50_p99(waits),
        "send_to_arrival_p50_p99_s": _p50_p99(posts),
        "background": args.background,
        "bundles_sent_again": len(retried),
        "bundles_failed": len(failed),
        "catch_up_s": round(caught_up, 1),
        **backlog.summary(ingest_end),
        "cpu_s_ingest": {k: round(cpu_ingest[k] - cpu_start[k], 1) for k in cpu_start},
        "cpu_s_catch_up": {k: round(cpu_end[k] - cpu_ingest[k], 1) for k in cpu_start},
        "load_average": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.subscriptions", description=__doc__)
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument("--rate", type=float, default=500, help="resources/s ingested")
    parser.add_argument("--bundle", type=int, default=25, help="admissions per Bundle")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--workers", type=int, default=1, help="cmfhir serve --workers")
    parser.add_argument(
        "--background",
        choices=("apart", "split", "in"),
        default="apart",
        help="the background workers in a `cmfhir worker` beside the server, in two "
        "(split: `--only gaps,exchange,housekeeping` and `--only subscriptions`), or in it",
    )
    parser.add_argument(
        "--profile", default=None, help="directory for py-spy profiles of the worker processes"
    )
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

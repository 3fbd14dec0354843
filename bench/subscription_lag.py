"""Where a notification's lag goes, in one process:
`python -m bench.subscription_lag [--subscriptions 100] [--rate 100] [--seconds 20]`.

Runs the subscription matcher (an outbox consumer woken by NOTIFY) and the sender as
`cmfhir serve` runs them, in the process that writes, on a scratch database of the tests'
embedded PostgreSQL (.data/test), with a loopback rest-hook subscriber (aiohttp) in the same
process and `--subscriptions` Subscriptions each filtered to one member (as
bench/subscriptions.py). Writes transaction Bundles of `--bundle` admissions at `--rate`
admissions/s for `--seconds` (`process_bundle`, what the HTTP route calls) and stamps each:

- `outbox_wait`: its Bundle committed → the matcher starts handling it (the NOTIFY, the
  matcher busy with an earlier batch, the outbox read);
- `matching`: → its notification numbered (the matcher's transaction committed);
- `queueing`: → the sender's round that leased its Subscription returned (the NOTIFY, the
  sender busy with an earlier round's sends);
- `sending`: → its POST started (building the Bundle);
- `http`: → its arrival at the subscriber.

Reports p50/p99/max of each and of the whole (commit → arrival), the sender's rounds,
the CPU seconds of this process and of PostgreSQL, and the load average. The gap engine
does not run here (under `cmfhir serve` it shares the process). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from aiohttp import web

from bench.scratch import admin_url, create_database, drop_database, postgres_cpu
from bench.subscriptions import _subscription, admission_bundle
from cmfhir.app import open_context
from cmfhir.auth.principal import OPEN, TRUSTED
from cmfhir.config import Settings
from cmfhir.interactions import FhirContext, create, process_bundle
from cmfhir.store import Event
from cmfhir.store import consumers as positions
from cmfhir.subscriptions import SUBSCRIPTION_CHANNEL, SubscriptionMatcher, SubscriptionSender
from cmfhir.workers import OutboxConsumer

STAGES = ("outbox_wait", "matching", "queueing", "sending", "http")


class Stamps:
    def __init__(self) -> None:
        self.at: dict[str, dict[str, float]] = {}

    def mark(self, focus: str, stage: str) -> None:
        self.at.setdefault(focus, {}).setdefault(stage, time.monotonic())


def _foci(bundle: dict[str, Any]) -> list[str]:
    return [
        part["valueReference"]["reference"]
        for p in bundle["entry"][0]["resource"]["parameter"]
        if p["name"] == "notification-event"
        for part in p["part"]
        if part["name"] == "focus"
    ]


def _instrument(consumer: OutboxConsumer, sender: SubscriptionSender, stamps: Stamps) -> None:
    matcher = consumer.handler
    handle, step, post = matcher.handle, consumer.step, sender._post
    batch: list[str] = []

    async def handling(repo: Any, events: Sequence[Event]) -> None:
        for e in events:
            if e.resource_type == "Encounter":
                stamps.mark(f"Encounter/{e.id}", "picked")
                batch.append(f"Encounter/{e.id}")
        await handle(repo, events)

    async def stepping() -> tuple[int, bool]:
        batch.clear()
        result = await step()
        for focus in batch:
            stamps.mark(focus, "numbered")
        return result

    async def posting(loaded: Any, bundle: dict[str, Any]) -> tuple[int | None, str | None]:
        foci = _foci(bundle)
        for focus in foci:
            stamps.mark(focus, "claimed")  # the round returned just before the post starts
        await asyncio.sleep(0)
        for focus in foci:
            stamps.mark(focus, "posted")
        return await post(loaded, bundle)

    matcher.handle = handling  # type: ignore[method-assign]
    consumer.step = stepping  # type: ignore[method-assign]
    sender._post = posting  # type: ignore[method-assign]


async def _id(ctx: FhirContext, resource: dict[str, Any]) -> str:
    result = await create(ctx, resource["resourceType"], resource)
    assert result.status == 201 and result.id is not None, result.body
    return result.id


def _quantiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=100) if len(ordered) > 1 else ordered * 99
    return {
        "n": len(ordered),
        "p50_ms": round(q[49] * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


async def _run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    stamps = Stamps()
    arrived: dict[str, float] = {}

    async def receive(request: web.Request) -> web.Response:
        bundle = await request.json()
        now = time.monotonic()
        for focus in _foci(bundle):
            arrived.setdefault(focus, now)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/notify", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    endpoint = f"http://127.0.0.1:{port}/notify"
    settings = Settings(database_url=url, workers=False, subscription_allow_loopback=True)
    result: dict[str, Any] = {"load_at_start": os.getloadavg()}
    async with open_context(settings) as ctx:
        admin = replace(ctx, principal=TRUSTED)
        assert ctx.subscriptions is not None
        listener = positions.Listener(ctx.store.engine)
        matcher = SubscriptionMatcher(ctx, ctx.subscriptions)
        consumer = OutboxConsumer(
            ctx.store,
            matcher,
            listener.subscribe(positions.EVENT_CHANNEL),
            batch=args.matcher_batch,
            poll=0.5,
        )
        sender = SubscriptionSender(
            ctx, ctx.subscriptions, listener.subscribe(SUBSCRIPTION_CHANNEL)
        )
        _instrument(consumer, sender, stamps)
        stop = asyncio.Event()
        workers = [asyncio.create_task(w.run(stop)) for w in (listener, consumer, sender)]
        try:
            patients = [
                await _id(admin, {"resourceType": "Patient"}) for _ in range(args.subscriptions)
            ]
            for patient in patients:
                await _id(replace(ctx, principal=OPEN), _subscription(endpoint, patient))
            deadline = time.monotonic() + 120
            # The handshakes.
            while sender.work["sent"] < args.subscriptions and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            rng = random.Random(args.seed)
            committed: dict[str, float] = {}
            interval = args.bundle / args.rate
            bundles = int(args.seconds * args.rate / args.bundle)
            sender.work.clear()
            cpu, pg, started = time.process_time(), postgres_cpu(admin_url()), time.monotonic()

            async def write(at: float) -> None:
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                chosen = [rng.choice(patients) for _ in range(args.bundle)]
                answer = await process_bundle(admin, admission_bundle(chosen), base="")
                done = time.monotonic()
                assert answer.status == 200, answer.body
                for entry in answer.body["entry"]:
                    committed["/".join(entry["response"]["location"].split("/")[:2])] = done

            await asyncio.gather(*(write(started + i * interval) for i in range(bundles)))
            elapsed = time.monotonic() - started
            deadline = time.monotonic() + 120
            while len(set(committed) & set(arrived)) < len(committed):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            cpu, pg = time.process_time() - cpu, postgres_cpu(admin_url()) - pg
        finally:
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)
    await runner.cleanup()
    steps: dict[str, list[float]] = {stage: [] for stage in STAGES}
    total = []
    order = ("commit", "picked", "numbered", "claimed", "posted", "arrived")
    for focus, at in committed.items():
        marks = {"commit": at, **stamps.at.get(focus, {})}
        if focus in arrived:
            marks["arrived"] = arrived[focus]
            total.append(arrived[focus] - at)
        for stage, (a, b) in zip(STAGES, itertools.pairwise(order), strict=True):
            if a in marks and b in marks:
                steps[stage].append(marks[b] - marks[a])
    result |= {
        "subscriptions": args.subscriptions,
        "matcher_batch": args.matcher_batch,
        "admissions": len(committed),
        "rate_target": args.rate,
        "rate_achieved": round(len(committed) / elapsed, 1),
        "notified": len(total),
        "lag": _quantiles(total),
        "stages": {stage: _quantiles(values) for stage, values in steps.items()},
        "sender": dict(sender.work),
        "process_cpu_s": round(cpu, 2),
        "postgres_cpu_s": round(pg, 2),
        "load_at_end": os.getloadavg(),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.subscription_lag", description=__doc__)
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument("--rate", type=float, default=100, help="admissions/s written")
    parser.add_argument("--bundle", type=int, default=25, help="admissions per Bundle")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--matcher-batch", type=int, default=1000, help="events per matcher transaction"
    )
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)
    url = args.database_url
    scratch = None
    if url is None:
        url = scratch = asyncio.run(create_database(admin_url(), "bench_sublag"))
    try:
        result = asyncio.run(_run(args, url))
    finally:
        if scratch is not None:
            asyncio.run(drop_database(admin_url(), scratch))
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

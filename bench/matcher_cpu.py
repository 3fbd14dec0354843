"""CPU of the subscription matcher per event, in one process, A against B interleaved:
`python -m bench.matcher_cpu [--subscriptions 100] [--events 500] [--ref main]`.

A is the matcher of git ref `--ref` (loaded from `git show`), B the checkout's. Both handle
the same outbox events, in batches of `--bundle` (one ingest transaction Bundle each), in
transactions rolled back afterwards, so each round starts from the same state. Scenarios:

- `members`: `--subscriptions` Subscriptions to the admission/discharge topic by a client
  that sees everything, each filtered to one member (`Encounter?patient=Patient/N`, what
  bench/subscriptions.py runs); admissions of those members.
- `care-managers`: `--subscriptions` Subscriptions to the same topic without filters, each
  by a care manager (a SMART user: only their members visible), as the care-team console
  makes them; the same admissions.
- `sender` (not A/B): the `members` notifications sent, CPU per send, cProfile on stderr.
- `sender-ab`: the sender of `--ref` against this checkout's, interleaved, one notification
  for each `members` Subscription per round: CPU (Python and PostgreSQL), database round
  trips and wall time per notification; posted to a mock transport, or with
  `--real-endpoint` through each sender's own HTTP client to a receiver process.

Reports per scenario and side: Python CPU per event (`time.process_time`, the matcher's own
process; PostgreSQL's CPU is not in it), the searches run, and the wall time per event.
Uses a scratch database in the tests' embedded PostgreSQL (.data/test) unless
`--database-url` names one. Not part of the test suite; figures in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.round_trips import round_trips
from bench.scratch import admin_url, create_database, drop_database, postgres_cpu
from bench.server import free_port
from bench.subscriptions import admission_bundle, start_subscriber
from cmfhir.app import open_context
from cmfhir.auth.principal import OPEN, TRUSTED, Principal
from cmfhir.config import Settings
from cmfhir.interactions import FhirContext, create, process_bundle
from cmfhir.store import Event, SubscriptionRows
from cmfhir.store import consumers as positions
from cmfhir.store.outbox import START
from cmfhir.subscriptions.matcher import CONSUMER, SubscriptionMatcher
from cmfhir.subscriptions.sender import SubscriptionSender
from cmfhir.workers import OutboxConsumer

ROOT = Path(__file__).resolve().parents[1]
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "https://cmfhir.org/fhir/SubscriptionTopic/encounter-admission-discharge"


class _Rollback(Exception):
    pass


def _old_matcher(ref: str) -> tuple[type[Any], types.ModuleType]:
    """The matcher class of `ref`, and its matching module (to count its searches)."""

    def source(path: str) -> str:
        return subprocess.check_output(["git", "show", f"{ref}:{path}"], cwd=ROOT, text=True)

    matching = types.ModuleType("bench_old_matching")
    sys.modules[matching.__name__] = matching
    exec(
        compile(source("src/cmfhir/subscriptions/matching.py"), "old_matching", "exec"),
        matching.__dict__,
    )
    matcher = types.ModuleType("bench_old_matcher")
    sys.modules[matcher.__name__] = matcher
    text = source("src/cmfhir/subscriptions/matcher.py").replace(
        "from cmfhir.subscriptions.matching import", "from bench_old_matching import"
    )
    exec(compile(text, "old_matcher", "exec"), matcher.__dict__)
    return matcher.SubscriptionMatcher, matching


def _old_sender(ref: str) -> type[Any]:
    """The sender class of `ref`, with that ref's delivery rows and notification events."""

    def source(path: str) -> str:
        return subprocess.check_output(["git", "show", f"{ref}:{path}"], cwd=ROOT, text=True)

    def module(name: str, text: str) -> types.ModuleType:
        made = types.ModuleType(name)
        sys.modules[name] = made
        exec(compile(text, name, "exec"), made.__dict__)
        return made

    module("bench_old_rows", source("src/cmfhir/store/subscriptions.py"))
    rows = "from bench_old_rows import SubscriptionRows"
    events = source("src/cmfhir/subscriptions/events.py").replace(
        "from cmfhir.store import Repository, SubscriptionRows",
        f"from cmfhir.store import Repository\n{rows}",
    )
    module("bench_old_events", events)
    sender = (
        source("src/cmfhir/subscriptions/sender.py")
        .replace(
            "from cmfhir.store import Repository, SubscriptionRows",
            f"from cmfhir.store import Repository\n{rows}",
        )
        .replace("from cmfhir.store.subscriptions import", "from bench_old_rows import")
        .replace("from cmfhir.subscriptions.events import", "from bench_old_events import")
    )
    return module("bench_old_sender", sender).SubscriptionSender  # type: ignore[no-any-return]


def _subscription(
    filters: Sequence[str], endpoint: str = "http://127.0.0.1:9/notify"
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": "active",
        "reason": "bench",
        "criteria": TOPIC,
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
    if filters:
        body["_criteria"] = {
            "extension": [
                {"url": BACKPORT + "backport-filter-criteria", "valueString": f} for f in filters
            ]
        }
    return body


async def _id(ctx: FhirContext, resource: dict[str, Any]) -> str:
    result = await create(ctx, resource["resourceType"], resource)
    assert result.status == 201 and result.id is not None, result.body
    return result.id


async def _setup(
    ctx: FhirContext, args: argparse.Namespace, scenario: str
) -> tuple[list[str], list[Event]]:
    """The scenario's Subscriptions (ids) and admissions (events)."""
    admin = replace(ctx, principal=TRUSTED)
    patients = [await _id(admin, {"resourceType": "Patient"}) for _ in range(args.subscriptions)]
    subscriptions = []
    for patient in patients:
        if scenario == "members":
            subscriptions.append(
                await _id(
                    replace(ctx, principal=OPEN),
                    _subscription([f"Encounter?patient=Patient/{patient}"], args.endpoint),
                )
            )
        else:
            manager = await _id(admin, {"resourceType": "Practitioner"})
            user = Principal(
                "user",
                client_id="bench",
                fhir_user=f"Practitioner/{manager}",
                scopes=("user/Encounter.rs", "user/Subscription.cruds"),
            )
            made = _subscription([], args.endpoint)
            subscriptions.append(await _id(replace(ctx, principal=user), made))
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        _, before = await repo.read_events(START, 1_000_000)
    written = 0
    for start in range(0, args.events, args.bundle):
        chosen = [patients[(start + n) % len(patients)] for n in range(args.bundle)]
        await process_bundle(admin, admission_bundle(chosen), base="")
        written += len(chosen)
    while True:  # gap-free: wait for older transactions (of the whole cluster) to end
        async with ctx.store.transaction(principal=TRUSTED) as repo:
            events, _ = await repo.read_events(before, 1_000_000)
        admissions = [e for e in events if e.resource_type == "Encounter"]
        if len(admissions) >= written:
            return subscriptions, admissions
        await asyncio.sleep(0.2)


async def _round(ctx: FhirContext, matcher: Any, events: list[Event], bundle: int) -> float:
    """Every batch handled and rolled back; wall seconds."""
    started = time.perf_counter()
    for start in range(0, len(events), bundle):
        try:
            async with ctx.store.transaction(principal=TRUSTED) as repo:
                matcher._after = (await positions.positions(repo)).get(CONSUMER)
                await matcher.handle(repo, events[start : start + bundle])
                raise _Rollback
        except _Rollback:
            pass
    return time.perf_counter() - started


async def _scenario(
    ctx: FhirContext, args: argparse.Namespace, scenario: str, old: type[Any], old_matching: Any
) -> dict[str, Any]:
    subscriptions, events = await _setup(ctx, args, scenario)
    searches = {"A": 0}
    visible = old_matching.visible

    async def counted(*a: Any, **k: Any) -> bool:
        searches["A"] += 1
        return bool(await visible(*a, **k))

    old_matching.visible = counted
    sides: dict[str, Any] = {}
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        await positions.register(repo, CONSUMER, from_start=False)
    for name, cls in (("A", old), ("B", SubscriptionMatcher)):
        matcher = cls(ctx, ctx.subscriptions)
        async with ctx.store.transaction(principal=TRUSTED) as repo:
            for sid in subscriptions:
                matcher._subscriptions[sid] = await ctx.subscriptions.load(repo, sid)
        sides[name] = matcher
    cpu: dict[str, list[float]] = {"A": [], "B": []}
    wall: dict[str, list[float]] = {"A": [], "B": []}
    counts: dict[str, int] = {}
    for _ in range(args.rounds):
        for name in ("A", "B"):
            matcher = sides[name]
            searches["A"] = 0
            matcher_work = getattr(matcher, "work", None)
            if matcher_work is not None:
                matcher_work.clear()
            before = time.process_time()
            seconds = await _round(ctx, matcher, events, args.bundle)
            cpu[name].append((time.process_time() - before) / len(events))
            wall[name].append(seconds / len(events))
            counts[name] = searches["A"] if name == "A" else matcher_work["searches"]
            if matcher_work is not None:
                counts["B_checked"] = matcher_work["checked"]
    old_matching.visible = visible
    return {
        "scenario": scenario,
        "subscriptions": args.subscriptions,
        "events": len(events),
        "cpu_ms_per_event": {k: round(statistics.median(v) * 1000, 3) for k, v in cpu.items()},
        "wall_ms_per_event": {k: round(statistics.median(v) * 1000, 3) for k, v in wall.items()},
        "searches_per_round": {"A": counts["A"], "B": counts["B"]},
        "B_subscriptions_checked_per_event": round(counts["B_checked"] / len(events), 2),
    }


async def _sender(ctx: FhirContext, args: argparse.Namespace) -> dict[str, Any]:
    """The sender's CPU per notification (this checkout only), with a cProfile of it on
    stderr: the `members` Subscriptions made active, their admissions numbered (committed),
    then sent to an endpoint that answers 200 at once (an httpx mock transport: no sockets,
    so what is measured is the sender and its queries)."""
    subscriptions, events = await _setup(ctx, args, "members")
    matcher = SubscriptionMatcher(ctx, ctx.subscriptions)
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        await positions.register(repo, CONSUMER, from_start=False)
        for sid in subscriptions:
            matcher._subscriptions[sid] = await ctx.subscriptions.load(repo, sid)
            loaded = matcher._subscriptions[sid]
            assert loaded is not None
            await SubscriptionRows(repo.conn).sync(
                sid, topic=TOPIC, channel="rest-hook", status="active", heartbeat_s=None,
                now=datetime.now(UTC),
            )  # fmt: skip
    for start in range(0, len(events), args.bundle):
        async with ctx.store.transaction(principal=TRUSTED) as repo:
            matcher._after = (await positions.positions(repo)).get(CONSUMER)
            await matcher.handle(repo, events[start : start + args.bundle])
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    sender = SubscriptionSender(ctx, ctx.subscriptions, transport=transport)
    profile = cProfile.Profile()
    before = time.process_time()
    started = time.perf_counter()
    profile.enable()
    steps = 0
    while served := await sender.send_once():
        steps += served
    profile.disable()
    cpu = time.process_time() - before
    wall = time.perf_counter() - started
    await sender.aclose()
    pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
    return {
        "scenario": "sender",
        "subscriptions": len(subscriptions),
        "notifications": len(events),
        "sends": steps,
        "cpu_ms_per_send": round(cpu / max(steps, 1) * 1000, 3),
        "cpu_ms_per_notification": round(cpu / len(events) * 1000, 3),
        "wall_ms_per_send": round(wall / max(steps, 1) * 1000, 3),
    }


async def _sender_ab(ctx: FhirContext, args: argparse.Namespace, url: str) -> dict[str, Any]:
    """The sender, A (`--ref`) against B (this checkout), interleaved: each round numbers
    one admission for each of the `members` Subscriptions (committed), then one side sends
    them all to an endpoint answering 200 at once (an httpx mock transport). Per
    notification: Python CPU, PostgreSQL CPU, database round trips (bench/round_trips.py),
    wall time."""
    subscriptions, _ = await _setup(
        ctx, argparse.Namespace(**{**vars(args), "events": 0}), "members"
    )
    admin = replace(ctx, principal=TRUSTED)
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        await positions.register(repo, CONSUMER, from_start=False)
        for sid in subscriptions:
            await SubscriptionRows(repo.conn).sync(
                sid, topic=TOPIC, channel="rest-hook", status="active", heartbeat_s=None,
                now=datetime.now(UTC),
            )  # fmt: skip
    patients = []
    async with ctx.store.transaction(read_only=True, principal=TRUSTED) as repo:
        for sid in subscriptions:
            loaded = await ctx.subscriptions.load(repo, sid)
            patients.append(loaded.config.filters[0][1][0][1].rpartition("/")[2])
    consumer = OutboxConsumer(ctx.store, SubscriptionMatcher(ctx, ctx.subscriptions))
    await consumer.drain()
    # A mock transport answering 200 at once, or (--real-endpoint) none: each side's own
    # HTTP client posts to the receiver process on loopback.
    transport: httpx.AsyncBaseTransport | None = None
    if not args.real_endpoint:
        transport = httpx.MockTransport(lambda request: httpx.Response(200))
    sides = {
        "A": _old_sender(args.ref)(ctx, ctx.subscriptions, transport=transport),
        "B": SubscriptionSender(ctx, ctx.subscriptions, transport=transport),
    }
    figures: dict[str, dict[str, list[float]]] = {
        k: {"cpu": [], "pg": [], "trips": [], "wall": []} for k in sides
    }
    admin_pg = admin_url() if args.database_url is None else None
    for _ in range(args.rounds):
        for name, sender in sides.items():
            for start in range(0, len(patients), args.bundle):
                bundle = admission_bundle(patients[start : start + args.bundle])
                await process_bundle(admin, bundle, base="")
            while await consumer.drain() == 0:  # noqa: ASYNC110 (older transactions to end)
                await asyncio.sleep(0.05)
            pg = postgres_cpu(admin_pg) if admin_pg else 0.0
            cpu, wall = time.process_time(), time.perf_counter()
            async with round_trips(ctx.store.engine) as counted:
                while await sender.send_once():
                    pass
            n = len(patients)
            figures[name]["cpu"].append((time.process_time() - cpu) / n)
            figures[name]["wall"].append((time.perf_counter() - wall) / n)
            figures[name]["trips"].append(counted.count / n)
            if admin_pg:
                figures[name]["pg"].append((postgres_cpu(admin_pg) - pg) / n)
    for sender in sides.values():
        await sender.aclose()

    def median(values: list[float], scale: float = 1000.0) -> float | None:
        return round(statistics.median(values) * scale, 3) if values else None

    return {
        "scenario": "sender-ab",
        "subscriptions": len(subscriptions),
        "notifications_per_round": len(patients),
        "rounds": args.rounds,
        "endpoint": "receiver process on loopback" if args.real_endpoint else "mock transport",
        "cpu_ms_per_notification": {k: median(v["cpu"]) for k, v in figures.items()},
        "postgres_cpu_ms_per_notification": {k: median(v["pg"]) for k, v in figures.items()},
        "round_trips_per_notification": {k: median(v["trips"], 1.0) for k, v in figures.items()},
        "wall_ms_per_notification": {k: median(v["wall"]) for k, v in figures.items()},
    }


async def _run(args: argparse.Namespace, url: str) -> list[dict[str, Any]]:
    old, old_matching = _old_matcher(args.ref)
    settings = Settings(database_url=url, workers=False, subscription_allow_loopback=True)
    results = []
    async with open_context(settings) as ctx:
        for scenario in args.scenarios.split(","):
            if scenario == "sender":
                results.append(await _sender(ctx, args))
            elif scenario == "sender-ab":
                results.append(await _sender_ab(ctx, args, url))
            else:
                results.append(await _scenario(ctx, args, scenario, old, old_matching))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.matcher_cpu", description=__doc__)
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--bundle", type=int, default=25, help="events per batch")
    parser.add_argument("--rounds", type=int, default=3, help="A then B, this many times")
    parser.add_argument("--ref", default="main", help="git ref of side A")
    parser.add_argument("--scenarios", default="members,care-managers")
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--real-endpoint",
        action="store_true",
        help="sender-ab: post to a receiver process on loopback (bench/subscription_receiver.py)"
        " through each sender's own HTTP client, not to a mock transport",
    )
    args = parser.parse_args(argv)
    args.endpoint = "http://127.0.0.1:9/notify"
    receiver = None
    if args.real_endpoint:
        port = free_port()
        receiver = start_subscriber(port)
        args.endpoint = f"http://127.0.0.1:{port}/notify"
    url = args.database_url
    scratch = None
    if url is None:
        url = scratch = asyncio.run(create_database(admin_url(), "bench_matcher"))
    try:
        results = asyncio.run(_run(args, url))
    finally:
        if scratch is not None:
            asyncio.run(drop_database(admin_url(), scratch))
        if receiver is not None:
            receiver.terminate()
            receiver.wait(timeout=10)
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

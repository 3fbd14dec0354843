"""`python -m bench.gap_lag`: where the time goes between a commit and its DetectedIssue, hop
by hop, in one process (no HTTP, no server): the outbox listener, the gap feed and
`--evaluators` evaluators run as `cmfhir serve` runs them, with the rules of `--rules`
(default `bench.gap_probe`: one gap per member citing its latest Encounter).

A probe writes a finished Encounter for its member `--probes` times (one transaction each)
and stamps, from its commit: the gap feed handling its event (`fed`), an evaluator
taking the member (`claimed`), the evaluation committed (`written`). With `--load-members`
members of the caseload are ingested meanwhile in the same process (`--load-clients`
transactions at a time), as a server's own requests share its event loop with its
workers; with `--load-apart` in a process of their own (as with `cmfhir serve
--no-workers` beside `cmfhir worker`). Figures are wall-clock on whatever else the
machine runs: compare the hops, not the totals, across machines. Each hop's `first_ms` is
the first probe's (the engine's first evaluation of a change); `--cold` skips the engine's
warm-up (`GapEngine.warm_up`) to measure what it saves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import text

from bench.caseload import make_staff, member_bundles, staff_bundle
from bench.scratch import admin_url, create_database, drop_database
from cmfhir.app import open_context
from cmfhir.auth.principal import TRUSTED
from cmfhir.config import Settings
from cmfhir.gaps.engine import GapEngine, GapEvaluator, GapFeed
from cmfhir.gaps.ruleset import load_ruleset
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.create import create_in
from cmfhir.interactions.transaction import process_bundle
from cmfhir.store import Event, Repository, consumers, gap_queue
from cmfhir.workers import OutboxConsumer, Worker, run_workers

Marks = dict[str, list[float]]


class _TracedFeed(GapFeed):
    def __init__(self, ruleset: Any, member: list[str], marks: Marks) -> None:
        super().__init__(ruleset)
        self._member, self._marks = member, marks

    async def handle(self, repo: Repository, events: Sequence[Event]) -> None:
        await super().handle(repo, events)
        if any(e.patient_id in self._member and e.resource_type == "Encounter" for e in events):
            self._marks["fed"].append(time.perf_counter())


class _TracedEngine(GapEngine):
    def __init__(
        self, *args: Any, member: list[str], marks: Marks, cold: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._member, self._marks, self._cold = member, marks, cold

    def warm_up(self) -> None:
        if not self._cold:  # --cold: as before the engine warmed up (A/B)
            super().warm_up()

    async def _evaluate(self, members: Sequence[gap_queue.Claimed]) -> None:
        mine = any(m[0] in self._member for m in members)
        if mine:
            self._marks["claimed"].append(time.perf_counter())
            self._marks["batch"].append(len(members))
        await super()._evaluate(members)
        if mine:
            self._marks["written"].append(time.perf_counter())


def _encounter(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient}"},
        "period": {"start": "2026-11-01T10:00:00Z", "end": "2026-11-01T11:00:00Z"},
    }


async def _ingest(ctx: FhirContext, members: int, clients: int, stop: asyncio.Event) -> int:
    staff = make_staff(members)
    await process_bundle(ctx, staff_bundle(staff), base="http://bench/fhir")
    bundles = iter(member_bundles(int(time.time()), members, staff))
    done = 0

    async def client() -> None:
        nonlocal done
        for bundle in bundles:
            if stop.is_set():
                return
            await process_bundle(ctx, bundle, base="http://bench/fhir", representation=False)
            done += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return done


async def _patients(ctx: FhirContext) -> int:
    async with ctx.store.transaction(read_only=True, principal=TRUSTED) as repo:
        found = await repo.conn.execute(
            text("SELECT count(*) FROM resource WHERE resource_type = 'Patient'")
        )
        return int(found.scalar_one())


def _ingest_apart(url: str, members: int, clients: int) -> None:
    async def run() -> None:
        async with open_context(Settings(database_url=url)) as opened:
            await _ingest(replace(opened, principal=TRUSTED), members, clients, asyncio.Event())

    asyncio.run(run())


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"first_ms": None, "p50_ms": None, "max_ms": None}
    ordered = sorted(values)
    return {
        "first_ms": round(values[0] * 1000, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


async def _probe(ctx: FhirContext, args: argparse.Namespace) -> dict[str, Any]:
    ruleset = load_ruleset(Settings().profiles_dir, args.rules)
    member: list[str] = []
    marks: Marks = {"fed": [], "claimed": [], "written": [], "batch": []}
    listener = consumers.Listener(ctx.store.engine)
    engine = _TracedEngine(
        ctx, ruleset, member=member, marks=marks, batch=args.batch, cold=args.cold
    )
    workers: list[Worker] = [
        listener,
        OutboxConsumer(
            ctx.store,
            _TracedFeed(ruleset, member, marks),
            listener.subscribe(consumers.EVENT_CHANNEL),
        ),
        *(
            GapEvaluator(engine, listener.subscribe(gap_queue.GAP_CHANNEL), index=n)
            for n in range(args.evaluators)
        ),
    ]
    stop = asyncio.Event()
    running = asyncio.create_task(run_workers(workers, stop))
    loading = stop_loading = None
    try:
        async with ctx.store.transaction(principal=TRUSTED) as repo:
            created, _ = await create_in(ctx, repo, {"resourceType": "Patient"})
        member.append(created.id)
        await asyncio.sleep(2)
        apart = None
        if args.load_members and args.load_apart:
            url = ctx.store.engine.url.render_as_string(hide_password=False)
            apart = multiprocessing.get_context("spawn").Process(
                target=_ingest_apart, args=(url, args.load_members, args.load_clients)
            )
            apart.start()
            while await _patients(ctx) < 3 and apart.is_alive():  # noqa: ASYNC110
                await asyncio.sleep(0.5)
        elif args.load_members:
            stop_loading = asyncio.Event()
            loading = asyncio.create_task(
                _ingest(ctx, args.load_members, args.load_clients, stop_loading)
            )
            await asyncio.sleep(1)
        hops: dict[str, list[float]] = {"fed": [], "claimed": [], "written": []}
        for _ in range(args.probes):
            for found in marks.values():
                found.clear()
            async with ctx.store.transaction(principal=TRUSTED) as repo:
                await create_in(ctx, repo, _encounter(member[0]))
            committed = time.perf_counter()
            deadline = committed + 60
            while not marks["written"] and time.perf_counter() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.002)
            for hop in hops:
                if marks[hop]:
                    hops[hop].append(marks[hop][0] - committed)
            await asyncio.sleep(args.interval)
        ingested: Any = None
        if apart is not None:
            ingested = await _patients(ctx) - 1  # less the probe member
            apart.terminate()
            apart.join()
        if loading is not None and stop_loading is not None:
            stop_loading.set()
            ingested = await loading
        return {
            "probes": args.probes,
            "evaluators": args.evaluators,
            "batch": args.batch,
            "load_members_ingested": ingested,
            "load_apart": args.load_apart,
            **{f"commit_to_{hop}": _quantiles(values) for hop, values in hops.items()},
            "evaluations": engine.evaluations,
            "cold": args.cold,
        }
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 20)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    url = await create_database(admin_url(), "cmfhir_gaplag")
    try:
        async with open_context(Settings(database_url=url)) as opened:
            return await _probe(replace(opened, principal=TRUSTED), args)
    finally:
        await drop_database(admin_url(), url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gap_lag", description=__doc__)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.3)
    parser.add_argument("--evaluators", type=int, default=2)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--load-members", type=int, default=0)
    parser.add_argument("--load-clients", type=int, default=4)
    parser.add_argument("--load-apart", action="store_true", help="ingest in another process")
    parser.add_argument("--rules", default="bench.gap_probe")
    parser.add_argument(
        "--cold", action="store_true", help="no warm-up: the first DetectedIssue loads its model"
    )
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(_run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

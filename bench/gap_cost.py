"""`python -m bench.gap_cost`: what a care-gap sweep costs per member, in one process, the
variants interleaved (A, B, A, B ...) so that the machine's load falls on both alike.

It loads `--members` members of the caseload (in-process transactions, no HTTP) into a
database of the worktree's embedded PostgreSQL (or `--database-url`), then sweeps them
`--rounds` times with each variant: every member queued, then evaluated by one engine with
`--concurrency` batches at a time. Per sweep: this process's CPU (`time.process_time`),
PostgreSQL's (its backends' CPU from /proc), wall time, members evaluated.

Variants: `after` (the engine as it is: only the types some rule reads, one row per
member) and `before` (the snapshot read of `main` at 6717347, copied below: every
resource of each member's compartment, one row each).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson
from sqlalchemy import text

from bench.caseload import make_staff, member_bundles, staff_bundle
from bench.scratch import admin_url, create_database, drop_database, postgres_cpu
from cmfhir.app import open_context
from cmfhir.auth.principal import TRUSTED
from cmfhir.config import Settings
from cmfhir.gaps import engine as engine_module
from cmfhir.gaps.engine import GapEngine
from cmfhir.gaps.model import MemberSnapshot
from cmfhir.gaps.ruleset import RuleSet, load_ruleset
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.transaction import process_bundle
from cmfhir.store import Repository, gap_queue

CURRENT = engine_module.read_snapshots  # type: ignore[attr-defined]


_OLD_REFERENCE = re.compile(
    r'"reference":\s*"(Practitioner|PractitionerRole|Organization|Location)/([A-Za-z0-9.\-]{1,64})"'
)


def _old_shared(content: str) -> set[tuple[str, str]]:
    return {(m.group(1), m.group(2)) for m in _OLD_REFERENCE.finditer(content)}


async def _old_compartments(repo: Repository, patient_ids: Sequence[str]) -> list[Any]:
    rows = await repo.conn.execute(
        text(
            "SELECT patient_id, resource_type, content::text FROM resource "
            "WHERE patient_id = ANY(CAST(:ids AS text[])) AND NOT deleted"
        ),
        {"ids": list(patient_ids)},
    )
    return [(r[0], r[1], r[2]) for r in rows]


async def old_read_snapshots(
    repo: Repository, patient_ids: Sequence[str], *_ignored: Any
) -> dict[str, MemberSnapshot]:
    """gaps/snapshot.py read_snapshots before the rules declared what they read."""
    own: dict[str, list[dict[str, Any]]] = {p: [] for p in patient_ids}
    texts: dict[str, list[str]] = {p: [] for p in patient_ids}
    for patient_id, _kind, content in await _old_compartments(repo, patient_ids):
        own[patient_id].append(orjson.loads(content))
        texts[patient_id].append(content)
    cites = {p: _old_shared("\n".join(found)) for p, found in texts.items()}
    shared: dict[tuple[str, str], dict[str, Any]] = {}
    further: dict[tuple[str, str], set[tuple[str, str]]] = {}
    wanted = set().union(*cites.values()) if cites else set()
    for _ in range(2):
        missing = sorted(wanted - shared.keys())
        if not missing:
            break
        for key, content in (await repo.read_many(missing)).items():
            shared[key] = orjson.loads(content)
            further[key] = _old_shared(content)
        wanted |= set().union(*(further[k] for k in missing if k in further))
    snapshots = {}
    for patient_id, resources in own.items():
        mine = set(cites[patient_id])
        for _ in range(2):
            mine |= set().union(*(further.get(k, set()) for k in mine))
        by_type: dict[str, list[dict[str, Any]]] = {}
        for resource in [*resources, *(shared[k] for k in sorted(mine) if k in shared)]:
            by_type.setdefault(resource["resourceType"], []).append(resource)
        snapshots[patient_id] = MemberSnapshot(patient_id, by_type)
    return snapshots


async def _load(ctx: FhirContext, members: int) -> None:
    staff = make_staff(members)
    await process_bundle(ctx, staff_bundle(staff), base="http://bench/fhir")
    for bundle in member_bundles(1, members, staff):
        await process_bundle(ctx, bundle, base="http://bench/fhir", representation=False)


async def _sweep(
    ctx: FhirContext, ruleset: RuleSet, concurrency: int, *, before: bool = False
) -> dict[str, float]:
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        await gap_queue.enqueue_all(repo, None)
    engine_module.read_snapshots = old_read_snapshots if before else CURRENT  # type: ignore[attr-defined,assignment]
    engine = GapEngine(ctx, ruleset)
    pg0, cpu0, wall0 = postgres_cpu(admin_url()), time.process_time(), time.perf_counter()
    evaluated = await engine.drain(concurrency=concurrency)
    pg1, cpu1, wall1 = postgres_cpu(admin_url()), time.process_time(), time.perf_counter()
    return {
        "members": evaluated,
        "python_ms_per_member": (cpu1 - cpu0) * 1000 / max(evaluated, 1),
        "postgres_ms_per_member": (pg1 - pg0) * 1000 / max(evaluated, 1),
        "members_per_s": evaluated / (wall1 - wall0),
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    url = args.database_url
    made = None
    if url is None:
        url = made = await create_database(admin_url(), "cmfhir_gapcost")
    try:
        settings = Settings(database_url=url)
        async with open_context(settings) as opened:
            ctx = replace(opened, principal=TRUSTED)
            if made is not None:
                await _load(ctx, args.members)
            ruleset = load_ruleset(settings.profiles_dir, args.rules)
            await _sweep(ctx, ruleset, args.concurrency)  # warm-up: gaps written once
            runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
            for _ in range(args.rounds):
                for name in runs:
                    found = await _sweep(ctx, ruleset, args.concurrency, before=name == "before")
                    runs[name].append(found)
                    print(name, json.dumps(found), file=sys.stderr)
            return {
                name: {key: round(statistics.median(r[key] for r in found), 2) for key in found[0]}
                for name, found in runs.items()
            }
    finally:
        if made is not None and not args.keep:
            await drop_database(admin_url(), made)
        elif made is not None:
            print(f"kept: {url}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gap_cost", description=__doc__)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rules", default=os.environ.get("BENCH_GAP_RULES", "cmfhir.gaps.rules"))
    parser.add_argument("--database-url", default=None, help="a loaded database to reuse")
    parser.add_argument("--keep", action="store_true", help="keep the database made")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(_run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

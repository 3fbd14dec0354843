"""`python -m bench.gap_cost`: what a care-gap sweep costs per member, in one process, the
variants interleaved (A, B, A, B ...) so that the machine's load falls on both alike.

It loads `--members` members of the caseload (in-process transactions, no HTTP) into a
database of the worktree's embedded PostgreSQL (or `--database-url`), then sweeps them
`--rounds` times with each variant: every member queued, then evaluated by one engine with
`--concurrency` batches at a time. Per sweep: this process's CPU (`time.process_time`),
PostgreSQL's (its backends' CPU from /proc), wall time, members evaluated.

Variants: `declared` (the rules' READS: only the types some rule reads are read) and
`everything` (the same rules with their READS hidden: each member's whole compartment is
read and parsed, as before the declarations).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import psutil
from sqlalchemy.engine import make_url

from bench.caseload import make_staff, member_bundles, staff_bundle
from cmfhir.app import open_context
from cmfhir.auth.principal import TRUSTED
from cmfhir.config import Settings
from cmfhir.gaps.engine import GapEngine
from cmfhir.gaps.ruleset import RuleSet, load_ruleset
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.transaction import process_bundle
from cmfhir.store import gap_queue
from cmfhir.store.database import embedded_url

ROOT = Path(__file__).resolve().parents[1]


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(url: str, statement: str) -> None:
    parsed = make_url(url)
    conn = await asyncpg.connect(
        user=parsed.username,
        password=parsed.password,
        host=parsed.query.get("host") or parsed.host,
        port=parsed.port,
        database=parsed.database,
    )
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL process of the embedded cluster (postmaster and its
    live backends)."""
    pidfile = ROOT / ".data" / "test" / "pg" / "data" / "postmaster.pid"
    candidates = [pidfile, *ROOT.glob(".data/test/**/postmaster.pid")]
    for found in candidates:
        if found.exists():
            pid = int(found.read_text().split()[0])
            break
    else:
        return 0.0
    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
    except psutil.Error:
        return 0.0
    return total


def _everything(ruleset: RuleSet) -> RuleSet:
    hidden = [SimpleNamespace(CODE=r.CODE, evaluate=r.evaluate) for r in ruleset.rules]
    return RuleSet(hidden, ruleset.config)  # type: ignore[arg-type]


async def _load(ctx: FhirContext, members: int) -> None:
    staff = make_staff(members)
    await process_bundle(ctx, staff_bundle(staff), base="http://bench/fhir")
    for bundle in member_bundles(1, members, staff):
        await process_bundle(ctx, bundle, base="http://bench/fhir", representation=False)


async def _sweep(ctx: FhirContext, ruleset: RuleSet, concurrency: int) -> dict[str, float]:
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        await gap_queue.enqueue_all(repo, None)
    engine = GapEngine(ctx, ruleset)
    pg0, cpu0, wall0 = _postgres_cpu(), time.process_time(), time.perf_counter()
    evaluated = await engine.drain(concurrency=concurrency)
    pg1, cpu1, wall1 = _postgres_cpu(), time.process_time(), time.perf_counter()
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
        admin = embedded_url(ROOT / ".data" / "test")
        made = f"cmfhir_gapcost_{uuid.uuid4().hex[:8]}"
        await _admin(admin, f"CREATE DATABASE {made}")
        url = make_url(_plain(admin)).set(database=made).render_as_string(hide_password=False)
    try:
        settings = Settings(database_url=url)
        async with open_context(settings) as opened:
            ctx = replace(opened, principal=TRUSTED)
            if made is not None:
                await _load(ctx, args.members)
            declared = load_ruleset(settings.profiles_dir, args.rules)
            variants = {"declared": declared, "everything": _everything(declared)}
            await _sweep(ctx, declared, args.concurrency)  # warm-up: gaps written once
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, ruleset in variants.items():
                    runs[name].append(await _sweep(ctx, ruleset, args.concurrency))
                    print(name, json.dumps(runs[name][-1]), file=sys.stderr)
            return {
                name: {key: round(statistics.median(r[key] for r in found), 2) for key in found[0]}
                for name, found in runs.items()
            }
    finally:
        if made is not None and not args.keep:
            admin = embedded_url(ROOT / ".data" / "test")
            await _admin(admin, f"DROP DATABASE IF EXISTS {made} WITH (FORCE)")
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

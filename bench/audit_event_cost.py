"""The cost of one buffered AuditEvent, apart from the read it audits: the trail's writer
(`AuditTrail.flush`) given the same batches of read and search records, measured in one
process on a scratch database of the embedded PostgreSQL:

- the server's CPU (`time.process_time()`) to build the events and to write them;
- PostgreSQL's CPU (its processes' user+system time) over the writes;
- the WAL bytes and the rows and index entries stored per event (load-independent).

Sides run interleaved (the order rotates each round), so a loaded machine slows the run
without skewing one side. `--sides` picks among the writers this module knows:

    .venv/bin/python -m bench.audit_event_cost [--events 2000] [--batch 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text

from bench.scratch import ROOT, admin_url, create_database, drop_database, postgres_cpu
from cmfhir.app import open_context
from cmfhir.auth.principal import OPEN, Principal
from cmfhir.config import Settings
from cmfhir.interactions.audit import AuditRecord, AuditTrail
from cmfhir.interactions.context import FhirContext
from cmfhir.store.audit_log import append_events, event_row
from cmfhir.workers import GC_THRESHOLDS

NURSE = Principal("user", client_id="console", fhir_user="Practitioner/n1", scopes=("user/*.rs",))

# The tables an AuditEvent may put rows in, and the indexes each row adds an entry to.
_TABLES = (
    "audit_event",
    "resource",
    "resource_history",
    "event",
    "idx_token",
    "idx_string",
    "idx_date",
    "idx_reference",
    "idx_uri",
)
_ROWS = text(" UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in _TABLES))
_INDEXES = text(
    "SELECT tablename, count(*) FROM pg_indexes WHERE tablename = ANY(:tables) GROUP BY 1"
).bindparams(tables=list(_TABLES))
_WAL = text("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")


def records(n: int, principal: Principal) -> list[AuditRecord]:
    """What the read scenario buffers: a Patient read and a search by subject, alternately,
    each about one member."""
    out = []
    for i in range(n):
        member = f"m{i % 1000}"
        if i % 2:
            record = AuditRecord(
                "search-type",
                200,
                principal,
                (member,),
                (),
                f"Observation?subject=Patient/{member}",
                "127.0.0.1",
                uuid.uuid4().hex,
            )
        else:
            record = AuditRecord(
                "read",
                200,
                principal,
                (member,),
                (f"Patient/{member}",),
                None,
                "127.0.0.1",
                uuid.uuid4().hex,
            )
        out.append(record)
    return out


Writer = Callable[[FhirContext, list[AuditRecord], int], Awaitable[tuple[float, float]]]


async def _write(
    ctx: FhirContext, batch: list[AuditRecord], size: int, rows: bool
) -> tuple[float, float]:
    """Build a batch's events, then write them, a batch at a time; (build, write) CPU."""
    trail = AuditTrail(ctx, interval=3600.0)
    build = write = 0.0
    for start in range(0, len(batch), size):
        before = time.process_time()
        for record in batch[start : start + size]:
            trail.record(record)
        records, trail._buffer = trail._buffer, []
        if rows:
            built = trail.rows(records)
            middle = time.process_time()
            await append_events(ctx.store.engine, built)
        else:
            versions = [event_row(v) for v in trail.versions(records)]
            middle = time.process_time()
            await append_events(ctx.store.engine, versions)
        build += middle - before
        write += time.process_time() - middle
    return build, write


async def versions_writer(
    ctx: FhirContext, batch: list[AuditRecord], size: int
) -> tuple[float, float]:
    """As the trail writes when the registry's AuditEvent parameters are not the known
    ones: `NewVersion`s (the event as a dict, its own indexer, `ResourceIndex`,
    `index_records`), each made a row (`event_row`), then `append_events`."""
    return await _write(ctx, batch, size, rows=False)


async def rows_writer(ctx: FhirContext, batch: list[AuditRecord], size: int) -> tuple[float, float]:
    """As the trail writes: rows straight from the records (interactions/audit_rows.py),
    then `append_events`."""
    return await _write(ctx, batch, size, rows=True)


SIDES: dict[str, Writer] = {
    "versions": versions_writer,
    "rows": rows_writer,
}


async def _merge_pending(ctx: FhirContext) -> None:
    """Merge the GIN index's pending list (what autovacuum or a full list does later), so
    that its cost is counted with the writes that made it."""
    async with ctx.store.engine.connect() as conn:
        await conn.execute(text("SELECT gin_clean_pending_list('ix_audit_event_terms')"))
        await conn.commit()


async def _counts(ctx: FhirContext) -> tuple[dict[str, int], int]:
    async with ctx.store.engine.connect() as conn:
        rows = {name: int(n) for name, n in await conn.execute(_ROWS)}
        wal = int((await conn.execute(_WAL)).scalar_one())
    return rows, wal


async def run(events: int, batch: int, rounds: int, sides: list[str], who: str) -> dict[str, Any]:
    admin = admin_url()
    url = await create_database(admin, "cmfhir_auditevent")
    principal = OPEN if who == "open" else NURSE
    settings = Settings(
        database_url=url,
        data_dir=ROOT / ".data" / "bench-audit-event",
        auth="off",
        workers=False,
        audit=True,
    )
    totals = {s: {"build": 0.0, "write": 0.0, "postgres": 0.0, "wal": 0, "n": 0} for s in sides}
    rows: dict[str, dict[str, int]] = {s: {} for s in sides}
    try:
        async with open_context(settings) as ctx:
            # As the server settles its heap once started (app.py): what start-up made is
            # out of the collector's sight, so a full collection costs what a server's does.
            gc.collect()
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
            async with ctx.store.engine.connect() as conn:
                indexes = {name: int(n) for name, n in await conn.execute(_INDEXES)}
            for side in sides:  # warm-up, uncounted
                await SIDES[side](ctx, records(batch, principal), batch)
            for n in range(rounds):
                order = sides[n % len(sides) :] + sides[: n % len(sides)]
                for side in order:
                    work = records(events, principal)
                    counted, wal = await _counts(ctx)
                    pg = postgres_cpu(admin)
                    build, write = await SIDES[side](ctx, work, batch)
                    await _merge_pending(ctx)
                    pg = postgres_cpu(admin) - pg
                    after, wal_after = await _counts(ctx)
                    t = totals[side]
                    t["build"] += build
                    t["write"] += write
                    t["postgres"] += pg
                    t["wal"] += wal_after - wal
                    t["n"] += events
                    for table in _TABLES:
                        rows[side][table] = (
                            rows[side].get(table, 0) + after.get(table, 0) - counted.get(table, 0)
                        )
    finally:
        await drop_database(admin, url)
    out: dict[str, Any] = {"events_per_side": events * rounds, "batch": batch, "who": who}
    for side in sides:
        t = totals[side]
        n = t["n"]
        per_table = {k: round(v / n, 2) for k, v in rows[side].items() if v}
        out[side] = {
            "server_us_build": round(1e6 * t["build"] / n, 1),
            "server_us_write": round(1e6 * t["write"] / n, 1),
            "postgres_us": round(1e6 * t["postgres"] / n, 1),
            "wal_bytes": round(t["wal"] / n),
            "rows": round(sum(per_table.values()), 2),
            "index_entries": round(sum(v * indexes.get(k, 0) for k, v in per_table.items()), 1),
            "rows_per_table": per_table,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--who", choices=("open", "user"), default="user")
    parser.add_argument("--sides", default=",".join(SIDES))
    args = parser.parse_args()
    sides = args.sides.split(",")
    result = asyncio.run(run(args.events, args.batch, args.rounds, sides, args.who))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

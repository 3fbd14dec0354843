"""The wall time of the audit trail's batches, one kind of read at a time, on the database
of a run kept with `--keep-data` (its `audit_event` as large as the run left it): batches
of 200 AuditEvents written as the trail writes them (`insert_events`, one COPY in its own
transaction), alternately those of Patient reads and of Encounter reads of the stored
members, and the median, mean and slowest batch of each. The slowest batches are the ones
that merged the GIN pending list of `terms` (bench/README.md, round 3).

    python -m bench.audit_batches .data/bench/run-<stamp> [--batches 30] [--rounds 3]

It adds rows to that database's `audit_event`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.scratch import connect
from cmfhir.auth.principal import OPEN
from cmfhir.interactions.audit_rows import AuditRows
from cmfhir.interactions.audit_shape import AuditRecord
from cmfhir.store.audit_events import insert_events
from cmfhir.store.database import embedded_url

_BATCH = 200
_IDS = "SELECT id FROM resource WHERE resource_type = $1 AND NOT deleted ORDER BY rid LIMIT $2"


async def run(url: str, batches: int, rounds: int) -> None:
    conn = await connect(url)
    try:
        patients = [r[0] for r in await conn.fetch(_IDS, "Patient", 1000)]
        encounters = [r[0] for r in await conn.fetch(_IDS, "Encounter", 5000)]
        rows = AuditRows()
        n = 0
        for round_ in range(rounds):
            for kind in ("Patient", "Encounter"):
                walls = []
                for _ in range(batches):
                    records = []
                    for _ in range(_BATCH):
                        n += 1
                        member = patients[n % len(patients)]
                        read = member if kind == "Patient" else encounters[n % len(encounters)]
                        records.append(
                            AuditRecord(
                                "read",
                                200,
                                OPEN,
                                members=(member,),
                                resources=(f"{kind}/{read}",),
                                address="127.0.0.1",
                                request_id=f"batches-{time.time_ns():x}-{n}",
                            )
                        )
                    built = rows.rows(records, datetime.now(UTC))
                    start = time.perf_counter()
                    async with conn.transaction():
                        await insert_events(conn, built)
                    walls.append((time.perf_counter() - start) * 1000)
                print(
                    f"round {round_ + 1}, {kind} reads: batch of {_BATCH} median "
                    f"{statistics.median(walls):.1f} ms, mean {statistics.mean(walls):.1f} ms, "
                    f"slowest {max(walls):.0f} ms ({batches} batches)"
                )
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_batches")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(embedded_url(args.data_dir.resolve()), args.batches, args.rounds))


if __name__ == "__main__":
    main()

"""What the report trigger's Communication row costs PostgreSQL (`report_contact_put`, kept
by the trigger of migration 0012_report_totals on every Communication written), before and
after migration 0017_stored_under made it cheaper, measured in PostgreSQL itself.

    .venv/bin/python -m bench.report_trigger_cost [--members 20] [--repeat 50]

On a scratch database with the caseload's member Bundles written, both definitions are
created in `pg_temp` and run, alternately, over every stored Communication `--repeat`
times inside a transaction that is rolled back; the time is the CPU time
of the connection's PostgreSQL backend (the machine's load does not count, as wall-clock
time would). Both must store the same rows, for the caseload's contents and for `sent`
values and subject references that are and are not dates and local Patients.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench import caseload
from bench.ingest_cost import _connect, _post, _served
from bench.scratch import ROOT, admin_url, create_database, drop_database
from cmfhir.app import create_app
from cmfhir.config import Settings

VERSIONS = ROOT / "migrations" / "versions"
# `sent` values PostgreSQL reads, and some it does not (the row is then left out).
EDGES = [
    "2024",
    "2024-03",
    "2024-03-04",
    "2024-03-04T10:11:12",
    "2024-03-04T10:11:12Z",
    "2024-03-04T10:11:12.123+05:30",
    "2024-02-30",
    "2024-13",
    "0000",
    "2024-03-04T25:00:00Z",
    "2024-03-04T10:11:12+99:00",
    "not a date",
    "",
]


# Subject references that are and are not a local Patient's.
REFERENCES = [
    "Patient/a",
    "Patient/",
    "Patient/a.b-C9/_history/2",
    "Patient/a/_history/",
    "Patient/a/_history/1/2",
    "Patient/a/b",
    "Patient/" + "a" * 64,
    "Patient/" + "a" * 65,
    "Patient/a_b",
    "Patient/a\n",
    "patient/a",
    "Group/1",
    "http://x/Patient/a",
]


def _definition(path: Path, name: str, as_name: str) -> str:
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text: str = getattr(module, name)
    text = text.replace("CREATE OR REPLACE FUNCTION", "CREATE FUNCTION")
    return text.replace("CREATE FUNCTION report_contact_put", f"CREATE FUNCTION {as_name}", 1)


async def _cpu_ms(conn: asyncpg.Connection, function: str, offset: int) -> float:
    """CPU milliseconds of the connection's backend (its process's user + system time,
    in clock ticks of 10 ms: hence many calls per measurement) for one call per stored
    Communication."""
    process = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()"))
    before = process.cpu_times()
    await conn.fetchval(
        f"SELECT count({function}(-(rid + {offset}), content)) FROM resource "
        "WHERE resource_type = 'Communication' AND NOT deleted"
    )
    after = process.cpu_times()
    return 1000 * (after.user + after.system - before.user - before.system)


async def run(members: int, repeat: int) -> dict[str, Any]:
    admin = admin_url()
    url = await create_database(admin, "cmfhir_reportcost")
    settings = Settings(
        database_url=url, data_dir=ROOT / ".data" / "bench-report-cost", auth="off", workers=False
    )
    staff = caseload.make_staff(max(members, 50))
    try:
        async with _served(create_app(settings)) as http:
            await _post(http, caseload.staff_bundle(staff))
            for index in range(members):
                await _post(http, caseload.member_bundle(3, index, staff))
        conn = await _connect(url)
        try:
            functions = {
                "before": _definition(VERSIONS / "0012_report_totals.py", "_PUT", "pg_temp.f0"),
                "after": _definition(
                    VERSIONS / "0017_stored_under.py", "_CONTACT_PUT", "pg_temp.f1"
                ),
            }
            for text in functions.values():
                await conn.execute(text)
            count = await conn.fetchval(
                "SELECT count(*) FROM resource WHERE resource_type = 'Communication'"
            )
            samples = [
                json.loads(r[0])
                for r in await conn.fetch(
                    "SELECT content::text FROM resource WHERE resource_type = 'Communication'"
                )
            ]
            contents = samples + [{**samples[0], "sent": sent} for sent in EDGES]
            contents += [{**samples[0], "subject": {"reference": ref}} for ref in REFERENCES]
            # The row each content gives (None: none), rolled back.
            found: dict[str, list[Any]] = {}
            for name in ("pg_temp.f0", "pg_temp.f1"):
                rows: list[Any] = []
                tr = conn.transaction()
                await tr.start()
                for n, content in enumerate(contents):
                    rid = -(10**12) - n
                    await conn.execute(f"SELECT {name}($1, $2::jsonb)", rid, json.dumps(content))
                    row = await conn.fetchrow(
                        "SELECT member, sent, status, mediums FROM report_contact WHERE rid = $1",
                        rid,
                    )
                    rows.append(None if row is None else tuple(row))
                await tr.rollback()
                found[name] = rows
            same = [a == b for a, b in zip(found["pg_temp.f0"], found["pg_temp.f1"], strict=True)]
            totals = {"before": 0.0, "after": 0.0}
            tr = conn.transaction()
            await tr.start()
            for n in range(repeat):
                order = ("pg_temp.f0", "pg_temp.f1") if n % 2 == 0 else ("pg_temp.f1", "pg_temp.f0")
                for name in order:
                    label = "before" if name.endswith("f0") else "after"
                    offset = (n * 2 + (name == "pg_temp.f1")) * 10**9
                    totals[label] += await _cpu_ms(conn, name, offset)
            await tr.rollback()
        finally:
            await conn.close()
    finally:
        await drop_database(admin, url)
    calls = count * repeat
    return {
        "communications": count,
        "calls_each": calls,
        "cpu_us_per_call": {k: round(1000 * v / calls, 1) for k, v in totals.items()},
        "contents_compared": len(same),
        "same_row": all(same),
        "rows_stored_of_edges": sum(r is not None for r in found["pg_temp.f1"][len(samples) :]),
        "edges": len(EDGES) + len(REFERENCES),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.members, args.repeat)), indent=2))


if __name__ == "__main__":
    main()

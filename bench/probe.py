"""Targeted read and search measurements against a database a run kept (`--keep-data`):
starts `cmfhir serve` from the current checkout over that data directory (migrating it),
then runs the read and/or search scenarios exactly as a run does, without loading again.

    python -m bench.probe .data/bench/run-<stamp> --members 1000 --scenarios search,read

Figures are comparable with each other (same data, back to back), not a standard run.
`--src DIR` serves from another checkout's `src` (a `git worktree` of the commit to compare
with), so two versions of the code are measured on one database, runs in turn. Settings
come from the environment as for `cmfhir serve` (`CMFHIR_AUDIT=false`, ...). Mind the
migrations: the newer side migrates the database, and the older then refuses it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
from pathlib import Path
from typing import Any

import asyncpg

from bench import printout
from bench.caseload import make_staff
from bench.cpu_split import cpu_split
from bench.other_load import OtherLoad
from bench.queries import build_samples
from bench.read import run_read
from bench.search import run_search
from bench.server import free_port, start_server


async def stored_ids(database_url: str) -> dict[str, list[str]]:
    """The ids of the stored Patients and Encounters, in the order they were written."""
    conn = await asyncpg.connect(database_url)
    try:
        out: dict[str, list[str]] = {}
        for kind in ("Patient", "Encounter"):
            rows = await conn.fetch(
                "SELECT id FROM resource WHERE resource_type = $1 AND NOT deleted ORDER BY rid",
                kind,
            )
            out[kind] = [row[0] for row in rows]
        return out
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.probe")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--scenarios", default="search,read")
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--only", default="", help="comma-separated search query names")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument("--src", type=Path, help="serve the code of this `src` directory")
    args = parser.parse_args()
    scenarios = set(args.scenarios.split(","))
    print(f"load average {os.getloadavg()}")
    code = {"PYTHONPATH": str(args.src.resolve())} if args.src else None
    server = start_server(args.data_dir.resolve(), free_port(), 2, None, code)
    results: dict[str, Any] = {"load_average_start": os.getloadavg(), "src": str(args.src)}
    try:
        with OtherLoad(server.postgres_pids) as other:
            meter = functools.partial(cpu_split, server, other)
            ids = asyncio.run(stored_ids(server.database_url))
            if "read" in scenarios:
                results["read"] = run_read(server.base_url, ids, args.duration, 1, meter)
                printout.print_read(results["read"])
            if "search" in scenarios:
                staff = make_staff(args.members)
                samples = asyncio.run(
                    build_samples(server.database_url, staff, ids, args.members, 1)
                )
                only = {x for x in args.only.split(",") if x}
                rows = asyncio.run(
                    run_search(
                        server.base_url,
                        server.database_url,
                        samples,
                        args.duration,
                        meter,
                        only=only or None,
                    )
                )
                results["search"] = rows
                printout.print_search(rows)
    finally:
        server.stop()
    results["load_average_end"] = os.getloadavg()
    print(f"load average {os.getloadavg()}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()

"""`python -m bench.gap_sweep DATA_DIR`: `cmfhir gaps sweep` over the database of a kept run
(`python -m bench --keep-data`; its embedded PostgreSQL in DATA_DIR/pg, started or joined
here), timed as the harness's gap scenario times it, with the CPU it cost.

Per sweep: wall time (the command's start-up included, and apart), the command's CPU
(user+system of the child process), PostgreSQL's CPU (the cluster's processes, from
/proc), the members queued and evaluated, and the DetectedIssue versions written. The
rules are `--rules` (the harness's default `bench.gap_probe`, or `cmfhir.gaps.rules`); the
instant `--as-of` (a fixed one makes repeated sweeps comparable: the second finds nothing
to write). `--repeat N` sweeps N times; `--processes N` is passed to the command (default:
its own, one process per core). No server runs beside it: the command evaluates every
member itself (the harness's sweep shares them with the server's evaluators). The
command's CPU includes the processes it starts (reaped by it, so counted in its children's
time). `--database-url` sweeps another database of the cluster in DATA_DIR/pg (a scratch
one loaded by `bench.gap_cost --keep`); PostgreSQL's CPU is then the whole cluster's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.scratch import postgres_cpu
from cmfhir.store.database import embedded_url

_WRITTEN = "SELECT count(*) FROM resource_history WHERE resource_type = 'DetectedIssue'"


async def _count(url: str, query: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _sweep(url: str, data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(
        os.environ,
        CMFHIR_DATABASE_URL=url,
        CMFHIR_DATA_DIR=str(data_dir),
        CMFHIR_GAP_RULES=args.rules,
        CMFHIR_LOG_LEVEL="warning",
    )
    command = [sys.executable, "-m", "cmfhir", "gaps", "sweep"]
    if args.as_of:
        command += ["--as-of", args.as_of]
    if args.processes is not None:
        command += ["--processes", str(args.processes)]
    written = asyncio.run(_count(url, _WRITTEN))
    cluster = args.cluster
    load0 = os.getloadavg()[0]
    pg0, cpu0, wall0 = postgres_cpu(cluster), _children_cpu(), time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    pg1, cpu1, wall1 = postgres_cpu(cluster), _children_cpu(), time.perf_counter()
    if done.returncode != 0:
        raise RuntimeError(f"cmfhir gaps sweep failed: {done.stderr[-2000:]}")
    said = done.stdout.strip()
    members = int(said.split(" members queued")[0].rsplit(" ", 1)[-1])
    return {
        "members": members,
        "wall_s": round(wall1 - wall0, 1),
        "members_per_s": round(members / (wall1 - wall0), 1),
        "command_cpu_s": round(cpu1 - cpu0, 1),
        "postgres_cpu_s": round(pg1 - pg0, 1),
        "cpu_ms_per_member": round((cpu1 - cpu0 + pg1 - pg0) * 1000 / members, 2),
        "members_per_cpu_s": round(members / (cpu1 - cpu0 + pg1 - pg0), 1),
        "written": asyncio.run(_count(url, _WRITTEN)) - written,
        "command_said": said,
        "load_average": [round(load0, 1), *(round(x, 1) for x in os.getloadavg())],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gap_sweep", description=__doc__)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--rules", default=os.environ.get("BENCH_GAP_RULES", "bench.gap_probe"))
    parser.add_argument("--as-of", default=None)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)
    args.cluster = embedded_url(args.data_dir.resolve())
    url = args.database_url or args.cluster
    for _ in range(args.repeat):
        print(json.dumps(_sweep(url, args.data_dir.resolve(), args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

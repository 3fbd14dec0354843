"""What a member's transaction Bundle (the ingest harness's write, about 60 resources) costs
the server, measured in one process: one server in this process on a scratch database (no
background workers, CMFHIR_AUTH=off), the staff Bundle first, then member Bundles POSTed
through ASGI, CPU counted per Bundle.

    .venv/bin/python -m bench.write_cost [--members 60] [--profile N]

Alternate Bundles extract index values with the shared evaluation (the default) and the
generic one (`extract_index(..., generic=True)`), so the two are compared on the same
run; both sides write the same kind of Bundle. To compare with another checkout's code,
run this file with that checkout's `src` first on PYTHONPATH (both sides then run its
default). CPU is `time.process_time()` of this
process (the server, and httpx's ASGI client, which is the same for both) and the
user+system time of the embedded PostgreSQL's processes. `--profile N` runs cProfile over
the shared side's Bundles and prints the N functions with the most own time and the N with
the most cumulative time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import inspect
import json
import pstats
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
from fastapi import FastAPI

from bench import caseload
from bench.scratch import ROOT, admin_url, create_database, drop_database, postgres_cpu
from cmfhir.app import create_app
from cmfhir.config import Settings
from cmfhir.interactions import versions
from cmfhir.resources import index_values


@asynccontextmanager
async def _served(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench/fhir/") as http:
            yield http


async def _post(http: httpx.AsyncClient, bundle: dict[str, Any]) -> int:
    body = orjson.dumps(bundle)
    answer = await http.post("", content=body, headers={"content-type": "application/fhir+json"})
    assert answer.status_code == 200, answer.text[:500]
    return len(bundle["entry"])


async def run(members: int, profile: int) -> dict[str, Any]:
    admin = admin_url()
    url = await create_database(admin, "cmfhir_writecost")
    settings = Settings(
        database_url=url, data_dir=ROOT / ".data" / "bench-write-cost", auth="off", workers=False
    )
    app = create_app(settings)
    shared = index_values.extract_index
    # On a checkout without the generic evaluation both sides run the same code.
    supported = "generic" in inspect.signature(shared).parameters
    generic = functools.partial(shared, generic=True) if supported else shared
    cpu = {"shared": 0.0, "generic": 0.0}
    postgres = {"shared": 0.0, "generic": 0.0}
    bundles = {"shared": 0, "generic": 0}
    resources = {"shared": 0, "generic": 0}
    profiler = cProfile.Profile() if profile else None
    staff = caseload.make_staff(max(members, 50))
    try:
        async with _served(app) as http:
            await _post(http, caseload.staff_bundle(staff))
            for index in range(4):  # warm-up: compiled plans, prepared statements
                await _post(http, caseload.member_bundle(3, 10_000 + index, staff))
            for index in range(members):
                side = "shared" if index % 2 == 0 else "generic"
                versions.extract_index = shared if side == "shared" else generic  # type: ignore[assignment]
                bundle = caseload.member_bundle(3, index, staff)
                pg_before, before = postgres_cpu(admin), time.process_time()
                if profiler is not None and side == "shared":
                    profiler.enable()
                resources[side] += await _post(http, bundle)
                if profiler is not None:
                    profiler.disable()
                cpu[side] += time.process_time() - before
                postgres[side] += postgres_cpu(admin) - pg_before
                bundles[side] += 1
    finally:
        versions.extract_index = shared
        await drop_database(admin, url)
    out: dict[str, Any] = {"generic_evaluation_available": supported}
    for side in ("generic", "shared"):
        out[side] = {
            "bundles": bundles[side],
            "resources": resources[side],
            "server_ms_per_bundle": round(1000 * cpu[side] / bundles[side], 2),
            "server_us_per_resource": round(1e6 * cpu[side] / resources[side], 1),
            "postgres_us_per_resource": round(1e6 * postgres[side] / resources[side], 1),
        }
    if profiler is not None:
        profiler.dump_stats(str(ROOT / ".data" / "write_cost.prof"))
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(profile)
        stats.sort_stats("cumulative").print_stats(profile)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=60)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.members, args.profile)), indent=2))


if __name__ == "__main__":
    main()

"""CPU per read inside the application, no server and no client: the ASGI application is
called directly with the scope uvicorn gives a `GET /fhir/Type/id`, over an embedded
PostgreSQL holding a `bench.request_cost` caseload, and the process's CPU time per read
is reported beside the same read as an interaction call (`interactions.read`, no HTTP):
what is left between the two is the read path's own work (headers, negotiation, access
log, audit wrapper, response messages). Over loopback (`bench.read_serving`) the server's
protocol and event loop come on top.

    python -m bench.read_asgi_cost DIR [--reads 5000] [--rounds 3] [--log-level info]
        [--stored] [--profile F.pstats]

With `--stored`, each resource is read from PostgreSQL once and then given from memory
(the read pool's `read` answers from a dict): no I/O, so the figures are the Python work
alone and move far less with the machine's load.

`--log-level info` writes the access log (to /dev/null, through the server's own logging
configuration), as `cmfhir serve` does by default; `warning` leaves it out, as the bench
harness runs the server. Garbage collection is paused while timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import logging.config
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.probe import stored_ids
from bench.read_stored import reads_from_memory

_HEADERS = [
    (b"host", b"127.0.0.1:8080"),
    (b"accept", b"application/fhir+json"),
]


def _scope(app: Any, path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": list(_HEADERS),
        "state": {},
        "app": app,
    }


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def _asgi_reads(app: Any, paths: list[str]) -> Callable[[int], Awaitable[None]]:
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def one(n: int) -> None:
        await app(_scope(app, paths[n % len(paths)]), _receive, send)
        if statuses.pop() != 200:
            raise RuntimeError(f"{paths[n % len(paths)]}: not 200")

    return one


def _interaction_reads(app: Any, paths: list[str]) -> Callable[[int], Awaitable[None]]:
    from cmfhir.interactions import read

    ctx = app.state.fhir.for_request("4.0")
    pairs = [p.removeprefix("/fhir/").split("/") for p in paths]

    async def one(n: int) -> None:
        kind, id = pairs[n % len(pairs)]
        await read(ctx, kind, id, [])

    return one


async def _time(one: Callable[[int], Awaitable[None]], reads: int) -> float:
    for n in range(1000):  # warm: every path read once (and kept, with --stored)
        await one(n)
    gc.collect()
    gc.disable()
    try:
        started = time.process_time()
        for n in range(reads):
            await one(n)
        return (time.process_time() - started) / reads
    finally:
        gc.enable()


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from cmfhir.app import create_app
    from cmfhir.config import Settings
    from cmfhir.logs import logging_config
    from cmfhir.store.database import embedded_url

    url = embedded_url(args.data_dir)
    ids = await stored_ids(url)
    paths = [f"/fhir/Patient/{i}" for i in ids["Patient"][:500]]
    paths += [f"/fhir/Encounter/{i}" for i in ids["Encounter"][:500]]
    os.environ.update(
        CMFHIR_DATABASE_URL=url,
        CMFHIR_AUTH="off",
        CMFHIR_AUDIT="false",
        CMFHIR_WORKERS="false",
        CMFHIR_LOG_LEVEL=args.log_level,
        CMFHIR_DATA_DIR=str(args.data_dir / "asgi-cost"),
    )
    settings = Settings()
    config = logging_config(settings.log_level, settings.log_format)
    for handler in config.get("handlers", {}).values():
        if handler.get("class") == "logging.StreamHandler":
            handler["stream"] = args.devnull
    logging.config.dictConfig(config)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        rows: dict[str, list[float]] = {"asgi": [], "interaction": []}
        for _ in range(args.rounds):
            rows["asgi"].append(await _time(_asgi_reads(app, paths), args.reads))
            rows["interaction"].append(await _time(_interaction_reads(app, paths), args.reads))
        if args.profile:
            profiler = cProfile.Profile()
            one = _asgi_reads(app, paths)
            profiler.enable()
            for n in range(args.reads):
                await one(n)
            profiler.disable()
            profiler.dump_stats(args.profile)
    return {
        name: {
            "us_per_read": [round(1e6 * c, 1) for c in costs],
            "median_us": round(1e6 * statistics.median(costs), 1),
        }
        for name, costs in rows.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.read_asgi_cost")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--stored", action="store_true", help="reads from memory, no I/O")
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    if args.stored:
        reads_from_memory()
    args.data_dir = args.data_dir.resolve()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    with Path(os.devnull).open("w") as devnull:  # the access log's lines go there
        args.devnull = devnull
        result = asyncio.run(_run(args))
    result["load"] = {"at_end": round(os.getloadavg()[0], 1)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()

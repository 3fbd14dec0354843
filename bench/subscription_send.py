"""CPU of a rest-hook send, in one process, A against B interleaved:
`python -m bench.subscription_send [--sends 2000] [--concurrency 64] [--events 1]`.

A posts through an httpx transport (`httpx.AsyncHTTPTransport`, a pool of `--concurrency`
connections: the sender's client before `subscriptions/posting.py`), B through the
sender's `Endpoints` (kept connections per origin). Both post the same notification Bundle
(`--events` id-only events, as the sender builds it) to a receiver answering 200 in a
process of its own (aiohttp on loopback, so its CPU is not counted), `--concurrency` at a
time as a sender round does, for `--rounds` alternations. `--compare FILE` adds C: the
`Endpoints` of another posting.py (an earlier commit's, from `git show`), in the same
alternation. Reports the Python CPU per send (`time.process_time` of this process) and the
connections each side opened. Not part of the test suite; figures in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from bench.server import free_port
from cmfhir.resources.fhirjson import dump_json
from cmfhir.subscriptions.notifications import Focus, notification_bundle, status_parameters
from cmfhir.subscriptions.posting import Endpoints

_RECEIVER = """
import sys
from aiohttp import web

async def receive(request):
    await request.read()
    return web.Response(status=200)

app = web.Application()
app.router.add_post("/notify", receive)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def _load(path: str) -> Any:
    """The `Endpoints` class of the posting.py at `path`."""
    spec = importlib.util.spec_from_file_location("posting_compared", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.Endpoints


def _bundle(events: int) -> bytes:
    now = datetime.now(UTC)
    shown = [Focus(n + 1, now, "Encounter", f"e{n}", "create") for n in range(events)]
    status = status_parameters(
        base="http://127.0.0.1/fhir",
        subscription_id="s1",
        topic="https://cmfhir.org/fhir/SubscriptionTopic/encounter-admission-discharge",
        status="active",
        kind="event-notification",
        events_since_start=events,
        events=shown,
    )
    return dump_json(
        notification_bundle(
            status, base="http://127.0.0.1/fhir", subscription_id="s1", now=now, events=shown
        )
    )


async def _side(
    post: Callable[[], Awaitable[int]], sends: int, concurrency: int
) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per send."""
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, sends, concurrency):
        codes = await asyncio.gather(*(post() for _ in range(min(concurrency, sends - start))))
        assert all(c == 200 for c in codes), codes
    return (time.process_time() - cpu) / sends, (time.perf_counter() - wall) / sends


async def _run(args: argparse.Namespace, url: str) -> dict[str, object]:
    body = _bundle(args.events)
    headers = {"Content-Type": "application/fhir+json"}
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=64)
    transport = httpx.AsyncHTTPTransport(limits=limits)
    endpoints = Endpoints(max_idle=args.concurrency)
    opened_a: set[int] = set()

    async def a() -> int:
        request = httpx.Request(
            "POST",
            url,
            content=body,
            headers=headers,
            extensions={"timeout": httpx.Timeout(10).as_dict()},
        )
        response = await transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        opened_a.add(len(transport._pool.connections))
        return response.status_code

    async def b() -> int:
        return await endpoints.post(url, body, headers, 10)

    sides: dict[str, Callable[[], Awaitable[int]]] = {"A": a, "B": b}
    compared = _load(args.compare)(max_idle=args.concurrency) if args.compare else None
    if compared is not None:

        async def c() -> int:
            code: int = await compared.post(url, body, headers, 10)
            return code

        sides["C"] = c
    figures: dict[str, dict[str, list[float]]] = {k: {"cpu": [], "wall": []} for k in sides}
    for post in sides.values():  # connections opened: not measured
        await _side(post, args.concurrency, args.concurrency)
    for _ in range(args.rounds):
        for name, post in sides.items():
            cpu, wall = await _side(post, args.sends, args.concurrency)
            figures[name]["cpu"].append(cpu)
            figures[name]["wall"].append(wall)
    await transport.aclose()
    await endpoints.aclose()
    opened = {"A": max(opened_a, default=0), "B": endpoints.opened}
    if compared is not None:
        await compared.aclose()
        opened["C"] = compared.opened
    return {
        "sends_per_round": args.sends,
        "concurrency": args.concurrency,
        "events_per_send": args.events,
        "bundle_bytes": len(body),
        "cpu_ms_per_send": {
            k: round(statistics.median(v["cpu"]) * 1000, 3) for k, v in figures.items()
        },
        "wall_ms_per_send": {
            k: round(statistics.median(v["wall"]) * 1000, 3) for k, v in figures.items()
        },
        "connections_opened": opened,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.subscription_send", description=__doc__)
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--events", type=int, default=1, help="notification events per Bundle")
    parser.add_argument("--rounds", type=int, default=3, help="A then B, this many times")
    parser.add_argument("--compare", metavar="FILE", help="another posting.py, measured as C")
    args = parser.parse_args(argv)
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-c", _RECEIVER, str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(f"http://127.0.0.1:{port}/notify", content=b"{}", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        result = asyncio.run(_run(args, f"http://127.0.0.1:{port}/notify"))
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

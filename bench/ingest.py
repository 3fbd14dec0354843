"""Scenario 1, ingest: member transaction Bundles POSTed by concurrent async httpx clients
(resources/s), beside the raw limit measured in the same run: COPY of the same resource JSON
into a bare `bench_raw(content jsonb)` table with asyncpg."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import asyncpg
import httpx
import orjson

from bench.headers import client_headers
from bench.stats import summarize

__all__ = ["KEPT_TYPES", "post_bundle", "raw_copy", "send_bundles", "serialize"]

# Ids the read and search scenarios need, collected from the transaction responses.
KEPT_TYPES = ("Patient", "Encounter")
_COPY_BATCH = 20_000


def serialize(bundles: Iterable[dict[str, Any]]) -> tuple[list[bytes], list[int], list[str]]:
    """The request bodies, their entry counts, and each resource's JSON for the raw COPY."""
    payloads: list[bytes] = []
    counts: list[int] = []
    raw: list[str] = []
    for bundle in bundles:
        payloads.append(orjson.dumps(bundle))
        counts.append(len(bundle["entry"]))
        raw.extend(orjson.dumps(entry["resource"]).decode() for entry in bundle["entry"])
    return payloads, counts, raw


def post_bundle(base_url: str, bundle: dict[str, Any]) -> dict[str, Any]:
    """POST one Bundle synchronously (staff set-up); raise on anything but 200."""
    response = httpx.post(
        base_url, content=orjson.dumps(bundle), headers=client_headers(body=True), timeout=300
    )
    if response.status_code != 200:
        raise RuntimeError(f"Bundle rejected ({response.status_code}): {response.text[:2000]}")
    result: dict[str, Any] = response.json()
    return result


async def send_bundles(
    base_url: str,
    bundles: list[bytes],
    counts: list[int],
    concurrency: int,
    *,
    gzip: bool = False,
    fresh_connections: bool = False,
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """POST every transaction with `concurrency` clients; figures and the ids created.

    `gzip`: accept compressed answers as a default httpx client would (see bench/headers.py).
    `fresh_connections`: a new TCP connection per Bundle instead of `concurrency` keep-alive
    ones, so that the kernel spreads them over the server's workers at every accept.
    """
    ids: dict[str, list[str]] = defaultdict(list)
    latencies: list[float] = []
    failures: list[str] = []
    resources = 0
    queue = iter(range(len(bundles)))
    limits = httpx.Limits(
        max_connections=concurrency, max_keepalive_connections=0 if fresh_connections else None
    )
    timeout = httpx.Timeout(300.0)

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal resources
        for index in queue:
            started = time.perf_counter()
            response = await client.post("", content=bundles[index])
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                failures.append(f"{response.status_code}: {response.text[:500]}")
                continue
            resources += counts[index]
            for entry in orjson.loads(response.content).get("entry", []):
                kind, _, rest = entry["response"].get("location", "").partition("/")
                if kind in KEPT_TYPES:
                    ids[kind].append(rest.partition("/")[0])

    async with httpx.AsyncClient(
        base_url=base_url,
        headers=client_headers(gzip=gzip, body=True),
        limits=limits,
        timeout=timeout,
    ) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    bundle_latency = summarize(latencies, elapsed)
    figures = {
        "bundles": len(bundles),
        "failed_bundles": len(failures),
        "first_failure": failures[0] if failures else None,
        "resources": resources,
        "seconds": round(elapsed, 2),
        "resources_per_second": round(resources / elapsed, 1),
        "concurrency": concurrency,
        "accept_encoding": client_headers(gzip=gzip)["Accept-Encoding"],
        "connections": "new per Bundle" if fresh_connections else f"{concurrency} keep-alive",
        "bundle_p50_ms": bundle_latency["p50_ms"],
        "bundle_p99_ms": bundle_latency["p99_ms"],
    }
    return figures, dict(ids)


async def raw_copy(database_url: str, resources: list[str]) -> dict[str, Any]:
    """COPY the resource JSON into a fresh bare table; the table is dropped afterwards."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DROP TABLE IF EXISTS bench_raw")
        await conn.execute("CREATE TABLE bench_raw(content jsonb)")
        started = time.perf_counter()
        for low in range(0, len(resources), _COPY_BATCH):
            batch = [(text,) for text in resources[low : low + _COPY_BATCH]]
            await conn.copy_records_to_table("bench_raw", records=batch, columns=["content"])
        elapsed = time.perf_counter() - started
        copied = await conn.fetchval("SELECT count(*) FROM bench_raw")
        await conn.execute("DROP TABLE bench_raw")
    finally:
        await conn.close()
    return {
        "resources": copied,
        "seconds": round(elapsed, 2),
        "resources_per_second": round(copied / elapsed, 1),
    }

"""Bulk Data export scenario: a system-level `$export` of the loaded caseload, timed from
kick-off to manifest, with the server's memory sampled while it runs (it must stay flat:
the export streams), beside the raw PostgreSQL limit measured in the same run (COPY of the
same current content out of the `resource` table)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from bench.server import Server

__all__ = ["download", "raw_copy_out", "run_export"]

MIB = 1024**2


def _rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total


async def raw_copy_out(database_url: str) -> dict[str, Any]:
    """COPY every current resource's JSON out of PostgreSQL: the floor an export stands on."""
    conn = await asyncpg.connect(database_url)
    rows = 0

    async def sink(chunk: bytes) -> None:  # asyncpg awaits a callable output
        nonlocal rows
        rows += chunk.count(b"\n")

    try:
        started = time.perf_counter()
        await conn.copy_from_query(
            "SELECT content FROM resource WHERE NOT deleted", output=sink, format="text"
        )
        seconds = time.perf_counter() - started
    finally:
        await conn.close()
    return {
        "resources": rows,
        "seconds": round(seconds, 2),
        "resources_per_second": round(rows / seconds) if seconds else 0,
    }


def download(http: httpx.Client, manifest: dict[str, Any], directory: Path) -> dict[str, Any]:
    """Fetch every output file (streamed to disk) and time it."""
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    size = 0
    for item in manifest["output"]:
        with http.stream("GET", item["url"]) as response:
            response.raise_for_status()
            with (directory / f"{item['type']}.ndjson").open("wb") as out:
                for chunk in response.iter_bytes(1024 * 1024):
                    out.write(chunk)
                    size += len(chunk)
    seconds = time.perf_counter() - started
    return {"bytes": size, "seconds": round(seconds, 2)}


def run_export(server: Server, work_dir: Path) -> tuple[dict[str, Any], Path]:
    """Run the scenario; its figures and the directory the NDJSON files were saved in."""
    headers = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
    with httpx.Client(timeout=120) as http:
        before = _rss(server.pids())
        peak = before
        started = time.perf_counter()
        kickoff = http.get(f"{server.base_url}/$export", headers=headers)
        kickoff.raise_for_status()
        status_url = kickoff.headers["Content-Location"]
        while True:
            peak = max(peak, _rss(server.pids()))
            response = http.get(status_url)
            if response.status_code == 200:
                manifest = response.json()
                break
            response.raise_for_status()
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        count = sum(item["count"] for item in manifest["output"])
        files = work_dir / "export"
        fetched = download(http, manifest, files)
        http.delete(status_url)  # its files are removed
    raw = asyncio.run(raw_copy_out(server.database_url))
    rate = round(count / seconds) if seconds else 0
    figures = {
        "resources": count,
        "types": len(manifest["output"]),
        "seconds": round(seconds, 2),
        "resources_per_second": rate,
        "download": fetched,
        "server_rss_before_mib": round(before / MIB),
        "server_rss_peak_mib": round(peak / MIB),
        "server_rss_growth_mib": round((peak - before) / MIB),
        "raw_copy_out": raw,
        "percent_of_raw": round(100 * rate / raw["resources_per_second"], 1)
        if raw["resources_per_second"]
        else None,
    }
    return figures, files


def run_exchange(
    server: Server, scenarios: tuple[str, ...], done: dict[str, Any]
) -> dict[str, Any]:
    """The export scenario and, when asked, the import of what it exported."""
    from bench import report
    from bench.importing import run_import

    figures, files = run_export(server, Path(server.data_dir))
    out: dict[str, Any] = {}
    if "export" in scenarios:
        out["export"] = figures
        report.print_json("export", figures)
        report.print_table(
            "export",
            ["path", "resources", "seconds", "resources/s", "server RSS growth MiB"],
            [
                ["$export (system, all types)", figures["resources"], figures["seconds"],
                 figures["resources_per_second"], figures["server_rss_growth_mib"]],
                ["raw COPY out of resource", figures["raw_copy_out"]["resources"],
                 figures["raw_copy_out"]["seconds"],
                 figures["raw_copy_out"]["resources_per_second"], ""],
                ["$export as % of raw", "", "", f"{figures['percent_of_raw']}%", ""],
            ],
        )  # fmt: skip
    if "import" in scenarios:
        ingest = done.get("ingest")
        rate = ingest["http"]["resources_per_second"] if ingest else None
        imported = run_import(server, files, rate)
        out["import"] = imported
        report.print_json("import", imported)
        report.print_table(
            "import",
            ["path", "resources", "seconds", "resources/s", "% of HTTP ingest"],
            [["cmfhir import (NDJSON, PUT per line)", imported["resources"],
              imported["seconds"], imported["resources_per_second"],
              imported.get("percent_of_ingest", "")]],
        )  # fmt: skip
    return out

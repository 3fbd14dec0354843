"""HTTP load at a fixed number of connections: `wrk` with `wrk_paths.lua` when installed,
otherwise an async httpx generator (labelled as such: a Python client saturates long before
the server does, so its figures understate the server). Both run as separate processes."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.headers import client_headers
from bench.stats import summarize

__all__ = ["WRK_INSTALL_HINT", "load_tool", "run_load"]

WRK_SCRIPT = Path(__file__).with_name("wrk_paths.lua")
WRK_INSTALL_HINT = "wrk not found: install it (Debian/Ubuntu: apt-get install -y wrk)"
HTTPX_LABEL = "httpx (fallback, Python client: understates the server)"


def load_tool() -> str:
    return "wrk" if shutil.which("wrk") else HTTPX_LABEL


def run_load(
    base_url: str, paths: list[str], connections: int, duration_s: float
) -> dict[str, Any]:
    """GET `paths` (relative to `base_url`, cycled) for `duration_s` over `connections`.

    Returns requests, per_second, p50/p95/p99 in ms, errors (non-2xx or socket) and the tool.
    """
    prefix = urlsplit(base_url).path.rstrip("/")
    with tempfile.NamedTemporaryFile("w", suffix=".paths", delete=False) as handle:
        handle.write("\n".join(f"{prefix}/{p}" for p in paths) + "\n")
        paths_file = Path(handle.name)
    try:
        if shutil.which("wrk"):
            return _run_wrk(base_url, paths_file, connections, duration_s)
        command = [sys.executable, "-m", "bench.load", base_url, str(paths_file)]
        command += [str(connections), str(duration_s)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result
    finally:
        paths_file.unlink(missing_ok=True)


def _run_wrk(
    base_url: str, paths_file: Path, connections: int, duration_s: float
) -> dict[str, Any]:
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(base_url))
    command = ["wrk", "-t", str(min(2, connections)), "-c", str(connections)]
    command += ["-d", f"{max(1, round(duration_s))}s", "--timeout", "10s"]
    command += ["-s", str(WRK_SCRIPT), origin, "--", str(paths_file)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    line = next(x for x in out.splitlines() if x.startswith('{"requests"'))
    raw = json.loads(line)
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in raw if k.startswith("errors_"))
    return {
        "tool": "wrk",
        "connections": connections,
        "requests": raw["requests"],
        "per_second": round(raw["requests"] / seconds, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p95_ms": round(raw["p95_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "errors": errors,
    }


async def _httpx_load(
    base_url: str, paths: list[str], connections: int, duration_s: float
) -> dict[str, Any]:
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(base_url))
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    latencies: list[float] = []
    errors = 0

    async def worker(client: httpx.AsyncClient, offset: int, deadline: float) -> None:
        nonlocal errors
        index = offset
        while time.perf_counter() < deadline:
            index = (index + 1) % len(paths)
            started = time.perf_counter()
            try:
                response = await client.get(paths[index])
                ok = response.status_code < 400
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started)
            errors += not ok

    headers = client_headers()  # identity, like wrk
    async with httpx.AsyncClient(base_url=origin, limits=limits, headers=headers) as client:
        started = time.perf_counter()
        deadline = started + duration_s
        await asyncio.gather(*(worker(client, n * 7919, deadline) for n in range(connections)))
        elapsed = time.perf_counter() - started
    return {"tool": HTTPX_LABEL, "connections": connections, **summarize(latencies, elapsed)} | {
        "errors": errors
    }


def _main(argv: list[str]) -> None:
    base_url, paths_file, connections, duration = argv
    paths = [p for p in Path(paths_file).read_text().splitlines() if p]
    result = asyncio.run(_httpx_load(base_url, paths, int(connections), float(duration)))
    print(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv[1:])

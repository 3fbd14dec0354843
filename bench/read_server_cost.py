"""Server CPU per read over real HTTP, two checkouts A against B, interleaved: each round
starts `cmfhir serve` (one process, no background workers) from each checkout's `src/` in
turn over the same embedded PostgreSQL, drives `GET Type/id` (and, with `--vread`,
`GET Type/id/_history/1`) at it with wrk over loopback, and reports the CPU the serving
process and PostgreSQL's processes used per request (user + system, from the kernel), which
moves far less with other load on the machine than latency does.

    python -m bench.read_server_cost DIR --a SRC_A --b SRC_B [--rounds 3] [--seconds 5]
        [--connections 16] [--audit off|on] [--vread] [--out F.json]

DIR is a `bench.request_cost` directory (its caseload is loaded there, once). The wrk
client's CPU is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import psutil

from bench.cpu_split import cpu_seconds
from bench.load import run_load
from bench.probe import stored_ids
from bench.server import free_port, start_server


def _postgres_pids(data_dir: Path) -> list[int]:
    pid_file = data_dir / "pg" / "postmaster.pid"
    postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
    return [postmaster.pid, *(c.pid for c in postmaster.children(recursive=True))]


def _per_pid(pids: list[int]) -> dict[int, float]:
    return {pid: cpu_seconds([pid]) for pid in pids}


def _measure(
    label: str,
    src: Path,
    args: argparse.Namespace,
    url: str,
    paths: list[str],
) -> dict[str, Any]:
    port = free_port()
    extra = {
        "PYTHONPATH": str(src.resolve()),
        "CMFHIR_AUDIT": "true" if args.audit == "on" else "false",
        "CMFHIR_POOL_SIZE": "8",
        "CMFHIR_WORKERS": "false",
    }
    server = start_server(
        args.data_dir / f"serve-{label}", port, 1, url, extra, separate_worker=False
    )
    try:
        base = server.base_url
        run_load(base, paths, args.connections, 1.0)  # warm caches and prepared statements
        pg_before = _per_pid(_postgres_pids(args.data_dir))
        serve_before = cpu_seconds(server.pids())
        result = run_load(base, paths, args.connections, args.seconds)
        serve = cpu_seconds(server.pids()) - serve_before
        pg_after = _per_pid(_postgres_pids(args.data_dir))
        postgres = sum(after - pg_before.get(pid, 0.0) for pid, after in pg_after.items())
    finally:
        server.stop()
    requests = max(1, result["requests"])
    return {
        "requests": result["requests"],
        "errors": result["errors"],
        "per_second": result["per_second"],
        "p99_ms": result["p99_ms"],
        "serve_ms": round(1000 * serve / requests, 4),
        "postgres_ms": round(1000 * postgres / requests, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.read_server_cost")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--a", type=Path, required=True, help="src/ of checkout A")
    parser.add_argument("--b", type=Path, required=True, help="src/ of checkout B")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--audit", choices=("on", "off"), default="off")
    parser.add_argument("--vread", action="store_true", help="GET Type/id/_history/1")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from cmfhir.store.database import embedded_url

    url = embedded_url(args.data_dir.resolve())
    ids = asyncio.run(stored_ids(url))
    suffix = "/_history/1" if args.vread else ""
    paths = [f"Patient/{i}{suffix}" for i in ids["Patient"][:500]]
    paths += [f"Encounter/{i}{suffix}" for i in ids["Encounter"][:500]]
    rows: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    for n in range(args.rounds):
        order = ("A", "B") if n % 2 == 0 else ("B", "A")
        for label in order:
            src = args.a if label == "A" else args.b
            row = _measure(label, src, args, url, paths)
            row["at"] = time.strftime("%H:%M:%S")
            row["load"] = round(os.getloadavg()[0], 1)
            rows[label].append(row)
            print(f"round {n + 1} {label} {json.dumps(row)}", flush=True)
    summary = {
        label: {
            key: round(statistics.fmean(r[key] for r in found), 4)
            for key in ("serve_ms", "postgres_ms", "per_second", "p99_ms")
        }
        for label, found in rows.items()
    }
    print(json.dumps(summary))
    if args.out:
        args.out.write_text(json.dumps({"rounds": rows, "mean": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()

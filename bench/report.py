"""Run metadata (commit, machine, PostgreSQL), the targets of issues #4 and #5 (soak) checked
against the figures, readable tables, and the results file (one JSON per run in
`bench/results/`)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "RESULTS_DIR",
    "check_targets",
    "git_commit",
    "machine",
    "print_json",
    "print_table",
    "write_results",
]

RESULTS_DIR = Path(__file__).with_name("results")
GIB = 1024**3


def git_commit() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return result.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty_src": bool(git("status", "--short", "src"))}


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(psutil.virtual_memory().total / GIB, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def print_json(name: str, figures: Any) -> None:
    print(json.dumps({"scenario": name, **({"result": figures})}, default=str))


def print_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))
    print()


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target (issues #4, #10, #11, #12 and the soak's) with the measured value and
    whether it is met."""
    checks: list[dict[str, Any]] = []

    def add(target: str, measured: Any, met: bool | None) -> None:
        checks.append({"target": target, "measured": measured, "met": met})

    ingest = results.get("scenarios", {}).get("ingest")
    if ingest:
        rate = ingest["http"]["resources_per_second"]
        add("ingest >= 3,000 resources/s", f"{rate:,.0f}/s", rate >= 3000)
        add(
            "ingest >= 5% of raw COPY",
            f"{ingest['percent_of_raw']}%",
            ingest["percent_of_raw"] >= 5,
        )
    for row in results.get("scenarios", {}).get("read", []):
        if row["connections"] == 16:
            add(
                f"{row['interaction']} >= 4,000 req/s at 16 clients",
                f"{row['per_second']:,.0f}/s",
                row["per_second"] >= 4000,
            )
            add(
                f"{row['interaction']} p99 <= 10 ms at 16",
                f"{row['p99_ms']} ms",
                row["p99_ms"] <= 10,
            )
    audit = results.get("scenarios", {}).get("audit")
    for row in audit["comparison"] if audit else []:
        if row["connections"] == 16:
            name = f"{row['interaction']} with audit at 16"
            add(f"{name}: p99 <= 10 ms", f"{row['p99_ms_on']} ms", row["p99_ms_on"] <= 10)
            change = row["throughput_change_percent"]
            add(
                f"{name}: throughput down <= 25%",
                f"{change}%",
                change is not None and change >= -25,
            )
    for row in results.get("scenarios", {}).get("search", []):
        if "server" not in row:
            add(f"search {row['query']}", row.get("status"), None)
            continue
        p99 = row["server"]["p99_ms"]
        add(f"search {row['query']} p99 <= 50 ms", f"{p99} ms", p99 <= 50)
        if "sql" not in row:  # the mixed load
            rate = row["server"]["per_second"]
            add(f"search {row['query']} >= 600/s", f"{rate:,.0f}/s", rate >= 600)
            continue
        ratio = row["p99_ratio"]
        add(f"search {row['query']} p99 <= 3x SQL", f"{ratio}x", ratio is not None and ratio <= 3)
    gaps = results.get("scenarios", {}).get("gaps")
    if isinstance(gaps, dict):
        p99 = gaps["lag"]["p99_ms"]
        add("gap lag p99 <= 1 s while ingesting", f"{p99} ms", p99 is not None and p99 <= 1000)
        rate = gaps["sweep"]["members_per_second"]
        add(
            "sweep of 10,000 members <= 60 s",
            f"{gaps['sweep']['seconds']} s for {gaps['members']:,} ({rate}/s)",
            rate is not None and rate >= 10_000 / 60,
        )
    soak = results.get("scenarios", {}).get("soak")
    for criterion in soak["criteria"] if soak else []:
        add(f"soak: {criterion['criterion']}", criterion["measured"], criterion["met"])
    memory = results.get("memory", {}).get("server_rss_max_mib")
    if memory is not None:
        add("server memory < 1 GiB", f"{memory} MiB", memory < 1024)
    return checks


def write_results(results: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{stamp}-{results['run']['members']}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path

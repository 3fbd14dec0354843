"""What a run prints: one JSON object and one table per scenario, then the memory, the
machine, the CPU split per phase, the profiles, GC pauses and the targets."""

from __future__ import annotations

import os
from typing import Any

from bench import report
from bench.load import load_tool

__all__ = ["print_read", "print_search", "print_soak", "print_summary"]


def print_read(rows: list[dict[str, Any]]) -> None:
    report.print_json("read", rows)
    report.print_table(
        f"read ({rows[0]['tool'] if rows else load_tool()})",
        ["interaction", "connections", "requests/s", "p50 ms", "p95 ms", "p99 ms", "errors"],
        [
            [r["interaction"], r["connections"], r["per_second"], r["p50_ms"], r["p95_ms"],
             r["p99_ms"], r["errors"]]
            for r in rows
        ],
    )  # fmt: skip


def print_audit(figures: dict[str, Any]) -> None:
    report.print_json("audit", figures)
    report.print_table(
        "read with the audit trail off and on (CPU: serving processes + PostgreSQL, per read)",
        ["interaction", "conns", "req/s off", "req/s on", "change", "p99 off", "p99 on",
         "CPU ms off", "CPU ms on"],
        [
            [c["interaction"], c["connections"], c["per_second_off"], c["per_second_on"],
             f"{c['throughput_change_percent']}%", c["p99_ms_off"], c["p99_ms_on"],
             c["cpu_ms_per_request_off"], c["cpu_ms_per_request_on"]]
            for c in figures["comparison"]
        ],
    )  # fmt: skip


def print_search(rows: list[dict[str, Any]]) -> None:
    report.print_json("search", rows)
    table = []
    for r in rows:
        if "server" not in r:
            table.append([r["query"], r["status"], "", "", "", "", "", ""])
            continue
        s = r["server"]
        if "sql" not in r:  # the mixed load: no one statement to compare with
            table.append([r["query"], "", s["per_second"], s["p50_ms"], s["p99_ms"], "", "", ""])
            continue
        q = r["sql"]
        table.append(
            [r["query"], "same" if r["same_page_as_sql"] else "DIFFERS", s["per_second"],
             s["p50_ms"], s["p99_ms"], q["p50_ms"], q["p99_ms"], f"{r['p99_ratio']}x"]
        )  # fmt: skip
    tool = next((r["server"]["tool"] for r in rows if "server" in r), load_tool())
    report.print_table(
        f"search (20 clients; server load via {tool}; SQL via asyncpg)",
        ["query", "vs SQL", "req/s", "p50 ms", "p99 ms", "SQL p50", "SQL p99", "p99/SQL"],
        table,
    )  # fmt: skip


def print_soak(soak: dict[str, Any]) -> None:
    report.print_json("soak", {k: v for k, v in soak.items() if k != "windows"})
    report.print_table(
        f"soak by kind, after warm-up ({soak['requests']:,} requests, {soak['per_second']}/s)",
        ["kind", "requests", "p50 ms", "p99 ms", "errors"],
        [[k, f["requests"], f["p50_ms"], f["p99_ms"], f["errors"]]
         for k, f in soak["by_kind"].items()],
    )  # fmt: skip
    control = soak.get("control", {}).get("by_detail", {})
    report.print_table(
        "soak p99 ms by request: first 5 min after warm-up, last 5 min, fresh server (control)",
        ["request", "first n", "first p99", "last n", "last p99", "control p99"],
        [[d, f["first"]["requests"], f["first"]["p99_ms"], f["last"]["requests"],
          f["last"]["p99_ms"], control.get(d, {}).get("p99_ms", "")]
         for d, f in soak["drift_by_detail"].items()],
    )  # fmt: skip
    if "control" in soak:
        c, latency = soak["control"], soak["latency"]
        print(
            f"soak p99: first {latency['first']['p99_ms']} ms, last {latency['last']['p99_ms']} "
            f"ms, fresh server on the grown database {c['p99_ms']} ms ({c['requests']} requests)"
        )
    report.print_table(
        "soak criteria (issue #5)",
        ["criterion", "measured", "met"],
        [[c["criterion"], c["measured"], "yes" if c["met"] else "NO"] for c in soak["criteria"]],
    )


def _cpu_phases(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every measured phase's CPU split: the load, each read and search row, the soak."""
    phases = list(results["cpu"].items())
    scenarios = results["scenarios"]
    for row in scenarios.get("read", []):
        phases.append((f"read {row['interaction']} x{row['connections']}", row["cpu"]))
    for row in scenarios.get("search", []):
        phases.append((f"search {row['query']}", row.get("cpu", {})))
    return [(name, split) for name, split in phases if split]


def print_summary(results: dict[str, Any]) -> None:
    memory = results["memory"]
    print(
        f"memory: server (uvicorn + workers) max RSS {memory['server_rss_max_mib']} MiB; "
        f"PostgreSQL max PSS {memory['postgres_pss_max_mib']} MiB"
    )
    machine, other = results["machine"], results["machine"]["other_processes"]
    print(
        f"machine: load average {machine['load_average_at_start'][0]} at start, "
        f"{machine['load_average_at_end'][0]} at end (the run's own processes included); "
        f"other processes used {other['cpu_seconds']} CPU-s in {other['run_seconds']} s "
        f"({other['percent_of_machine']}% of the machine)"
    )
    groups = ("server", "background_worker", "postgres", "harness_and_load", "other")
    report.print_table(
        f"CPU by process group, % of the machine ({os.cpu_count()} cores)",
        ["phase", "seconds", *groups, "each worker, % of a core"],
        [
            [
                name,
                split["seconds"],
                *(split.get(g, {}).get("percent_of_machine", "") for g in groups),
                " / ".join(str(x) for x in split.get("worker_percent_of_core", [])),
            ]
            for name, split in _cpu_phases(results)
        ],
    )
    for worker, gc in results.get("gc_pauses", {}).items():
        print(
            f"gc {worker}: {gc['gen2_collections']} full collections, median "
            f"{gc['gen2_pause_median_ms']} ms, max {gc['gen2_pause_max_ms']} ms; "
            f"{gc['gc_pause_total_s']} s in all collections logged"
            + (f"; {gc['frozen_objects']:,} objects frozen" if gc["frozen_objects"] else "")
        )
    for name, figures in results.get("profile", {}).items():
        report.print_table(
            f"py-spy profile of the server workers during {name} ({figures['samples']} samples)",
            ["self %", "function", "inclusive %", "cmfhir function"],
            [
                [s["percent"], s["function"], i["percent"], i["function"]]
                for s, i in zip(figures["self"], figures["inclusive_cmfhir"], strict=False)
            ],
        )
    report.print_table(
        f"targets (commit {results['git']['commit'][:10]})",
        ["target", "measured", "met"],
        [
            [t["target"], t["measured"], {True: "yes", False: "NO", None: "-"}[t["met"]]]
            for t in results["targets"]
        ],
    )

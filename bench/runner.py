"""One benchmark run: generate the caseload, start the server on a fresh data directory,
run the selected scenarios while sampling memory, then report and store the figures."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import report
from bench.caseload import Staff, make_staff, member_bundles, staff_bundle
from bench.cpu_split import cpu_split
from bench.gc_pauses import gc_env, summarize_gc
from bench.ingest import post_bundle, raw_copy, send_bundles, serialize
from bench.load import WRK_INSTALL_HINT, load_tool
from bench.other_load import OtherLoad
from bench.profile import profiled, summarize_profile
from bench.queries import build_samples
from bench.read import run_read
from bench.search import run_search
from bench.server import MemorySampler, Server, free_port, start_server
from bench.soak import SoakOptions, run_soak
from bench.synthea import load_synthea, synthea_bundle

__all__ = ["NOT_AVAILABLE", "SCENARIOS", "STANDARD_SCENARIOS", "Options", "run"]

STANDARD_SCENARIOS = ("ingest", "read", "search", "gaps", "export")
SCENARIOS = (*STANDARD_SCENARIOS, "soak")  # the soak runs only when asked for
NOT_AVAILABLE = {
    "gaps": "not available: the gap engine does not exist yet",
    "export": "not available: bulk $export does not exist yet",
}
MIB = 1024**2


@dataclass(frozen=True)
class Options:
    members: int
    seed: int
    scenarios: tuple[str, ...]
    concurrency: int
    workers: int
    read_seconds: float
    search_seconds: float
    data_root: Path
    keep_data: bool
    database_url: str | None
    synthea: Path | None
    profile: tuple[str, ...]
    quick: bool
    gzip: bool = False
    fresh_connections: bool = False
    server_gc: str | None = None  # "log" or "freeze": see bench/gc_pauses.py
    soak: SoakOptions = field(default_factory=SoakOptions)


def _profile_context(
    options: Options, scenario: str, server: Server, out_dir: Path
) -> AbstractContextManager[list[Path] | None]:
    if scenario not in options.profile:
        return nullcontext()
    return profiled(server.worker_pids(), out_dir, scenario)


def _profile_dir(options: Options, stamp: str) -> Path:
    """Raw py-spy stacks outlive the run's data directory."""
    return (options.data_root / f"profile-{stamp}").resolve()


def _generate(options: Options) -> tuple[list[bytes], list[int], list[str], float]:
    started = time.perf_counter()
    bundles: Iterator[dict[str, Any]]
    if options.synthea is not None:
        sources = load_synthea(options.synthea)
        bundles = (synthea_bundle(sources[n % len(sources)], n) for n in range(options.members))
    else:
        bundles = member_bundles(options.seed, options.members, make_staff(options.members))
    payloads, counts, raw = serialize(bundles)
    return payloads, counts, raw, time.perf_counter() - started


async def _postgres_version(database_url: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        version: str = await conn.fetchval("SELECT version()")
        await conn.execute("ANALYZE")  # as an operator would after a bulk load
        return version
    finally:
        await conn.close()


def _ingest_figures(
    options: Options, server: Server, http: dict[str, Any], raw: list[str]
) -> dict[str, Any]:
    """The HTTP figures beside a raw COPY of the same JSON, run right after."""
    if http["failed_bundles"]:
        print(f"warning: {http['failed_bundles']} bundles failed; first: {http['first_failure']}")
    raw_figures = asyncio.run(raw_copy(server.database_url, raw))
    percent = 100 * http["resources_per_second"] / raw_figures["resources_per_second"]
    figures = {"http": http, "raw_copy": raw_figures, "percent_of_raw": round(percent, 1)}
    report.print_json("ingest", figures)
    report.print_table(
        "ingest",
        ["path", "resources", "seconds", "resources/s", "bundle p50 ms", "bundle p99 ms"],
        [
            [f"HTTP transactions ({options.concurrency} clients)", http["resources"],
             http["seconds"], http["resources_per_second"], http["bundle_p50_ms"],
             http["bundle_p99_ms"]],
            ["raw COPY into bench_raw(jsonb)", raw_figures["resources"], raw_figures["seconds"],
             raw_figures["resources_per_second"], "", ""],
            ["HTTP as % of raw", "", "", f"{figures['percent_of_raw']}%", "", ""],
        ],
    )  # fmt: skip
    return figures


def _print_read(rows: list[dict[str, Any]]) -> None:
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


def _print_search(rows: list[dict[str, Any]]) -> None:
    report.print_json("search", rows)
    table = []
    for r in rows:
        if "server" not in r:
            table.append([r["query"], r["status"], "", "", "", "", "", ""])
            continue
        s, q = r["server"], r["sql"]
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


def _print_soak(soak: dict[str, Any]) -> None:
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


def _after_load(
    options: Options,
    server: Server,
    stamp: str,
    staff: Staff,
    ids: dict[str, list[str]],
    results: dict[str, Any],
    other: OtherLoad,
) -> dict[str, list[Path]]:
    """The scenarios that run against the loaded caseload; their py-spy files by name."""
    profiles: dict[str, list[Path]] = {}
    profile_dir = _profile_dir(options, stamp)
    meter = functools.partial(cpu_split, server, other)
    if "read" in options.scenarios:
        with _profile_context(options, "read", server, profile_dir) as files:
            rows = run_read(server.base_url, ids, options.read_seconds, options.seed, meter)
        profiles["read"] = files or []
        results["scenarios"]["read"] = rows
        _print_read(rows)
    samples = (
        asyncio.run(build_samples(server.database_url, staff, ids, options.members, options.seed))
        if {"search", "soak"} & set(options.scenarios)
        else {}
    )
    if "search" in options.scenarios:
        with _profile_context(options, "search", server, profile_dir) as files:
            rows = asyncio.run(
                run_search(
                    server.base_url, server.database_url, samples, options.search_seconds, meter
                )
            )
        profiles["search"] = files or []
        results["scenarios"]["search"] = rows
        _print_search(rows)
    if "soak" in options.scenarios:
        with _profile_context(options, "soak", server, profile_dir) as files:
            soak = asyncio.run(run_soak(server, ids, samples, staff, options.soak, other, meter))
        results["cpu"]["soak"] = soak["cpu"]
        profiles["soak"] = files or []
        results["scenarios"]["soak"] = soak
        _print_soak(soak)
    for name in ("gaps", "export"):
        if name in options.scenarios:
            results["scenarios"][name] = NOT_AVAILABLE[name]
            report.print_json(name, NOT_AVAILABLE[name])
    return profiles


def _other_figures(other: OtherLoad, seconds: float) -> dict[str, float]:
    """Other processes' CPU over the run, also as a share of the machine's capacity."""
    cpu = other.cpu_seconds()
    capacity = seconds * (os.cpu_count() or 1)
    return {
        "cpu_seconds": round(cpu, 1),
        "run_seconds": round(seconds, 1),
        "percent_of_machine": round(100 * cpu / capacity, 1) if capacity else 0.0,
    }


def run(options: Options) -> dict[str, Any]:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    data_dir = (options.data_root / f"run-{stamp}").resolve()
    if os.getloadavg()[0] > 1.0:
        print(
            f"warning: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores before "
            "the run; other work on this machine will distort the figures"
        )
    if load_tool() != "wrk" and {"read", "search"} & set(options.scenarios):
        print(f"{WRK_INSTALL_HINT}; using the httpx fallback load generator")
    source = f"synthea:{options.synthea}" if options.synthea else "synthetic caseload"
    print(f"generating {options.members:,} members ({source}, seed {options.seed}) ...")
    payloads, counts, raw, generate_s = _generate(options)
    print(f"  {sum(counts):,} resources in {len(payloads):,} bundles, {generate_s:.1f} s")

    results: dict[str, Any] = {
        "run": {
            "started": stamp,
            "members": options.members,
            "seed": options.seed,
            "source": source,
            "resources": sum(counts),
            "scenarios": list(options.scenarios),
            "server_workers": options.workers,
            "quick": options.quick,
            "load_tool": load_tool(),
            "profiled": list(options.profile),
            "httpx_accept_encoding": "gzip, deflate" if options.gzip else "identity",
        },
        "git": report.git_commit(),
        "machine": report.machine(),
        "scenarios": {},
        "cpu": {},
    }
    gc_dir = data_dir / "gc"
    server_env = gc_env(gc_dir, options.server_gc) if options.server_gc else None
    server = start_server(data_dir, free_port(), options.workers, options.database_url, server_env)
    profiles: dict[str, list[Path]] = {}
    started = time.monotonic()
    load_label = "ingest" if "ingest" in options.scenarios else "load (untimed)"
    try:
        with MemorySampler(server) as memory, OtherLoad(server.postgres_pids) as other:
            staff = make_staff(options.members)
            if options.synthea is None:
                post_bundle(server.base_url, staff_bundle(staff))
            with _profile_context(options, "ingest", server, _profile_dir(options, stamp)) as files:
                with cpu_split(server, other) as results["cpu"][load_label]:
                    http, ids = asyncio.run(
                        send_bundles(
                            server.base_url,
                            payloads,
                            counts,
                            options.concurrency,
                            gzip=options.gzip,
                            fresh_connections=options.fresh_connections,
                        )
                    )
                if "ingest" in options.scenarios:
                    results["scenarios"]["ingest"] = _ingest_figures(options, server, http, raw)
                profiles["ingest"] = files or []
            del payloads, raw
            results["postgres"] = asyncio.run(_postgres_version(server.database_url))
            profiles |= _after_load(options, server, stamp, staff, ids, results, other)
            memory.sample()
    finally:
        server.stop()
    results["machine"]["other_processes"] = _other_figures(other, time.monotonic() - started)
    if options.server_gc:
        results["run"]["server_gc"] = options.server_gc
        results["gc_pauses"] = summarize_gc(gc_dir)
    results["memory"] = {
        "server_rss_max_mib": round(memory.max_server_rss / MIB),
        "postgres_pss_max_mib": round(memory.max_postgres_pss / MIB),
    }
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["profile"] = {
        name: summarize_profile(files) for name, files in profiles.items() if files
    }
    results["targets"] = report.check_targets(results)
    _print_summary(results)
    path = report.write_results(results)
    print(f"results: {path}")
    if not options.keep_data and options.database_url is None:
        shutil.rmtree(data_dir, ignore_errors=True)
    return results


def _cpu_phases(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every measured phase's CPU split: the load, each read and search row, the soak."""
    phases = list(results["cpu"].items())
    scenarios = results["scenarios"]
    for row in scenarios.get("read", []):
        phases.append((f"read {row['interaction']} x{row['connections']}", row["cpu"]))
    for row in scenarios.get("search", []):
        phases.append((f"search {row['query']}", row.get("cpu", {})))
    return [(name, split) for name, split in phases if split]


def _print_summary(results: dict[str, Any]) -> None:
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
    groups = ("server", "postgres", "harness_and_load", "other")
    report.print_table(
        f"CPU by process group, % of the machine ({os.cpu_count()} cores)",
        ["phase", "seconds", *groups, "each worker, % of a core"],
        [
            [
                name,
                split["seconds"],
                *(split[g]["percent_of_machine"] for g in groups),
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

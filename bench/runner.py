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

from bench import printout, report
from bench.audit import run_audit
from bench.caseload import Staff, make_staff, member_bundles, staff_bundle
from bench.cpu_split import cpu_split
from bench.export import run_exchange
from bench.gaps import GAP_RULES, LagProbe, run_gaps
from bench.gc_pauses import gc_env, summarize_gc
from bench.ingest import post_bundle, raw_copy, send_bundles, serialize
from bench.load import WRK_INSTALL_HINT, load_tool
from bench.other_load import OtherLoad
from bench.profile import profiled, summarize_profile
from bench.queries import build_samples
from bench.read import run_read
from bench.reports import run_narrowed_reports, run_reports
from bench.search import run_search
from bench.server import MemorySampler, Server, free_port, start_server
from bench.soak import SoakOptions, run_soak
from bench.synthea import load_synthea, synthea_bundle

__all__ = ["SCENARIOS", "STANDARD_SCENARIOS", "Options", "run"]

STANDARD_SCENARIOS = ("ingest", "read", "search", "gaps", "export", "import", "reports")
# The soak and the audit comparison run only when asked for.
SCENARIOS = (*STANDARD_SCENARIOS, "audit", "soak")
MIB = 1024**2
# The phases measured against the loaded caseload that background work would distort.
_MEASURED_AFTER_LOAD = {"read", "audit", "search", "soak"}


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
    audit: str = "on"  # the run's server's audit trail (CMFHIR_AUDIT); `audit` compares both
    # Where the background workers run: "apart" (`cmfhir worker` beside `serve --no-workers`)
    # or "in" (inside the serve workers, the server's default).
    background: str = "apart"
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


def _after_load(
    options: Options,
    server: Server,
    stamp: str,
    staff: Staff,
    ids: dict[str, list[str]],
    results: dict[str, Any],
    other: OtherLoad,
    probe: LagProbe | None = None,
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
        printout.print_read(rows)
    if "audit" in options.scenarios:
        figures = run_audit(server, ids, options.read_seconds, options.seed, other, options.workers)
        results["scenarios"]["audit"] = figures
        printout.print_audit(figures)
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
        printout.print_search(rows)
    if "soak" in options.scenarios:
        with _profile_context(options, "soak", server, profile_dir) as files:
            soak = asyncio.run(run_soak(server, ids, samples, staff, options.soak, other, meter))
        results["cpu"]["soak"] = soak["cpu"]
        profiles["soak"] = files or []
        results["scenarios"]["soak"] = soak
        printout.print_soak(soak)
    if "reports" in options.scenarios:
        root = server.base_url.removesuffix("/fhir")
        rows = run_reports(root, staff.agency)
        rows += run_narrowed_reports(root, server.database_url, server.data_dir, staff.agency)
        results["scenarios"]["reports"] = rows
        report.print_table(
            "reports (each under 2 s for the whole organization)",
            list(rows[0]),
            [list(r.values()) for r in rows],
        )
    if "gaps" in options.scenarios:
        figures = run_gaps(server.database_url, str(server.data_dir), probe)
        results["scenarios"]["gaps"] = figures
        report.print_json("gaps", figures)
    if {"export", "import"} & set(options.scenarios):
        results["scenarios"] |= run_exchange(server, options.scenarios, results["scenarios"])
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
            "audit": options.audit,
            "background_workers": options.background,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "git": report.git_commit(),
        "machine": report.machine(),
        "scenarios": {},
        "cpu": {},
    }
    gc_dir = data_dir / "gc"
    server_env = gc_env(gc_dir, options.server_gc) if options.server_gc else {}
    if "gaps" in options.scenarios:
        server_env["CMFHIR_GAP_RULES"] = GAP_RULES
    server_env["CMFHIR_AUDIT"] = "true" if options.audit == "on" else "false"
    server = start_server(
        data_dir,
        free_port(),
        options.workers,
        options.database_url,
        server_env,
        separate_worker=options.background == "apart",
    )
    profiles: dict[str, list[Path]] = {}
    started = time.monotonic()
    load_label = "ingest" if "ingest" in options.scenarios else "load (untimed)"
    try:
        with MemorySampler(server) as memory, OtherLoad(server.postgres_pids) as other:
            staff = make_staff(options.members)
            if options.synthea is None:
                post_bundle(server.base_url, staff_bundle(staff))
            probe = LagProbe(server.base_url) if "gaps" in options.scenarios else None
            with _profile_context(options, "ingest", server, _profile_dir(options, stamp)) as files:
                with (
                    cpu_split(server, other) as results["cpu"][load_label],
                    probe or nullcontext(),
                ):
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
            if _MEASURED_AFTER_LOAD & set(options.scenarios):
                # The gap engine and the other consumers finish what the load left them
                # before reads and searches are measured, so those phases measure the API.
                with cpu_split(server, other) as results["cpu"]["catch-up"]:
                    results["run"]["catch_up_seconds"] = server.catch_up()
                print(f"background workers caught up in {results['run']['catch_up_seconds']} s")
            profiles |= _after_load(options, server, stamp, staff, ids, results, other, probe)
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
    printout.print_summary(results)
    path = report.write_results(results)
    print(f"results: {path}")
    if not options.keep_data and options.database_url is None:
        shutil.rmtree(data_dir, ignore_errors=True)
    return results

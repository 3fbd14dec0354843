"""Scenario `audit`: the read scenario twice on the loaded database, with the audit trail
off and then on (issue 12: p99 still <= 10 ms, throughput down <= 25%), each on a server of
its own started for it with `CMFHIR_AUDIT` set and no background workers (and warmed up by
one untimed second of load), while the run's server idles. Beside requests/s and latency,
the CPU each read cost (the serving processes, the run's server and PostgreSQL, per
request), which stays meaningful on a loaded machine where the rates do not."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.cpu_split import cpu_seconds, cpu_split
from bench.load import run_load
from bench.other_load import OtherLoad
from bench.read import run_read
from bench.server import Server, free_port, start_server

__all__ = ["compare_audit", "run_audit"]


def run_audit(
    server: Server,
    ids: dict[str, list[str]],
    seconds: float,
    seed: int,
    other: OtherLoad,
    workers: int,
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for audit in ("off", "on"):
        sibling = start_server(
            server.data_dir / f"audit-{audit}",
            free_port(),
            workers=workers,
            database_url=server.database_url,
            extra_env={"CMFHIR_AUDIT": "true" if audit == "on" else "false",
                       "CMFHIR_WORKERS": "false"},
        )  # fmt: skip
        try:
            # Untimed: the new server's connections, caches and first garbage collections.
            run_load(sibling.base_url, _warm_paths(ids), 16, 1.0)

            @contextmanager
            def meter(sibling: Server = sibling) -> Iterator[dict[str, Any]]:
                figures: dict[str, Any] = {}
                before = _used(sibling, server)
                with cpu_split(sibling, other) as serving:
                    yield figures
                figures.update(serving)
                # Unrounded (cpu_split rounds to 0.1 s, too coarse for a short phase): the
                # serving server, the idle run's server and the run's PostgreSQL.
                figures["cpu_seconds_serving_and_postgres"] = round(
                    _used(sibling, server) - before, 4
                )

            for row in run_read(sibling.base_url, ids, seconds, seed, meter):
                used = row["cpu"]["cpu_seconds_serving_and_postgres"]
                per = 1000 * used / row["requests"] if row["requests"] else None
                rows.append(
                    {"audit": audit, **row, "cpu_ms_per_request": round(per, 2) if per else None}
                )
        finally:
            sibling.stop()
    return {"rows": rows, "comparison": compare_audit(rows)}


def _warm_paths(ids: dict[str, list[str]]) -> list[str]:
    return [f"{kind}/{id}" for kind in ("Patient", "Encounter") for id in ids.get(kind, [])[:200]]


def _used(sibling: Server, server: Server) -> float:
    """CPU seconds so far of both servers and of PostgreSQL (its reaped backends too)."""
    postgres = server.postgres_pids()
    return (
        cpu_seconds(sibling.pids())
        + cpu_seconds(server.pids())
        + cpu_seconds(postgres[:1], reaped=True)
        + cpu_seconds(postgres[1:])
    )


def compare_audit(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per interaction and connection count: audit on against off."""
    off = {(r["interaction"], r["connections"]): r for r in rows if r["audit"] == "off"}
    out = []
    for r in rows:
        base = off.get((r["interaction"], r["connections"]))
        if r["audit"] != "on" or base is None:
            continue
        change = (
            round(100 * (r["per_second"] - base["per_second"]) / base["per_second"], 1)
            if base["per_second"]
            else None
        )
        out.append(
            {
                "interaction": r["interaction"],
                "connections": r["connections"],
                "per_second_off": base["per_second"],
                "per_second_on": r["per_second"],
                "throughput_change_percent": change,
                "p99_ms_off": base["p99_ms"],
                "p99_ms_on": r["p99_ms"],
                "cpu_ms_per_request_off": base["cpu_ms_per_request"],
                "cpu_ms_per_request_on": r["cpu_ms_per_request"],
            }
        )
    return out

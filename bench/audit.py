"""Scenario `audit`: the read scenario twice on the loaded database, with the audit trail
off and then on (issue 12: p99 still <= 10 ms, throughput down <= 25%), each on a server of
its own started for it with `CMFHIR_AUDIT` set and no background workers, while the run's
server idles. Beside requests/s and latency, the CPU each read cost (the serving processes,
the run's server and PostgreSQL, per request), which stays meaningful on a loaded machine
where the rates do not."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.cpu_split import cpu_split
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

            @contextmanager
            def meter(sibling: Server = sibling) -> Iterator[dict[str, Any]]:
                figures: dict[str, Any] = {}
                with cpu_split(sibling, other) as serving, cpu_split(server, other) as idle:
                    yield figures
                figures.update(serving)
                figures["run_server"] = idle["server"]

            for row in run_read(sibling.base_url, ids, seconds, seed, meter):
                cpu = row["cpu"]
                used = (
                    cpu["server"]["cpu_seconds"]
                    + cpu["run_server"]["cpu_seconds"]
                    + cpu["postgres"]["cpu_seconds"]
                )
                per = 1000 * used / row["requests"] if row["requests"] else None
                rows.append(
                    {"audit": audit, **row, "cpu_ms_per_request": round(per, 2) if per else None}
                )
        finally:
            sibling.stop()
    return {"rows": rows, "comparison": compare_audit(rows)}


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

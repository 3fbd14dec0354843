"""Scenario `audit`: reads of the loaded database with the audit trail off and on (issue 12:
p99 still <= 10 ms, throughput down <= 25%), each side on a server of its own started for it
with `CMFHIR_AUDIT` set and no background workers (warmed up by one untimed second of load),
while the run's server idles. The two sides take turns phase by phase (each interaction and
connection count, `ROUNDS` times, the order swapped each round), so a machine whose speed
drifts during the run (a shared virtual machine) slows both alike; a side's figures are its
rounds together (requests over time, CPU over requests, the mean of the rounds' latency
percentiles). Beside requests/s and latency, the CPU each read cost (the serving processes,
the run's server and PostgreSQL, per request), which stays meaningful on a loaded machine
where the rates do not."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from bench.cpu_split import cpu_seconds, cpu_split
from bench.load import run_load
from bench.other_load import OtherLoad
from bench.read import CONNECTIONS, read_paths
from bench.scratch import fetch_row
from bench.server import Server, free_port, start_server

__all__ = ["compare_audit", "run_audit"]

SIDES = ("off", "on")
ROUNDS = 2


def run_audit(
    server: Server,
    ids: dict[str, list[str]],
    seconds: float,
    seed: int,
    other: OtherLoad,
    workers: int,
) -> dict[str, Any]:
    with ExitStack() as stack:
        siblings: dict[str, Server] = {}
        for audit in SIDES:
            sibling = start_server(
                server.data_dir / f"audit-{audit}",
                free_port(),
                workers=workers,
                database_url=server.database_url,
                extra_env={"CMFHIR_AUDIT": "true" if audit == "on" else "false",
                           "CMFHIR_WORKERS": "false"},
            )  # fmt: skip
            stack.callback(sibling.stop)
            siblings[audit] = sibling
        for sibling in siblings.values():
            # Untimed: the new server's connections, caches and first garbage collections.
            run_load(sibling.base_url, _warm_paths(ids), 16, 1.0)
        rows: list[dict[str, Any]] = []
        # After each phase: what PostgreSQL has done for the trail's table so far.
        upkeep: list[dict[str, Any]] = [{"interaction": None, **_upkeep(server.database_url)}]
        for kind, paths in read_paths(ids, seed):
            for connections in CONNECTIONS:
                phases: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
                for n in range(ROUNDS):
                    for side in SIDES if n % 2 == 0 else SIDES[::-1]:
                        sibling = siblings[side]
                        with _meter(sibling, server, other) as figures:
                            result = run_load(sibling.base_url, paths, connections, seconds)
                        phases[side].append({**result, "cpu": figures})
                upkeep.append(
                    {"interaction": f"GET {kind}/{{id}}", "connections": connections,
                     **_upkeep(server.database_url)}
                )  # fmt: skip
                for side in SIDES:
                    rows.append(
                        {
                            "audit": side,
                            "interaction": f"GET {kind}/{{id}}",
                            **_joined(phases[side]),
                        }
                    )
    return {"rows": rows, "comparison": compare_audit(rows), "upkeep": upkeep}


_UPKEEP = """
    SELECT (SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'audit_event'),
           (SELECT autovacuum_count FROM pg_stat_user_tables WHERE relname = 'audit_event'),
           (SELECT autoanalyze_count FROM pg_stat_user_tables WHERE relname = 'audit_event'),
           (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter),
           pg_current_wal_lsn() - '0/0'::pg_lsn
"""


def _upkeep(database_url: str) -> dict[str, Any]:
    """Events stored, autovacuums and autoanalyzes of `audit_event`, checkpoints and WAL
    bytes so far: the table's upkeep, which a phase's CPU includes when it falls in it."""

    row = asyncio.run(fetch_row(database_url, _UPKEEP))
    assert row is not None
    names = ("events", "autovacuums", "autoanalyzes", "checkpoints", "wal_bytes")
    return {name: (int(v) if v is not None else None) for name, v in zip(names, row, strict=True)}


@contextmanager
def _meter(sibling: Server, server: Server, other: OtherLoad) -> Iterator[dict[str, Any]]:
    figures: dict[str, Any] = {}
    before = _used(sibling, server)
    with cpu_split(sibling, other) as serving:
        yield figures
    figures.update(serving)
    # Unrounded (cpu_split rounds to 0.1 s, too coarse for a short phase): the serving
    # server, the idle run's server and the run's PostgreSQL.
    figures["cpu_seconds_serving_and_postgres"] = round(_used(sibling, server) - before, 4)


def _joined(phases: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's rounds of a phase as one row."""
    requests = sum(p["requests"] for p in phases)
    elapsed = sum(p["requests"] / p["per_second"] for p in phases if p["per_second"])
    used = sum(p["cpu"]["cpu_seconds_serving_and_postgres"] for p in phases)
    row: dict[str, Any] = {
        "tool": phases[0]["tool"],
        "connections": phases[0]["connections"],
        "rounds": len(phases),
        "requests": requests,
        "per_second": round(requests / elapsed, 1) if elapsed else 0.0,
        "errors": sum(p["errors"] for p in phases),
        "per_second_by_round": [p["per_second"] for p in phases],
        "cpu": {
            "cpu_seconds_serving_and_postgres": round(used, 4),
            "rounds": [p["cpu"] for p in phases],
        },
        "cpu_ms_per_request": round(1000 * used / requests, 2) if requests else None,
    }
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        row[key] = round(sum(p[key] for p in phases) / len(phases), 2)
    return row


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

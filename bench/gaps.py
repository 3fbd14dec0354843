"""Scenario gaps: the care-gap engine under load. The server runs its workers in-process
(`cmfhir serve`'s default) with the rules named by BENCH_GAP_RULES (default
`bench.gap_probe`: one gap per member with an Encounter), so the ingest scenario's load is
also the engine's.

- lag: for each member, from the stamp of the transaction that wrote them (taken inside
  it, just before its commit: this slightly overstates) to the stamp of their first
  DetectedIssue, while the caseload is ingested at full rate; p50/p99/max.
- sweep: `cmfhir gaps sweep` over every member (queued, then evaluated by the command and
  the server's own evaluators together) timed to the end, as members/s.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import asyncpg

from bench.stats import percentile

__all__ = ["GAP_RULES", "run_gaps"]

GAP_RULES = os.environ.get("BENCH_GAP_RULES", "bench.gap_probe")
_SETTLE_TIMEOUT_S = 600.0

_BEHIND = """
SELECT (SELECT count(*) FROM gap_member)
     + (SELECT count(*) FROM event e, consumer c
        WHERE c.name = 'gaps' AND (e.xid, e.seq) > (c.xid, c.seq))
"""
_LAGS = """
SELECT extract(epoch FROM d.last_updated - p.last_updated)
FROM resource_history d
JOIN resource_history p
  ON p.resource_type = 'Patient' AND p.version = 1
 AND 'Patient/' || p.id = d.content->'patient'->>'reference'
WHERE d.resource_type = 'DetectedIssue' AND d.version = 1
"""


async def _settle(database_url: str) -> float:
    """Wait until the engine has read every event and evaluated every queued member."""
    conn = await asyncpg.connect(database_url)
    started = time.perf_counter()
    try:
        while await conn.fetchval(_BEHIND):
            if time.perf_counter() - started > _SETTLE_TIMEOUT_S:
                raise RuntimeError("the gap engine did not catch up")
            await asyncio.sleep(0.1)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def _lags(database_url: str) -> tuple[list[float], int]:
    conn = await asyncpg.connect(database_url)
    try:
        lags = [float(r[0]) for r in await conn.fetch(_LAGS)]
        members = await conn.fetchval(
            "SELECT count(*) FROM resource WHERE resource_type = 'Patient' AND NOT deleted"
        )
        return lags, int(members)
    finally:
        await conn.close()


def _sweep(database_url: str, data_dir: str) -> tuple[float, str]:
    env = dict(
        os.environ,
        CMFHIR_DATABASE_URL=database_url,
        CMFHIR_DATA_DIR=data_dir,
        CMFHIR_GAP_RULES=GAP_RULES,
        CMFHIR_LOG_LEVEL="warning",
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cmfhir", "gaps", "sweep"],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"cmfhir gaps sweep failed: {done.stderr[-2000:]}")
    return seconds, done.stdout.strip()


def run_gaps(database_url: str, data_dir: str) -> dict[str, Any]:
    """The figures of the gap scenario (after the ingest scenario loaded the caseload)."""
    settle_s = asyncio.run(_settle(database_url))
    lags, members = asyncio.run(_lags(database_url))
    ordered = sorted(lags)
    sweep_s, said = _sweep(database_url, data_dir)
    asyncio.run(_settle(database_url))
    return {
        "rules": GAP_RULES,
        "members": members,
        "lag": {
            "members_with_a_gap": len(lags),
            "p50_ms": round(percentile(ordered, 50) * 1000, 1) if ordered else None,
            "p99_ms": round(percentile(ordered, 99) * 1000, 1) if ordered else None,
            "max_ms": round(ordered[-1] * 1000, 1) if ordered else None,
            "settled_after_ingest_s": round(settle_s, 1),
        },
        "sweep": {
            "seconds": round(sweep_s, 1),
            "members_per_second": round(members / sweep_s, 1) if sweep_s else None,
            "command_said": said,
        },
    }

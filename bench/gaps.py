"""Scenario gaps: the care-gap engine under load. The server runs its workers in-process
(`cmfhir serve`'s default) with the rules named by BENCH_GAP_RULES (default
`bench.gap_probe`: one gap per member with an Encounter), so the ingest scenario's load is
also the engine's.

- lag (`LagProbe`): while the caseload is ingested at full rate, a probe client writes an
  Encounter for its own member twice a second and polls that member's DetectedIssue until
  it cites the new Encounter: from the write's response (its commit is done) to the first
  answer showing the gap updated, as a client sees it (polled every 20 ms); p50/p99/max.
- sweep: `cmfhir gaps sweep` over every member (queued, then evaluated by the command and
  the server's own evaluators together) timed to the end, as members/s.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from bench.stats import percentile
from cmfhir.gaps.detected_issue import issue_id

__all__ = ["GAP_RULES", "LagProbe", "run_gaps"]

GAP_RULES = os.environ.get("BENCH_GAP_RULES", "bench.gap_probe")
_SETTLE_TIMEOUT_S = 600.0

_BEHIND = """
SELECT (SELECT count(*) FROM gap_member)
     + (SELECT count(*) FROM event e, consumer c
        WHERE c.name = 'gaps' AND (e.xid, e.seq) > (c.xid, c.seq))
"""


class LagProbe:
    """Measures commit → DetectedIssue lag from a client's side while other load runs."""

    def __init__(self, base_url: str, *, interval: float = 0.5, give_up: float = 120.0) -> None:
        self.base_url = base_url
        self.interval = interval
        self.give_up = give_up
        self.lags: list[float] = []
        self.lost = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gap-lag-probe", daemon=True)

    def __enter__(self) -> LagProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.give_up + 10)

    def _encounter(self, patient: str) -> dict[str, Any]:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": patient},
            "period": {"start": now, "end": now},
        }

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60) as http:
            made = http.post("Patient", json={"resourceType": "Patient"})
            made.raise_for_status()
            patient_id = made.json()["id"]
            issue = f"DetectedIssue/{issue_id(f'{patient_id}/bench-probe')}"
            while not self._stop.is_set():
                response = http.post("Encounter", json=self._encounter(f"Patient/{patient_id}"))
                committed = time.perf_counter()
                if response.status_code != 201:
                    self.lost += 1
                    continue
                wanted = f"Encounter/{response.json()['id']}"
                while True:
                    found = http.get(issue)
                    if found.status_code == 200 and wanted in found.text:
                        self.lags.append(time.perf_counter() - committed)
                        break
                    if time.perf_counter() - committed > self.give_up:
                        self.lost += 1
                        break
                    time.sleep(0.02)
                self._stop.wait(self.interval)

    def figures(self) -> dict[str, Any]:
        """The lags' quantiles; also the first probe's and which probe was the slowest (a
        slow first one is the engine still starting, not its lag)."""
        ordered = sorted(self.lags)
        slowest = max(range(len(self.lags)), key=self.lags.__getitem__) if self.lags else None
        return {
            "first_ms": round(self.lags[0] * 1000, 1) if self.lags else None,
            "slowest_probe": slowest,
            "probes": len(ordered),
            "gave_up": self.lost,
            "p50_ms": round(percentile(ordered, 50) * 1000, 1) if ordered else None,
            "p99_ms": round(percentile(ordered, 99) * 1000, 1) if ordered else None,
            "max_ms": round(ordered[-1] * 1000, 1) if ordered else None,
        }


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


async def _members(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM resource WHERE resource_type = 'Patient' AND NOT deleted"
            )
        )
    finally:
        await conn.close()


def run_gaps(database_url: str, data_dir: str, probe: LagProbe | None) -> dict[str, Any]:
    """The figures of the gap scenario: the probe's (run during ingest), then the sweep."""
    settle_s = asyncio.run(_settle(database_url))
    members = asyncio.run(_members(database_url))
    sweep_s, said = _sweep(database_url, data_dir)
    asyncio.run(_settle(database_url))
    lag = probe.figures() if probe is not None else {"p99_ms": None}
    return {
        "rules": GAP_RULES,
        "members": members,
        "lag": {**lag, "settled_after_ingest_s": round(settle_s, 1)},
        "sweep": {
            "seconds": round(sweep_s, 1),
            "members_per_second": round(members / sweep_s, 1) if sweep_s else None,
            "command_said": said,
        },
    }

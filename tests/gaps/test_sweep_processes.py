"""`cmfhir gaps sweep --processes N`: the members are shared between the command and the
processes it starts (each leasing batches from the queue), every member is evaluated once,
no DetectedIssue is written twice, and the result is what a sweep in one process leaves
(sweeping again in one process as of the same instant writes nothing).
Rules: tests/gaps/shared_rules.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from cmfhir.app import open_context
from cmfhir.auth.principal import TRUSTED
from cmfhir.commands.gaps import sweep_processes
from cmfhir.config import Settings
from cmfhir.interactions.create import create_in
from serving import run_cmfhir

MEMBERS = 250  # more than two sweep batches (100 each): a batch is left for another process
AS_OF = "2026-12-01T03:00:00Z"
ISSUES = """
SELECT (SELECT count(*) FROM resource WHERE resource_type = 'DetectedIssue' AND NOT deleted),
       (SELECT count(DISTINCT content->'identifier'->0->>'value') FROM resource
        WHERE resource_type = 'DetectedIssue'),
       (SELECT count(*) FROM resource_history WHERE resource_type = 'DetectedIssue'),
       (SELECT count(*) FROM gap_member)
"""


async def _members(url: str) -> None:
    async with (
        open_context(Settings(database_url=url)) as ctx,
        ctx.store.transaction(principal=TRUSTED) as repo,
    ):
        for _ in range(MEMBERS):
            await create_in(ctx, repo, {"resourceType": "Patient"})


async def _issues(url: str) -> tuple[int, ...]:
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(plain)
    try:
        return tuple(await conn.fetchrow(ISSUES))
    finally:
        await conn.close()


def _sweep(url: str, workdir: Path, seen: Path, processes: int) -> str:
    done = run_cmfhir(
        url,
        workdir,
        "gaps",
        "sweep",
        "--as-of",
        AS_OF,
        "--processes",
        str(processes),
        CMFHIR_GAP_RULES="shared_rules",
        CMFHIR_TEST_SWEEP_DIR=str(seen),
        PYTHONPATH=str(Path(__file__).parent),
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def test_a_sweep_in_two_processes_evaluates_each_member_once(
    scratch_database: str, tmp_path: Path
) -> None:
    asyncio.run(_members(scratch_database))
    seen = tmp_path / "seen"
    seen.mkdir()
    said = _sweep(scratch_database, tmp_path, seen, 2)
    assert f"{MEMBERS} members queued, {MEMBERS} evaluated here (2 processes)" in said
    assert len(list(seen.iterdir())) >= 2  # the command and a process it started
    # One DetectedIssue per member, each written once (version 1), the queue empty.
    assert asyncio.run(_issues(scratch_database)) == (MEMBERS, MEMBERS, MEMBERS, 0)

    said = _sweep(scratch_database, tmp_path, seen, 1)
    assert f"{MEMBERS} members queued, {MEMBERS} evaluated here (1 process)" in said
    assert asyncio.run(_issues(scratch_database)) == (MEMBERS, MEMBERS, MEMBERS, 0)


def test_sweep_refuses_a_bad_number_of_processes(tmp_path: Path) -> None:
    done = run_cmfhir(None, tmp_path, "gaps", "sweep", "--processes", "-2")
    assert done.returncode == 2
    assert "'-2' is not a number of processes" in done.stderr


def test_processes_by_default_one_per_core_and_whole_thousand_members() -> None:
    assert sweep_processes(3, 10) == 3  # as asked
    assert sweep_processes(0, 0) == 1
    assert sweep_processes(0, 1999) == 1
    assert 1 <= sweep_processes(0, 10_000) <= 10
    assert sweep_processes(0, 10_000) == min(sweep_processes(0, 10**9), 10)

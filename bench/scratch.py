"""Scratch databases for the in-process measuring tools (`bench.gap_cost`, `bench.gap_lag`,
`bench.matcher_cpu`, `bench.audit_cpu`): one made on the embedded PostgreSQL of the tests
(`.data/test`) and dropped afterwards, and the CPU time that cluster's processes used."""

from __future__ import annotations

import functools
import uuid
from pathlib import Path

import asyncpg
import psutil
from sqlalchemy.engine import make_url

from cmfhir.store.database import embedded_url

__all__ = [
    "ROOT",
    "admin_url",
    "connect",
    "create_database",
    "drop_database",
    "fetch_row",
    "postgres_cpu",
]

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def admin_url() -> str:
    """The embedded PostgreSQL of the tests, started (or joined) for this process."""
    return embedded_url(ROOT / ".data" / "test")


async def connect(url: str) -> asyncpg.Connection:
    """A plain asyncpg connection to `url` (a socket directory in its `host=` query)."""
    parsed = make_url(url)
    return await asyncpg.connect(
        user=parsed.username,
        password=parsed.password,
        host=parsed.query.get("host") or parsed.host,
        port=parsed.port,
        database=parsed.database,
    )


async def fetch_row(url: str, statement: str) -> asyncpg.Record | None:
    conn = await connect(url)
    try:
        return await conn.fetchrow(statement)
    finally:
        await conn.close()


async def _execute(url: str, statement: str) -> None:
    conn = await connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def create_database(admin: str, prefix: str) -> str:
    """A new empty database named `<prefix>_<random>`; its URL (the admin URL's form)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    await _execute(admin, f"CREATE DATABASE {name}")
    plain = make_url(admin).set(drivername="postgresql")
    return plain.set(database=name).render_as_string(hide_password=False)


async def drop_database(admin: str, url: str) -> None:
    name = make_url(url).database
    await _execute(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def postgres_cpu(admin: str) -> float:
    """User+system CPU seconds of the cluster behind `admin`: the postmaster, what it has
    reaped (backends gone) and its live processes."""
    host = make_url(admin).query.get("host")
    pid_file = Path(str(host)) / "postmaster.pid"
    if not pid_file.exists():
        return 0.0
    try:
        postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
        times = postmaster.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        children = postmaster.children(recursive=True)
    except psutil.Error:
        return 0.0
    for child in children:
        try:
            t = child.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total

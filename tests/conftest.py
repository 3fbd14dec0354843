"""Test fixtures: a fresh PostgreSQL database per run (the embedded server, or
CMFHIR_TEST_DATABASE_URL) and the real server on a loopback socket."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
import uvicorn
from sqlalchemy.engine import make_url

from cmfhir.app import create_app
from cmfhir.config import Settings
from cmfhir.store.database import embedded_url

ROOT = Path(__file__).resolve().parents[1]

# The suite exercises FHIR behaviour without authorization; tests/auth/ turns it on
# (Settings(auth="smart"), or CMFHIR_AUTH=smart for the servers it starts). Set here, before
# any Settings() is made, so the servers the tests start as processes inherit it too.
os.environ.setdefault("CMFHIR_AUTH", "off")
# Nor does it want the AuditEvents of its own requests among the resources it counts; the
# audit trail is tested in tests/auth/.
os.environ.setdefault("CMFHIR_AUDIT", "false")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject's addopts): one test process per core, and at least two even on
    one core, since most of a test's time is spent waiting on its server and PostgreSQL.
    Files are the unit of distribution (`--dist loadfile`); each process has its own
    database on the one embedded PostgreSQL."""
    return max(2, min(4, os.cpu_count() or 1))


def _plain(url: str) -> str:
    """asyncpg's own connect() takes postgresql:// URLs with a host= query for sockets."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(url: str, statement: str) -> None:
    parsed = make_url(url)
    conn = await asyncpg.connect(
        user=parsed.username,
        password=parsed.password,
        host=parsed.query.get("host") or parsed.host,
        port=parsed.port,
        database=parsed.database,
    )
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def _new_database(admin: str) -> Iterator[str]:
    name = f"cmfhir_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(admin, f"CREATE DATABASE {name}"))
    try:
        yield make_url(_plain(admin)).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(scope="session")
def admin_url() -> str:
    return os.environ.get("CMFHIR_TEST_DATABASE_URL") or embedded_url(ROOT / ".data" / "test")


@pytest.fixture(scope="session")
def database_url(admin_url: str) -> Iterator[str]:
    with _new_database(admin_url) as url:
        yield url


@pytest.fixture
def scratch_database(admin_url: str) -> Iterator[str]:
    """A database of its own, for a test that damages or restarts things."""
    with _new_database(admin_url) as url:
        yield url


class RunningServer:
    def __init__(self, settings: Settings) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(settings), log_level="warning", lifespan="on", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})

    def __enter__(self) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, max_body_bytes=8 * 1024 * 1024)


@pytest.fixture(scope="session")
def base(settings: Settings) -> Iterator[str]:
    with RunningServer(settings) as running:
        yield running.base


@pytest.fixture(scope="session")
def client(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=60) as http:
        yield http


@pytest.fixture(scope="session")
def start_server() -> type[RunningServer]:
    """For tests that need a second server with other settings (on the same database)."""
    return RunningServer

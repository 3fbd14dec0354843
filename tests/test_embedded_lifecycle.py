"""The embedded PostgreSQL lives and dies with the `cmfhir serve` that holds it: stopped with
it, adopted (and then stopped) by the next server after a `kill -9`, and started again by
the running server if it dies."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving import private_dir, serve

FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture
def workdir() -> Iterator[Path]:
    with private_dir() as path:
        yield path


def _postmaster(workdir: Path) -> int:
    return int((workdir / "data" / "pg" / "postmaster.pid").read_text().split()[0])


def _running(pid: int) -> bool:
    """Running and not a zombie (a killed process its parent has not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _gone(pid: int, within: float = 15) -> bool:
    deadline = time.monotonic() + within
    while _running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _stop_postgres(pid: int) -> None:
    """Clean up after a failed test: PostgreSQL's fast shutdown."""
    if _running(pid):
        os.kill(pid, signal.SIGINT)


def _create(base: str, family: str) -> str:
    body = {"resourceType": "Patient", "name": [{"family": family}]}
    created = httpx.post(f"{base}/Patient", json=body, headers=FHIR, timeout=30)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_after_kill_9_the_next_server_adopts_postgres_and_stops_it(workdir: Path) -> None:
    with serve(None, workdir) as first:
        postmaster = _postmaster(workdir)
        pid = _create(first.base, "Before")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
    try:
        assert _running(postmaster), "kill -9 of the server stopped PostgreSQL by itself?"
        # The adopting server runs two workers: the supervisor holds PostgreSQL for them.
        with serve(None, workdir, "--workers", "2") as second:
            assert _postmaster(workdir) == postmaster, "the running PostgreSQL was not adopted"
            read = httpx.get(f"{second.base}/Patient/{pid}", timeout=30)
            assert read.status_code == 200, read.text
            _create(second.base, "After")

            code, _ = second.stop(signal.SIGTERM)

            assert code == 0, second.output()
            assert _gone(postmaster), second.output()
    finally:
        _stop_postgres(postmaster)


def test_postgres_killed_while_serving_is_started_again(workdir: Path) -> None:
    postmasters = []
    try:
        with serve(None, workdir) as served, httpx.Client(base_url=served.base) as http:
            pid = _create(served.base, "Survivor")
            postmasters.append(_postmaster(workdir))
            os.kill(postmasters[0], signal.SIGKILL)

            deadline = time.monotonic() + 60
            statuses = []
            while True:
                response = http.get(f"Patient/{pid}", timeout=30)
                statuses.append(response.status_code)
                if response.status_code == 200 or time.monotonic() > deadline:
                    break
                assert response.status_code == 503, response.text
                time.sleep(0.2)
            assert statuses[-1] == 200, served.output()
            assert response.json()["name"] == [{"family": "Survivor"}]
            _create(served.base, "Afterwards")
            postmasters.append(_postmaster(workdir))
            assert postmasters[1] != postmasters[0]
            ready = httpx.get(served.base.removesuffix("/fhir") + "/readyz", timeout=30)
            assert ready.status_code == 200, ready.text
            assert "started again" in served.output()

            code, _ = served.stop(signal.SIGTERM)

            assert code == 0, served.output()
            assert _gone(postmasters[1]), served.output()
    finally:
        for postmaster in postmasters:
            _stop_postgres(postmaster)

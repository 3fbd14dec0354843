"""The `cmfhir` command as a user runs it: `cmfhir serve` in its own process against the test
database, stopped by a signal, and `cmfhir migrate`."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from serving import STOP_TIMEOUT, private_dir, run_cmfhir, serve

FHIR = {"Content-Type": "application/fhir+json"}


@dataclass
class Lifecycle:
    created: httpx.Response
    read: httpx.Response
    searched: httpx.Response
    exit_code: int | None
    stop_seconds: float
    output: str


@pytest.fixture(scope="module")
def sigterm_lifecycle(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Lifecycle:
    """One run of what an operator does: start, use, then stop with SIGTERM (`kill`,
    `docker stop`, systemd, Kubernetes)."""
    workdir = tmp_path_factory.mktemp("serve")
    with (
        serve(database_url, workdir) as served,
        httpx.Client(base_url=served.base, timeout=30) as http,
    ):
        body = {"resourceType": "Patient", "name": [{"family": "Cli", "given": ["Ada"]}]}
        created = http.post("Patient", json=body, headers=FHIR)
        read = http.get(f"Patient/{created.json().get('id')}")
        searched = http.get("Patient", params={"_id": created.json().get("id")})
        code, seconds = served.stop(signal.SIGTERM)
        return Lifecycle(created, read, searched, code, seconds, served.output())


def test_served_process_creates_and_reads(sigterm_lifecycle: Lifecycle) -> None:
    created, read = sigterm_lifecycle.created, sigterm_lifecycle.read
    assert created.status_code == 201, created.text
    assert read.status_code == 200, read.text
    assert read.json()["id"] == created.json()["id"]
    assert read.json()["name"] == [{"family": "Cli", "given": ["Ada"]}]
    assert sigterm_lifecycle.searched.json()["total"] == 1


def test_sigterm_shuts_down_gracefully_within_30_seconds(sigterm_lifecycle: Lifecycle) -> None:
    assert sigterm_lifecycle.exit_code is not None, sigterm_lifecycle.output
    assert sigterm_lifecycle.stop_seconds < STOP_TIMEOUT
    assert "Application shutdown complete" in sigterm_lifecycle.output


def test_sigterm_exits_with_status_0(sigterm_lifecycle: Lifecycle) -> None:
    assert sigterm_lifecycle.exit_code == 0, sigterm_lifecycle.output


@pytest.mark.parametrize(
    ("sig", "workers"),
    [
        pytest.param(signal.SIGINT, "1", id="ctrl-c"),
        pytest.param(signal.SIGTERM, "2", id="sigterm-two-workers"),
    ],
)
def test_stopping_exits_with_status_0(
    database_url: str, tmp_path: Path, sig: signal.Signals, workers: str
) -> None:
    with serve(database_url, tmp_path, "--workers", workers) as served:
        created = httpx.post(
            f"{served.base}/Patient", json={"resourceType": "Patient"}, headers=FHIR, timeout=30
        )
        assert created.status_code == 201, created.text

        code, seconds = served.stop(sig)

        assert code == 0, served.output()
        assert seconds < STOP_TIMEOUT


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _gone(pid: int, within: float = 10) -> bool:
    """The postmaster removes its pid file just before it exits, and init reaps it later."""
    deadline = time.monotonic() + within
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_sigterm_stops_the_embedded_postgresql() -> None:
    # Without CMFHIR_DATABASE_URL, as `./dev serve` runs: the process starts its own
    # PostgreSQL and must not leave it running once stopped.
    with private_dir() as tmp_path:
        _sigterm_stops_the_embedded_postgresql(tmp_path)


def _sigterm_stops_the_embedded_postgresql(tmp_path: Path) -> None:
    postmaster = None
    try:
        with serve(None, tmp_path) as served:
            pid_file = tmp_path / "data" / "pg" / "postmaster.pid"
            postmaster = int(pid_file.read_text().split()[0])
            assert _alive(postmaster)
            created = httpx.post(
                f"{served.base}/Patient", json={"resourceType": "Patient"}, headers=FHIR, timeout=30
            )
            assert created.status_code == 201, created.text

            code, _ = served.stop(signal.SIGTERM)

            assert code == 0, served.output()
            assert not pid_file.exists(), served.output()
            assert _gone(postmaster), served.output()
    finally:
        if postmaster is not None and _alive(postmaster):
            os.kill(postmaster, signal.SIGINT)  # PostgreSQL's fast shutdown


def test_migrate_exits_0_and_says_the_schema_is_current(database_url: str, tmp_path: Path) -> None:
    done = run_cmfhir(database_url, tmp_path, "migrate")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "schema is up to date" in done.stdout


def test_usage_error_exits_2(tmp_path: Path) -> None:
    done = run_cmfhir(None, tmp_path, "frobnicate")
    assert done.returncode == 2
    assert "serve" in done.stderr and "migrate" in done.stderr


def test_sigterm_drains_in_flight_requests(database_url: str, tmp_path: Path) -> None:
    """A 6,000-entry transaction that is being processed when SIGTERM arrives completes and is
    acknowledged; only then does the process exit."""
    entries = [
        {
            "resource": {"resourceType": "Patient", "name": [{"family": f"Drain{n}"}]},
            "request": {"method": "POST", "url": "Patient"},
        }
        for n in range(6000)
    ]
    body = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    with serve(database_url, tmp_path) as served:
        result: dict[str, httpx.Response] = {}
        sending = threading.Event()

        answered_at = 0.0

        def chunks() -> Iterator[bytes]:
            # The server has the request's head and first bytes before SIGTERM is sent.
            yield body[:1000].encode()
            sending.set()
            yield body[1000:].encode()

        def send() -> None:
            nonlocal answered_at
            result["response"] = httpx.post(
                served.base,
                content=chunks(),
                headers={**FHIR, "Prefer": "return=minimal"},
                timeout=120,
            )
            answered_at = time.monotonic()

        sender = threading.Thread(target=send)
        sender.start()
        assert sending.wait(60), "the request was never sent"
        time.sleep(0.2)  # the request is being read or processed now (it takes seconds)
        signalled_at = time.monotonic()
        code, _ = served.stop(signal.SIGTERM)
        sender.join(timeout=120)
    assert answered_at > signalled_at, "the request finished before SIGTERM: nothing was drained"
    assert result["response"].status_code == 200, served.output()
    assert len(result["response"].json()["entry"]) == 6000
    assert code == 0, served.output()

"""Running `cmfhir` as a user does, in its own process: `serve` on a free port, `migrate`,
`check`, `reindex`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

START_TIMEOUT = 60
STOP_TIMEOUT = 30


@contextmanager
def private_dir() -> Iterator[Path]:
    """A scratch directory outside pytest's: run as root, pgserver runs PostgreSQL as its own
    user, and every pytest session on the machine closes /tmp/pytest-of-root to other users
    (a concurrent run would lock that PostgreSQL out of its data directory)."""
    path = Path(tempfile.mkdtemp(prefix="cmfhir-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cmfhir_env(database_url: str | None, workdir: Path) -> dict[str, str]:
    """The environment of a user's shell, with the data dir (where the embedded PostgreSQL
    lives when no URL is given) in a scratch directory, never the checkout's .data/."""
    env = {**os.environ, "CMFHIR_DATA_DIR": str(workdir / "data")}
    env.pop("CMFHIR_DATABASE_URL", None)
    if database_url is not None:
        env["CMFHIR_DATABASE_URL"] = database_url
    return env


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    base: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: signal.Signals) -> tuple[int | None, float]:
        """Send `sig`; the exit code (None if still running after STOP_TIMEOUT) and seconds."""
        started = time.monotonic()
        self.process.send_signal(sig)
        try:
            code: int | None = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - started


@contextmanager
def serve(
    database_url: str | None, workdir: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[Served]:
    """`cmfhir serve` on a free port (with `env`'s CMFHIR_* overrides), yielded once
    GET /fhir/metadata answers 200."""
    port = free_port()
    log = workdir / "serve.log"
    command = [sys.executable, "-m", "cmfhir", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, *extra],
            env={**cmfhir_env(database_url, workdir), **(env or {})},
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    served = Served(process, f"http://127.0.0.1:{port}/fhir", log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if httpx.get(f"{served.base}/metadata", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                pytest.fail(f"cmfhir serve exited with {process.returncode}:\n{served.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"cmfhir serve did not answer in {START_TIMEOUT} s:\n{served.output()}")
            time.sleep(0.1)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def run_cmfhir(
    database_url: str | None, workdir: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """`cmfhir ARGS` to completion, with the test database (and any CMFHIR_* overrides)."""
    return subprocess.run(
        [sys.executable, "-m", "cmfhir", *args],
        env={**cmfhir_env(database_url, workdir), **env},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

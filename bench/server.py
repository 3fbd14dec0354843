"""The server under test: `cmfhir serve` as a subprocess over a fresh data directory, the
embedded PostgreSQL it starts, and a sampler of both processes' memory.

With `separate_worker`, `cmfhir serve --no-workers` answers the API and the background
workers (gap engine, subscription matcher and sender, export and import jobs, pruning) run
in a `cmfhir worker` process of their own, so the API's figures do not include the work a
load leaves behind (`Server.catch_up` waits for it and says how long it took)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import psutil

__all__ = ["MemorySampler", "Server", "free_port", "start_server"]

T = TypeVar("T")

_READY_TIMEOUT_S = 180.0
_CATCH_UP_TIMEOUT_S = 1800.0
# Work the background workers still have: members queued for the gap engine, and events
# after any outbox consumer's position; and 1 while the gap engine has not yet registered
# as a consumer (a worker process still starting has read nothing).
_BEHIND = """
SELECT (SELECT count(*) FROM gap_member)
     + (SELECT count(*) FROM event e JOIN consumer c ON (e.xid, e.seq) > (c.xid, c.seq))
     + (SELECT CASE WHEN EXISTS (SELECT 1 FROM consumer WHERE name = 'gaps') THEN 0 ELSE 1 END)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    data_dir: Path
    log_path: Path
    database_url: str = ""
    external_database: bool = False
    # `cmfhir worker`, when the background workers run apart from `serve`.
    worker: subprocess.Popen[bytes] | None = None
    # More `cmfhir worker --only` processes (`start_server(worker_groups=...)`).
    more_workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def background_pids(self) -> list[int]:
        """The `cmfhir worker` processes, if the workers run apart."""
        workers = [w for w in (self.worker, *self.more_workers) if w is not None]
        return [w.pid for w in workers if w.poll() is None]

    def catch_up(self) -> float:
        """Wait until the background workers have done what the load left them (every
        event read by every consumer, no member queued for the gap engine); the seconds
        it took."""
        return asyncio.run(_wait_caught_up(self.database_url))

    def pids(self) -> list[int]:
        """The serve process and its uvicorn workers."""
        try:
            parent = psutil.Process(self.process.pid)
            return [parent.pid, *(c.pid for c in parent.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def worker_pids(self) -> list[int]:
        return self.pids()[1:] or self.pids()

    def postgres_pids(self) -> list[int]:
        if self.external_database:
            return []
        pid_file = self.data_dir / "pg" / "postmaster.pid"
        try:
            postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
            return [postmaster.pid, *(c.pid for c in postmaster.children(recursive=True))]
        except (OSError, ValueError, IndexError, psutil.NoSuchProcess):
            return []

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGINT the serve process (uvicorn drains its workers) and the worker process,
        then release PostgreSQL."""
        for worker in (self.worker, *self.more_workers):
            if worker is not None and worker.poll() is None:
                worker.send_signal(signal.SIGINT)
        for worker in (self.worker, *self.more_workers):
            if worker is None:
                continue
            try:
                worker.wait(timeout=40)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                for pid in reversed(self.pids()):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if not self.external_database and self.database_url:
            # The harness joined the embedded server; dropping the last handle stops it.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import pgserver

            pgserver.get_server((self.data_dir / "pg").resolve()).cleanup()


def start_server(
    data_dir: Path,
    port: int,
    workers: int,
    database_url: str | None,
    extra_env: dict[str, str] | None = None,
    *,
    separate_worker: bool = False,
    worker_groups: Sequence[str] = (),
) -> Server:
    """Start `cmfhir serve`, wait until it answers, and return it with its database URL;
    with `separate_worker`, `serve --no-workers` and a `cmfhir worker` beside it, or with
    `worker_groups` one `cmfhir worker --only GROUPS` for each."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "server.log"
    env = dict(os.environ, CMFHIR_DATA_DIR=str(data_dir), CMFHIR_LOG_LEVEL="warning")
    # The harness measures the FHIR API without tokens: authorization off, on loopback.
    env.setdefault("CMFHIR_AUTH", "off")
    env.update(extra_env or {})
    if database_url:
        env["CMFHIR_DATABASE_URL"] = database_url
    else:
        env.pop("CMFHIR_DATABASE_URL", None)
    command = [sys.executable, "-m", "cmfhir", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(workers)]
    if separate_worker or worker_groups:
        command.append("--no-workers")
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = Server(process, f"http://127.0.0.1:{port}/fhir", data_dir, log_path)
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"cmfhir serve exited ({process.returncode}):\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.base_url}/metadata", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"cmfhir serve not ready in {_READY_TIMEOUT_S:.0f} s")
        time.sleep(0.3)
    if database_url:
        server.database_url, server.external_database = database_url, True
    else:
        from cmfhir.store.database import embedded_url

        server.database_url = embedded_url(data_dir)
    if separate_worker and not worker_groups:
        server.worker = _start_worker(env, server.database_url, data_dir / "worker.log")
    for n, groups in enumerate(worker_groups):
        worker_log = data_dir / f"worker-{n}.log"
        server.more_workers.append(_start_worker(env, server.database_url, worker_log, groups))
    return server


def _start_worker(
    env: dict[str, str], database_url: str, log_path: Path, groups: str | None = None
) -> subprocess.Popen[bytes]:
    """`cmfhir worker` on the server's database (the embedded one by its URL: the worker
    joins it, it does not start its own), once its workers run: a load started before that
    (the worker takes seconds to start) measures the worker's start-up in its first gaps
    and notifications."""
    env = dict(env, CMFHIR_DATABASE_URL=database_url)
    started = _wait_for(_database_now(database_url))
    only = ["--only", groups] if groups else []
    # Started once its first group's outbox consumer (the gap engine's, else the
    # subscription matcher's) has registered.
    consumer = "subscriptions" if groups and "gaps" not in groups.split(",") else "gaps"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cmfhir", "worker", *only],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while not _wait_for(_worker_running(database_url, started, consumer)):
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
            raise RuntimeError(
                f"cmfhir worker exited or not ready ({process.returncode}):\n"
                + log_path.read_text(errors="replace")[-2000:]
            )
        time.sleep(0.3)
    return process


def _wait_for(coroutine: Coroutine[Any, Any, T]) -> T:
    """`coroutine` run to its end from this synchronous code, whether or not the caller is
    itself inside an event loop (`bench.subscriptions` starts the server from one)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _database_now(database_url: str) -> Any:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT now()")
    finally:
        await conn.close()


# The worker's workers run: its outbox listener connected since it was started, and the
# gap engine (or the group's consumer) registered as an outbox consumer.
_WORKER_RUNNING = """
SELECT EXISTS (SELECT 1 FROM pg_stat_activity
               WHERE application_name = 'cmfhir-listen' AND backend_start >= $1)
   AND EXISTS (SELECT 1 FROM consumer WHERE name = $2)
"""


async def _worker_running(database_url: str, started: Any, consumer: str = "gaps") -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        return bool(await conn.fetchval(_WORKER_RUNNING, started, consumer))
    except asyncpg.UndefinedTableError:
        return False  # not migrated yet
    finally:
        await conn.close()


async def _wait_caught_up(database_url: str) -> float:
    conn = await asyncpg.connect(database_url)
    started = time.perf_counter()
    try:
        while await conn.fetchval(_BEHIND):
            if time.perf_counter() - started > _CATCH_UP_TIMEOUT_S:
                raise RuntimeError("the background workers did not catch up")
            await asyncio.sleep(0.2)
        return round(time.perf_counter() - started, 1)
    finally:
        await conn.close()


@dataclass
class MemorySampler:
    """Polls the resident memory of the server's processes (and PostgreSQL's) in a thread."""

    server: Server
    interval_s: float = 0.5
    max_server_rss: int = 0
    max_postgres_pss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def sample(self) -> None:
        self.max_server_rss = max(self.max_server_rss, _total(self.server.pids(), pss=False))
        self.max_postgres_pss = max(
            self.max_postgres_pss, _total(self.server.postgres_pids(), pss=True)
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()


def _total(pids: list[int], *, pss: bool) -> int:
    """Sum of RSS, or of PSS (shared pages split between sharers) where readable."""
    total = 0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            if pss:
                try:
                    total += process.memory_full_info().pss
                    continue
                except (psutil.AccessDenied, AttributeError):
                    pass
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total

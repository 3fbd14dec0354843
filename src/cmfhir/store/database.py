"""Connecting to PostgreSQL: an external server (`CMFHIR_DATABASE_URL`) or the embedded one
from the pgserver wheel, kept in the data directory; schema migrations applied at start."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cmfhir.resources.fhirjson import dump_json
from cmfhir.store.reader import Reader, attach

__all__ = ["Database", "EmbeddedPostgres", "async_url", "embedded_url", "open_database"]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"
# Serializes migrations when several processes start at once.
_MIGRATION_LOCK = 0x636D66686972


def _pgserver() -> Any:
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime dir at import; a missing XDG_RUNTIME_DIR
        # (containers, CI) only means it falls back to /tmp, which is fine.
        warnings.simplefilter("ignore")
        import pgserver
    # pgserver logs the whole PostgreSQL log when a start fails, and that log can hold
    # values from statements: cmfhir logs its own one-line account instead.
    quiet = logging.getLogger("pgserver")
    quiet.propagate = False
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
    return pgserver


def _state(pid: int) -> str:
    """'running', 'zombie' (exited, not yet reaped by its parent) or 'gone'."""
    import psutil

    try:
        zombie = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return "gone"
    if zombie:
        # PostgreSQL is pg_ctl's orphan: where this process is PID 1 (a container without an
        # init) it is this process's child, and only this process can reap it.
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return "gone"
        return "zombie"
    return "running"


def _alive(pid: int) -> bool:
    return _state(pid) == "running"


# Never written to PostgreSQL's own log (data_dir/pg/log): the text of failing statements
# and the DETAIL of errors, which quote the values (names, birth dates) that caused them.
# Start, stop, checkpoints and fatal errors are still logged.
_LOG_HYGIENE = (
    "ALTER SYSTEM SET log_min_messages = 'log';"
    "ALTER SYSTEM SET log_min_error_statement = 'panic';"
    "ALTER SYSTEM SET log_error_verbosity = 'terse';"
    "SELECT pg_reload_conf();"
)


# The embedded server's own settings (ALTER SYSTEM, so they outlive restarts). The defaults
# of initdb (100 connections, 128 MB of shared buffers, 1 GB of WAL between checkpoints) are
# too small for several processes, each with its pools, beside tools and test processes.
EMBEDDED_SETTINGS = {
    "max_connections": "400",
    "shared_buffers": "256MB",
    "max_wal_size": "2GB",
}


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


_APPLY_SETTINGS = (
    "".join(f"ALTER SYSTEM SET {name} = {_quoted(v)};" for name, v in EMBEDDED_SETTINGS.items())
    + "SELECT pg_reload_conf();"
)
_PENDING_RESTART = (
    "\\pset format unaligned\n\\pset tuples_only on\n"
    "SELECT 'pending=' || count(*) FROM pg_settings WHERE pending_restart;"
)


class EmbeddedPostgres:
    """The embedded PostgreSQL in `data_dir/pg`, from the pgserver wheel.

    pgserver keeps a list of the processes holding a server (`pg/.handle_pids.json`) and
    stops PostgreSQL when the last of them exits. A process killed with SIGKILL stays on
    that list, so PostgreSQL would never be stopped again: `start()` first drops the
    processes that no longer run, then starts PostgreSQL or adopts the one running. `stop()`
    releases this process's hold (stopping PostgreSQL if it was the last), and `watch()`
    starts it again whenever it dies while held.
    """

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "pg").resolve()
        self._server: Any = None
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None

    def start(self) -> str:
        """Start (or adopt) PostgreSQL and return its URL."""
        import fasteners

        pgserver = _pgserver()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(exist_ok=True)
        # cmfhir's processes join one at a time (pgserver's own lock covers only its steps),
        # so the first can restart PostgreSQL for new settings before anyone else holds it.
        with fasteners.InterProcessLock(self.pgdata.parent / ".pg-start.lock"):
            with pgserver.PostgresServer._lock:
                self._forget_dead_holders()
            self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
            self._server.psql(_LOG_HYGIENE + _APPLY_SETTINGS)
            self._restart_for_settings()
        uri: str = self._server.get_uri()
        return uri

    def _restart_for_settings(self) -> None:
        """Restart PostgreSQL if a setting waits for it and no other process holds it."""
        from pgserver.utils import DiskList

        pg_ctl = importlib.import_module("pgserver._commands").pg_ctl  # made at import

        answer = self._server.psql(_PENDING_RESTART)
        pending = next(
            (int(line[8:]) for line in answer.splitlines() if line.startswith("pending=")), 0
        )
        if not pending:
            return
        with type(self._server)._lock:
            holders = DiskList(self.pgdata / ".handle_pids.json").get()
            if holders != [os.getpid()]:
                log.warning(
                    "embedded PostgreSQL: %d setting(s) apply at its next restart "
                    "(other processes hold it now)",
                    pending,
                )
                return
            log.info("embedded PostgreSQL: restarting for %d new setting(s)", pending)
            pg_ctl(["-w", "stop"], pgdata=self.pgdata, user=self._server.system_user)
            self._server.ensure_postgres_running()

    def _forget_dead_holders(self) -> None:
        from pgserver.utils import DiskList

        holders = DiskList(self.pgdata / ".handle_pids.json")
        pids = holders.get()
        living = [pid for pid in pids if _alive(pid)]
        if living != pids:
            log.info("embedded PostgreSQL: %d stopped holder(s) forgotten", len(pids) - len(living))
            holders.put(living)

    def postmaster_state(self) -> str:
        """'running', 'zombie' or 'gone' (see `_state`)."""
        from pgserver.utils import PostmasterInfo

        try:
            info = PostmasterInfo.read_from_pgdata(self.pgdata)
        except (AssertionError, ValueError, OSError):
            return "running"  # postmaster.pid is being written: starting, not gone
        if info is None or info.pid is None:
            return "gone"
        return _state(info.pid)

    def watch(self, interval: float = 1.0) -> None:
        """Check every `interval` seconds that PostgreSQL runs, and start it if not; the
        connection pools reconnect by themselves (a request meanwhile gets 503)."""
        self._watchdog = threading.Thread(
            target=self._watch, args=(interval,), name="cmfhir-pg-watchdog", daemon=True
        )
        self._watchdog.start()

    def _watch(self, interval: float) -> None:
        while not self._stopping.wait(interval):
            if self.postmaster_state() == "running":
                continue
            try:
                self._restart()
            except Exception as error:  # retried at the next tick
                log.warning(
                    "embedded PostgreSQL did not start (%s); retrying, see %s",
                    type(error).__name__,
                    self.pgdata / "log",
                )

    def _restart(self) -> None:
        with type(self._server)._lock:
            state = self.postmaster_state()
            if self._stopping.is_set() or state == "running":
                return
            if state == "zombie":
                # PostgreSQL refuses to start while the old postmaster's pid is taken.
                log.warning("embedded PostgreSQL exited; waiting for its process to be reaped")
                return
            if not (self.pgdata / "PG_VERSION").exists():
                # Never initdb a fresh, empty database in place of a deleted one.
                log.error("embedded PostgreSQL's data directory %s is gone", self.pgdata)
                return
            log.warning("embedded PostgreSQL is not running; starting it again")
            # Run as root, pgserver runs PostgreSQL as its own user and opens the path to the
            # data directory to it when it starts; something may have closed it since.
            self._server.ensure_pgdata_inited()
            self._server.ensure_postgres_running()
        if self.postmaster_state() == "running":
            log.warning("embedded PostgreSQL started again")

    def stop(self) -> None:
        """Release this process's hold; PostgreSQL stops if no other live process holds it."""
        self._stopping.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=30)
        if self._server is not None:
            try:
                self._server.cleanup()
            except Exception as error:  # it died as we stopped it: nothing left to stop
                log.warning("embedded PostgreSQL: stopping it failed (%s)", type(error).__name__)
            self._server = None


def embedded_url(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL in `data_dir/pg` and return its URL; this
    process holds it until it exits."""
    return EmbeddedPostgres(data_dir).start()


def async_url(url: str) -> str:
    """The asyncpg form of a PostgreSQL URL (`postgresql://` → `postgresql+asyncpg://`)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def _json_serializer(value: Any) -> str:
    return dump_json(value).decode()


def driver_dsn(url: str) -> str:
    """The plain `postgresql://` form of a SQLAlchemy URL, as asyncpg takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def reader_size(pool_size: int) -> int:
    """The connections of the read pool (store/reader.py) beside `pool_size` others."""
    return max(2, pool_size // 4)


@dataclass
class Database:
    engine: AsyncEngine
    url: str
    # The pool the reads of one resource go through (store/reader.py).
    reader: Reader | None = None

    async def dispose(self) -> None:
        if self.reader is not None:
            await self.reader.close()
        await self.engine.dispose()

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (see `migrations/`)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        async with self.engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})

            # Alembic announces its plugins and context at INFO on every start.
            logging.getLogger("alembic").setLevel(logging.WARNING)

            def upgrade(sync_conn: Any) -> None:
                cfg.attributes["connection"] = sync_conn
                command.upgrade(cfg, "head")

            await conn.run_sync(upgrade)


async def open_database(
    database_url: str | None,
    data_dir: Path,
    *,
    pool_size: int = 10,
    statement_timeout_ms: int = 60_000,
    migrate: bool = True,
) -> Database:
    if database_url is None:
        database_url = await asyncio.to_thread(embedded_url, data_dir)
    url = async_url(database_url)
    connect_args: dict[str, Any] = {
        "server_settings": {
            "application_name": "cmfhir",
            # A statement that runs away is stopped, not left running for nobody.
            "statement_timeout": str(statement_timeout_ms),
        },
        "timeout": 5,
        # Searches by a practitioner carry the access predicate (17 KB of SQL text):
        # above asyncpg's default limit of 15 KB, they would be prepared anew each time.
        "max_cacheable_statement_size": 64 * 1024,
    }
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        # No overflow: past the pool, requests wait for a connection rather than open and
        # close one each (a PostgreSQL backend forked per request).
        max_overflow=0,
        # No ping before each use (a round trip per request): a connection the database
        # dropped fails its request with 503 and the pool is refreshed.
        pool_pre_ping=False,
        json_serializer=_json_serializer,
        # A database that is down must fail requests fast (503), not hang them.
        connect_args=connect_args,
    )
    # Connections opened as reads need them (none for a command that reads nothing), a
    # quarter of the pool's: a read holds one for a single round trip.
    reader = Reader(driver_dsn(url), size=reader_size(pool_size), connect_args=connect_args)
    attach(engine, reader)
    db = Database(engine=engine, url=url, reader=reader)
    if migrate:
        await db.migrate()
    log.info("database ready at %s", make_url(url).render_as_string(hide_password=True))
    return db

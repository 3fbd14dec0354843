"""The store: opens transactions and turns database failures into cmfhir errors.

Interactions write `async with store.transaction(principal=ctx.principal) as repo:`; the
commit happens when the block ends without an exception, before any response is sent.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cmfhir.auth.principal import Principal
from cmfhir.errors import BadRequest, Conflict, FhirError, ServiceUnavailable
from cmfhir.store.integrity import ReferencePolicy
from cmfhir.store.reader import reader_for
from cmfhir.store.records import StoredVersion
from cmfhir.store.repository import Repository
from cmfhir.store.searcher import Searcher, Searches

__all__ = ["BeforeCommit", "Store"]

log = logging.getLogger(__name__)

# SQLSTATEs a client may retry: serialization failure, deadlock, unique violation from a race.
_RETRYABLE = {"40001", "40P01", "23505"}
# Connection exceptions (08), shutdown or start-up in progress (57P0x), too many connections
# or out of resources (53): the database is not there for now.
_UNAVAILABLE = ("08", "57P", "53")
# Data exceptions (22): a value the client sent that PostgreSQL cannot hold or compare (a NUL
# in a search value, a number past numeric's range). Validation stops these in resources;
# this catches the ones that reach SQL some other way, as the client's error.
_DATA_EXCEPTION = "22"


def _sqlstate(error: BaseException) -> str | None:
    orig = getattr(error, "orig", None)
    for candidate in (orig, getattr(orig, "__cause__", None)):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(state, str):
            return state
    return None


def _translate(state: str | None, unavailable: bool, cause: str) -> FhirError | None:
    """The client's view of a database failure, or None for a bug (a 500)."""
    if state in _RETRYABLE:
        return Conflict(
            "A concurrent change to the same resources won; retry the request.",
            headers={"Retry-After": "1"},
        )
    if state is not None and state.startswith(_DATA_EXCEPTION):
        log.warning("value refused by the database: SQLSTATE %s", state)
        return BadRequest(
            "The request holds a value the database cannot store or compare "
            "(such as a NUL character or a number out of range)"
        )
    if state == "57014":  # statement_timeout
        return ServiceUnavailable(
            "The request took longer than the server allows and was stopped; "
            "narrow it or retry later",
            headers={"Retry-After": "5"},
        )
    if unavailable or (state is not None and state.startswith(_UNAVAILABLE)):
        log.warning("database unavailable: %s", cause)
        return ServiceUnavailable(
            "The database is unavailable; retry shortly.", headers={"Retry-After": "5"}
        )
    return None


# What a statement sent straight to asyncpg (Repository.read) raises when its connection is
# gone or going: closed, lost, server shutting down (57P0x), or its protocol left broken by
# a message the server sent as it went (InternalClientError).
_CONNECTION_LOST = (
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
)
_DRIVER_FAILURES = (
    *_CONNECTION_LOST,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    OSError,
)


async def _discard_if_broken(conn: AsyncConnection, error: BaseException) -> None:
    """After such a failure, do what SQLAlchemy does when its own statements find a dead
    connection: discard it and every pooled one opened before it, so that the next requests
    connect afresh instead of each failing on a dead connection (for ever, when only reads
    come: they never go through SQLAlchemy's own check)."""
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    closed = driver is None or driver.is_closed()
    if closed or not isinstance(error, asyncpg.InterfaceError | OSError):
        conn.sync_engine.pool._invalidate(raw, error)


# Run at the end of a write transaction, before its checks and its commit: what it writes
# commits or rolls back with the transaction (the audit trail of a request's writes).
BeforeCommit = Callable[[Repository], Awaitable[None]]


class Store:
    def __init__(self, engine: AsyncEngine, references: ReferencePolicy | None = None) -> None:
        self.engine = engine
        self.references = references or ReferencePolicy()
        self.before_commit: BeforeCommit | None = None
        self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._snapshot = engine.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
        # Writing in one snapshot (the gap engine): the level goes with the BEGIN.
        self._repeatable = engine.execution_options(isolation_level="REPEATABLE READ")
        self.reader = reader_for(engine)

    async def read(
        self, principal: Principal | None, resource_type: str, id: str
    ) -> StoredVersion | None:
        """The current version of `resource_type/id` if `principal` may read it: through
        the engine's `Reader` (store/reader.py) when it has one, else a read-only
        transaction."""
        if self.reader is None:
            async with self.transaction(principal=principal, read_only=True) as repo:
                return await repo.read(resource_type, id)
        return await self._through_reader(self.reader.read(principal, resource_type, id))

    async def vread(
        self, principal: Principal | None, resource_type: str, id: str, version: int
    ) -> StoredVersion | None:
        """Version `version` of `resource_type/id` if `principal` may read it, as `read`."""
        if self.reader is None:
            async with self.transaction(principal=principal, read_only=True) as repo:
                return await repo.vread(resource_type, id, version)
        return await self._through_reader(self.reader.vread(principal, resource_type, id, version))

    async def _through_reader(
        self, reading: Coroutine[Any, Any, StoredVersion | None]
    ) -> StoredVersion | None:
        """A read of the `Reader`, its failures turned into the client's answer."""
        try:
            return await reading
        except _READER_ERRORS as error:
            if (failure := _reader_failure(error, "read")) is None:
                raise
            raise failure from error

    @asynccontextmanager
    async def searching(self, principal: Principal | None) -> AsyncIterator[Searches]:
        """What a search reads, for `principal`: a raw connection of the engine's `Reader`
        (store/searcher.py) when it has one, else a read-only connection."""
        if self.reader is None:
            async with self.transaction(principal=principal, read_only=True) as repo:
                yield repo
            return
        try:
            async with self.reader.connection() as driver:
                yield Searcher(driver, principal)
        except _READER_ERRORS as error:
            if (failure := _reader_failure(error, "search")) is None:
                raise
            raise failure from error

    def with_before_commit(self, hook: BeforeCommit) -> Store:
        """This store (the same engine and pool) with `hook(repo)` run at the end of each of
        its write transactions that wrote something."""
        hooked = copy.copy(self)
        hooked.before_commit = hook
        return hooked

    @asynccontextmanager
    async def snapshot(self, principal: Principal | None = None) -> AsyncIterator[Repository]:
        """One read-only REPEATABLE READ transaction: every statement in the block sees the
        same committed state, whatever is written meanwhile (`cmfhir check`). Like every
        transaction it reads only what `principal` may see (None: nothing)."""
        async with self.transaction(snapshot=True, principal=principal) as repo:
            yield repo

    @asynccontextmanager
    async def transaction(
        self,
        *,
        principal: Principal | None = None,
        read_only: bool = False,
        snapshot: bool = False,
        repeatable_read: bool = False,
    ) -> AsyncIterator[Repository]:
        """A transaction acting for `principal`: its reads see only what the principal may
        and its writes are refused unless permitted (store/access.py). Without one, nothing
        is read and nothing written."""
        try:
            if read_only:
                # Reads run each statement on its own (READ COMMITTED gives a statement its
                # snapshot either way): no BEGIN and COMMIT round trips on the hot path.
                async with self._reader.connect() as conn:
                    try:
                        yield Repository(conn, self.references, principal)
                    except _DRIVER_FAILURES as error:
                        await _discard_if_broken(conn, error)
                        raise
                return
            engine = (
                self._snapshot if snapshot else self._repeatable if repeatable_read else self.engine
            )
            async with engine.connect() as conn, conn.begin():
                repo = Repository(conn, self.references, principal)
                try:
                    yield repo
                    # Only when the block ended without an error; then the commit.
                    if self.before_commit is not None and repo.journal:
                        await self.before_commit(repo)
                    await repo.finish()
                except _DRIVER_FAILURES as error:
                    await _discard_if_broken(conn, error)
                    raise
        except sa_exc.DBAPIError as error:
            orig = error.orig
            unavailable = (
                error.connection_invalidated
                or isinstance(error, sa_exc.InterfaceError | sa_exc.OperationalError)
                or isinstance(orig, OSError)
                or isinstance(getattr(orig, "__cause__", None), OSError)
            )
            translated = _translate(_sqlstate(error), unavailable, type(orig).__name__)
            if translated is None:
                raise
            raise translated from error
        except (asyncpg.PostgresError, *_CONNECTION_LOST) as error:
            # From the statements that go to asyncpg directly (Repository.read).
            unavailable = isinstance(error, _CONNECTION_LOST)
            state = getattr(error, "sqlstate", None)
            translated = _translate(state, unavailable, type(error).__name__)
            if translated is None:
                raise
            raise translated from error
        except sa_exc.TimeoutError as error:  # no pooled connection came free in time
            raise _busy("database connection pool exhausted") from error
        except (OSError, ConnectionError) as error:
            raise _unreachable(error) from error


# What a statement on a raw connection of the `Reader` raises when it fails or none is free.
_READER_ERRORS = (asyncpg.PostgresError, *_CONNECTION_LOST, TimeoutError, OSError, ConnectionError)


def _reader_failure(error: BaseException, what: str) -> FhirError | None:
    """The client's view of a failure on the `Reader`'s connections: a 4xx or 503, or None
    for a bug (a 500)."""
    if isinstance(error, (asyncpg.PostgresError, *_CONNECTION_LOST)):
        unavailable = isinstance(error, _CONNECTION_LOST)
        return _translate(getattr(error, "sqlstate", None), unavailable, what)
    if isinstance(error, TimeoutError):  # no pooled connection came free in time
        return _busy(f"database {what} pool exhausted")
    return _unreachable(error)


def _busy(what: str) -> ServiceUnavailable:
    log.warning("%s", what)
    return ServiceUnavailable("The server is busy; retry shortly.", headers={"Retry-After": "2"})


def _unreachable(error: BaseException) -> ServiceUnavailable:
    log.warning("database unreachable: %s", type(error).__name__)
    return ServiceUnavailable(
        "The database is unreachable; retry shortly.", headers={"Retry-After": "5"}
    )

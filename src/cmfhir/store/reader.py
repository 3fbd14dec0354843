"""The read of one current resource, and of one version, through a pool of raw asyncpg
connections of its own, beside SQLAlchemy's: taking a pooled connection through SQLAlchemy
(checkout, isolation level, reset on return) cost a quarter of a read's CPU, for one
statement that needs none of it. The statement is prepared once per connection (asyncpg's
statement cache) and only its values are bound; nothing is reset when a connection goes
back, since nothing read here changes a session (no transaction, no settings, no LISTEN).

`open_database` makes one `Reader` per engine and `attach`es it; `Store` finds it with
`reader_for(engine)` (an engine made elsewhere has none, and its stores read through
SQLAlchemy as before). Its connections are opened as reads need them, up to the engine's
pool size."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from cmfhir.auth.principal import Principal
from cmfhir.store.reads import read_current, read_version
from cmfhir.store.records import StoredVersion

__all__ = ["Reader", "attach", "reader_for"]

# How long a read waits for a free connection before the request is answered 503, as
# SQLAlchemy's pool_timeout.
ACQUIRE_TIMEOUT_S = 30.0


class Reader:
    """At most `size` connections, taken last-in first-out, opened when none is idle.

    Not asyncpg's own pool: its acquire and release (a timeout scope, a shielded reset and
    a proxy object per use) cost three times the statement itself. A connection that fails
    is closed and not taken back, and the idle ones are dropped with it: when the database
    restarted they are all dead, and each would otherwise fail one request first."""

    def __init__(self, dsn: str, *, size: int, connect_args: dict[str, Any]) -> None:
        self._dsn = dsn
        self._connect_args = connect_args
        self._idle: list[Any] = []
        self._free = asyncio.Semaphore(size)
        self._closed = False
        # Counted for tests and the cost harness: reads served here.
        self.reads = 0

    async def read(
        self, principal: Principal | None, resource_type: str, id: str
    ) -> StoredVersion | None:
        """The current version of `resource_type/id` if `principal` may read it. Raises
        asyncpg's errors, OSError, or TimeoutError when no connection came free in time
        (`Store.read` turns them into the client's answer)."""
        return await self._fetch(read_current, principal, resource_type, id)

    async def vread(
        self, principal: Principal | None, resource_type: str, id: str, version: int
    ) -> StoredVersion | None:
        """Version `version` of `resource_type/id` if `principal` may read it; raises as
        `read`."""
        return await self._fetch(read_version, principal, resource_type, id, version)

    async def _fetch(self, query: Any, *args: Any) -> StoredVersion | None:
        """`query(connection, *args)` on a connection of the pool."""
        async with self.connection() as connection:
            found: StoredVersion | None = await query(connection, *args)
        self.reads += 1
        return found

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A connection of the pool for the statements of the block, each on its own (no
        transaction: READ COMMITTED gives each statement its snapshot): reads, vreads and
        searches (store/searcher.py), and the audit trail's batches (one COPY, committed on
        its own: store/audit_log.py). The block must leave the session as it found it (no
        transaction, no settings). A lost session drops every idle connection with it."""
        if self._free.locked():
            async with asyncio.timeout(ACQUIRE_TIMEOUT_S):
                await self._free.acquire()
        else:
            await self._free.acquire()
        try:
            connection = self._idle.pop() if self._idle else await self._connect()
            try:
                yield connection
            except (
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
                asyncpg.PostgresConnectionError,
                OSError,
            ):
                self._discard_all(connection)
                raise
            except asyncpg.PostgresError as error:
                state = str(getattr(error, "sqlstate", "") or "")
                if connection.is_closed() or state.startswith(("57P", "08")):
                    self._discard_all(connection)
                else:
                    self._idle.append(connection)
                raise
            except Exception:
                # Failed in the caller's own code, between statements: the session is
                # as it was.
                if connection.is_closed():
                    self._discard_all(connection)
                else:
                    self._idle.append(connection)
                raise
            except BaseException:
                # Cancelled mid-statement (the client went away): its protocol may still
                # wait for the answer, so it is not used again.
                connection.terminate()
                raise
            if self._closed:
                await connection.close()
            else:
                self._idle.append(connection)
        finally:
            self._free.release()

    async def _connect(self) -> Any:
        return await asyncpg.connect(self._dsn, **self._connect_args)

    def _discard_all(self, connection: Any) -> None:
        connection.terminate()
        idle, self._idle = self._idle, []
        for other in idle:
            other.terminate()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.close()


_READERS: weakref.WeakKeyDictionary[Any, Reader] = weakref.WeakKeyDictionary()


def attach(engine: Any, reader: Reader) -> None:
    """`reader` serves the reads of every `Store` on `engine`."""
    _READERS[engine] = reader


def reader_for(engine: Any) -> Reader | None:
    return _READERS.get(engine)

"""The read of one current resource through a pool of raw asyncpg connections of its own,
beside SQLAlchemy's: taking a pooled connection through SQLAlchemy (checkout, isolation
level, reset on return) cost a quarter of a read's CPU, for one statement that needs none
of it. The statement is prepared once per connection (asyncpg's statement cache) and only
its values are bound; nothing is reset when a connection goes back, since nothing read
here changes a session (no transaction, no settings, no LISTEN).

`open_database` makes one `Reader` per engine and `attach`es it; `Store` finds it with
`reader_for(engine)` (an engine made elsewhere has none, and its stores read through
SQLAlchemy as before). Its connections are opened as reads need them, up to the engine's
pool size."""

from __future__ import annotations

import weakref
from typing import Any

import asyncpg

from cmfhir.auth.principal import Principal
from cmfhir.store.reads import read_current
from cmfhir.store.records import StoredVersion

__all__ = ["Reader", "attach", "reader_for"]

# How long a read waits for a free connection before the request is answered 503, as
# SQLAlchemy's pool_timeout.
ACQUIRE_TIMEOUT_S = 30.0


async def _no_reset(connection: Any) -> None:
    """Nothing to reset: these connections only run the read (see the module's text)."""


class Reader:
    def __init__(self, dsn: str, *, size: int, connect_args: dict[str, Any]) -> None:
        self._dsn = dsn
        self._size = size
        self._connect_args = connect_args
        self._pool: Any = None
        # Counted for tests and the cost harness: reads served by this pool.
        self.reads = 0

    async def _open(self) -> Any:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=0,
                max_size=self._size,
                reset=_no_reset,
                **self._connect_args,
            )
        return self._pool

    async def read(
        self, principal: Principal | None, resource_type: str, id: str
    ) -> StoredVersion | None:
        """The current version of `resource_type/id` if `principal` may read it. Raises
        asyncpg's errors, OSError, or TimeoutError when no connection came free in time
        (`Store.read` turns them into the client's answer)."""
        pool = self._pool or await self._open()
        async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as connection:
            self.reads += 1
            try:
                return await read_current(connection, principal, resource_type, id)
            except (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError):
                # The database went away or restarted: the other idle connections are as
                # dead as this one. Each is replaced when next taken, rather than each
                # failing one request first.
                pool.expire_connections()
                raise

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


_READERS: weakref.WeakKeyDictionary[Any, Reader] = weakref.WeakKeyDictionary()


def attach(engine: Any, reader: Reader) -> None:
    """`reader` serves the reads of every `Store` on `engine`."""
    _READERS[engine] = reader


def reader_for(engine: Any) -> Reader | None:
    return _READERS.get(engine)

"""The application with every `GET Type/id` answered from memory once read from PostgreSQL
(the read pool's `read` keeps what it found): what serving a read costs without the
database round trip, for `bench.read_asgi_cost --stored` and `bench.read_serving
--stored` (an ASGI server started on `bench.read_stored:create_app`)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

__all__ = ["create_app", "reads_from_memory"]


def reads_from_memory() -> None:
    """The read pool's reads answered from memory once read from PostgreSQL."""
    from cmfhir.store.reader import Reader

    if getattr(Reader.read, "from_memory", False):
        return
    real = Reader.read
    kept: dict[tuple[str, str], Any] = {}

    async def read(self: Reader, principal: Any, resource_type: str, id: str) -> Any:
        key = (resource_type, id)
        if key not in kept:
            kept[key] = await real(self, principal, resource_type, id)
        return kept[key]

    read.from_memory = True  # type: ignore[attr-defined]
    Reader.read = read  # type: ignore[method-assign]


def create_app() -> FastAPI:
    from cmfhir.app import create_app as create

    reads_from_memory()
    return create()

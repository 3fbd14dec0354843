"""Reads of one resource go through the engine's own asyncpg connections (store/reader.py):
the same answers as a read in a transaction, narrowed alike, and a dead connection costs
one 503, not one per pooled connection."""

from __future__ import annotations

from typing import Any

import pytest

from cmfhir.auth.principal import OPEN, TRUSTED, Principal
from cmfhir.config import Settings
from cmfhir.errors import ServiceUnavailable
from cmfhir.interactions import FhirContext, create
from cmfhir.resources.compartment import load_patient_compartment
from cmfhir.resources.search_parameters import load_registry
from cmfhir.store import Store, open_database
from cmfhir.store.database import Database


async def test_reads_go_through_the_reader_and_are_narrowed(settings: Settings) -> None:
    database = await open_database(settings.database_url, settings.data_dir, pool_size=2)
    try:
        store = Store(database.engine)
        reader = store.reader
        assert reader is not None and reader is database.reader
        ctx = FhirContext(
            store=store,
            registry=load_registry(settings.profiles_dir),
            compartment=load_patient_compartment(settings.profiles_dir),
            principal=TRUSTED,
        )
        made = await create(ctx, "Patient", {"resourceType": "Patient", "active": True})
        assert made.id is not None
        found = await store.read(OPEN, "Patient", made.id)
        assert found is not None and found.version == 1 and not found.deleted
        assert found.content is not None and '"active": true' in found.content
        async with store.transaction(principal=TRUSTED, read_only=True) as repo:
            assert await repo.read("Patient", made.id) == found
        assert await store.read(OPEN, "Patient", "no-such-id") is None
        # No principal sees nothing; a patient token only its own compartment.
        assert await store.read(None, "Patient", made.id) is None
        other = Principal("patient", patient="someone-else", scopes=("patient/*.rs",))
        assert await store.read(other, "Patient", made.id) is None
        itself = Principal("patient", patient=made.id, scopes=("patient/*.rs",))
        assert await store.read(itself, "Patient", made.id) == found
        assert reader.reads == 5
    finally:
        await database.dispose()


async def kill_idle_connections(database: Database) -> None:
    """Two connections put in the read pool, then both killed from the server's side."""
    reader: Any = database.reader
    first, second = await reader._connect(), await reader._connect()
    reader._idle.extend([first, second])
    pids = [first.get_server_pid(), second.get_server_pid()]
    async with database.engine.connect() as admin:
        raw = await admin.get_raw_connection()
        driver: Any = raw.driver_connection
        for pid in pids:
            await driver.execute("SELECT pg_terminate_backend($1)", pid)


async def test_a_dead_connection_is_one_503_then_reads_recover(settings: Settings) -> None:
    database = await open_database(
        settings.database_url, settings.data_dir, pool_size=2, migrate=False
    )
    try:
        store = Store(database.engine)
        reader: Any = store.reader
        await kill_idle_connections(database)
        with pytest.raises(ServiceUnavailable):
            await store.read(OPEN, "Patient", "reader-never-stored")
        assert reader._idle == []  # the other dead one dropped with it
        # An id no other test stores: the recovered read answers "not found", not a 503.
        assert await store.read(OPEN, "Patient", "reader-never-stored") is None
    finally:
        await database.dispose()

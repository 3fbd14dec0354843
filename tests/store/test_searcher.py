"""Searches run on the engine's own asyncpg connections (store/searcher.py), not on a
SQLAlchemy checkout: the same answers, narrowed alike, and a dead connection costs one 503,
not one per pooled connection. An engine without a read pool still searches."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from tests.store.test_reader import kill_idle_connections

from cmfhir.auth.principal import OPEN, TRUSTED, Principal
from cmfhir.config import Settings, default_profiles_dir
from cmfhir.errors import ServiceUnavailable
from cmfhir.interactions import FhirContext, create
from cmfhir.resources.compartment import load_patient_compartment
from cmfhir.resources.search_parameters import load_registry
from cmfhir.search.model import Include
from cmfhir.search.parse import parse_search
from cmfhir.store import Repository, Searcher, Store, open_database
from cmfhir.store.database import async_url

RUN = uuid.uuid4().hex[:8]
REGISTRY = load_registry(default_profiles_dir())


def _context(store: Store, settings: Settings) -> FhirContext:
    return FhirContext(
        store=store,
        registry=REGISTRY,
        compartment=load_patient_compartment(settings.profiles_dir),
        principal=TRUSTED,
    )


async def _ids(store: Store, principal: Principal | None, params: list[tuple[str, str]]) -> Any:
    """What searched it, the SQLAlchemy connections checked out meanwhile, the matched ids,
    the included ones and the total, searched as `principal`."""
    request = parse_search(REGISTRY, "Observation", params)
    async with store.searching(principal) as searches:
        kind = type(searches)
        checked_out = store.engine.pool.checkedout()  # type: ignore[attr-defined]
        page = await searches.search(request, count_up_to=1000)
        found = await searches.included(
            [(rid, t, i) for rid, (t, i, _) in zip(page.rids, page.matches, strict=True)],
            [Include("Observation", "subject", None, iterate=False, reverse=False)],
            [],
            max_depth=1,
            max_total=10,
        )
    return (
        kind,
        checked_out,
        [i for _, i, _ in page.matches],
        [i for _, i, _ in found.resources],
        page.total,
    )


async def test_searches_go_through_the_reader_and_are_narrowed(settings: Settings) -> None:
    database = await open_database(settings.database_url, settings.data_dir, pool_size=2)
    try:
        store = Store(database.engine)
        ctx = _context(store, settings)
        member = await create(ctx, "Patient", {"resourceType": "Patient", "active": True})
        observations = []
        for n in range(3):
            made = await create(
                ctx,
                "Observation",
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "urn:test:searcher", "code": RUN}]},
                    "subject": {"reference": f"Patient/{member.id}"},
                    "valueInteger": n,
                },
            )
            observations.append(made.id)
        params = [("code", f"urn:test:searcher|{RUN}"), ("_count", "2")]

        kind, checked_out, matches, included, total = await _ids(store, OPEN, params)
        assert kind is Searcher and checked_out == 0
        assert matches == observations[:2] and included == [member.id] and total == 3
        # No principal sees nothing; a patient token only its own compartment.
        assert (await _ids(store, None, params))[2:] == ([], [], 0)
        other = Principal("patient", patient="someone-else", scopes=("patient/*.rs",))
        assert (await _ids(store, other, params))[2:] == ([], [], 0)
        itself = Principal("patient", patient=member.id, scopes=("patient/*.rs",))
        # Counted only when asked for (the access predicate tests each candidate).
        assert (await _ids(store, itself, params))[2:] == (observations[:2], [member.id], None)
        # What the member may search but not read is matched, never included.
        searching_only = Principal("patient", patient=member.id, scopes=("patient/*.s",))
        assert (await _ids(store, searching_only, params))[2:4] == (observations[:2], [])
    finally:
        await database.dispose()


async def test_a_dead_connection_is_one_503_then_searches_recover(settings: Settings) -> None:
    database = await open_database(
        settings.database_url, settings.data_dir, pool_size=4, migrate=False
    )
    try:
        store = Store(database.engine)
        reader: Any = store.reader
        await kill_idle_connections(database)
        params = [("code", f"urn:test:searcher|never-{RUN}")]
        with pytest.raises(ServiceUnavailable):
            await _ids(store, OPEN, params)
        assert reader._idle == []  # the other dead one dropped with it
        assert (await _ids(store, OPEN, params))[2:] == ([], [], 0)
    finally:
        await database.dispose()


async def test_an_engine_without_a_read_pool_searches_on_its_own(settings: Settings) -> None:
    engine = create_async_engine(async_url(settings.database_url or ""), pool_size=1)
    try:
        store = Store(engine)
        assert store.reader is None
        kind, _, matches, _, total = await _ids(
            store, OPEN, [("code", f"urn:test:searcher|never-{RUN}")]
        )
        assert kind is Repository and (matches, total) == ([], 0)
    finally:
        await engine.dispose()

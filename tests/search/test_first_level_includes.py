"""The first level of `_include`/`_revinclude` read in the page's own statement
(store/searcher.py `search_including`): the same resources as a level of its own, brought
only by the page's matches (not by the row read past them to know there is a next page),
narrowed by what the principal may read, and `:iterate` followed on from it."""

from __future__ import annotations

import uuid
from typing import Any

from cmfhir.auth.principal import OPEN, TRUSTED, Principal
from cmfhir.config import Settings, default_profiles_dir
from cmfhir.interactions import FhirContext, create
from cmfhir.resources.compartment import load_patient_compartment
from cmfhir.resources.search_parameters import load_registry
from cmfhir.search.parse import parse_search
from cmfhir.store import Searcher, Store, open_database

RUN = uuid.uuid4().hex[:8]
REGISTRY = load_registry(default_profiles_dir())


class _Counting:
    """The asyncpg connection, counting the statements sent through it."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.statements = 0

    async def fetch(self, *args: Any) -> Any:
        self.statements += 1
        return await self.driver.fetch(*args)

    async def fetchval(self, *args: Any) -> Any:
        self.statements += 1
        return await self.driver.fetchval(*args)


async def _both(
    store: Store, principal: Principal | None, resource_type: str, params: list[tuple[str, str]]
) -> tuple[list[str], list[str], int]:
    """Matched and included ids, as `search_including` gives them (and the statements it
    sent), after checking they are those of `search` and then `included`."""
    async with store.searching(principal) as searches:
        assert isinstance(searches, Searcher)
        counting = _Counting(searches.driver)
        folded = Searcher(counting, principal)
        request = parse_search(REGISTRY, resource_type, params)
        page, found = await folded.search_including(
            request, count_up_to=0, max_depth=3, max_total=100
        )
        request = parse_search(REGISTRY, resource_type, params)
        apart = await searches.search(request, count_up_to=0)
        level = await searches.included(
            [(rid, t, i) for rid, (t, i, _) in zip(apart.rids, apart.matches, strict=True)],
            request.include,
            request.revinclude,
            max_depth=3,
            max_total=100,
        )
    assert (page.matches, page.next_cursor, page.total) == (
        apart.matches,
        apart.next_cursor,
        apart.total,
    )
    assert (found.resources, found.capped, found.deep) == (
        level.resources,
        level.capped,
        level.deep,
    )
    return [i for _, i, _ in page.matches], [i for _, i, _ in found.resources], counting.statements


async def test_first_level_in_the_page_statement(settings: Settings) -> None:
    database = await open_database(settings.database_url, settings.data_dir, pool_size=2)
    try:
        store = Store(database.engine)
        ctx = FhirContext(
            store=store,
            registry=REGISTRY,
            compartment=load_patient_compartment(settings.profiles_dir),
            principal=TRUSTED,
        )
        doctor = await create(ctx, "Practitioner", {"resourceType": "Practitioner"})
        member, other = [
            await create(
                ctx,
                "Patient",
                {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:test:first-level", "value": RUN}],
                    "generalPractitioner": [{"reference": f"Practitioner/{doctor.id}"}],
                },
            )
            for _ in range(2)
        ]
        # Two Observations of the member, then one of the other member: with `_count=2`
        # the third is the row read past the page, whose subject must not be brought.
        observations = [
            await create(
                ctx,
                "Observation",
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "urn:test:first-level", "code": RUN}]},
                    "subject": {"reference": f"Patient/{subject.id}"},
                },
            )
            for subject in (member, member, other)
        ]
        code = ("code", f"urn:test:first-level|{RUN}")
        subject = ("_include", "Observation:subject")
        page = (observations[0].id, observations[1].id)

        matched, brought, statements = await _both(
            store, OPEN, "Observation", [code, subject, ("_count", "2")]
        )
        assert (tuple(matched), brought, statements) == (page, [member.id], 1)
        # :iterate goes on from the first level, a statement per further level (the third
        # finds nothing to follow from the Practitioner).
        iterate = ("_include:iterate", "Patient:general-practitioner")
        matched, brought, statements = await _both(
            store, OPEN, "Observation", [code, subject, iterate, ("_count", "2")]
        )
        assert (tuple(matched), brought, statements) == (page, [member.id, doctor.id], 3)
        # _revinclude from a page of one Patient brings that Patient's Observations only.
        identifier = ("identifier", f"urn:test:first-level|{RUN}")
        revinclude = ("_revinclude", "Observation:subject")
        matched, brought, _ = await _both(
            store, OPEN, "Patient", [identifier, revinclude, ("_count", "1")]
        )
        assert (matched, brought) == ([member.id], list(page))

        # Narrowed: the member's own token reads its own Observations and itself; with
        # search-only scopes the Observations match but the Patient is never included.
        itself = Principal("patient", patient=member.id, scopes=("patient/*.rs",))
        matched, brought, _ = await _both(store, itself, "Observation", [code, subject])
        assert (tuple(matched), brought) == (page, [member.id])
        searching_only = Principal("patient", patient=member.id, scopes=("patient/*.s",))
        matched, brought, _ = await _both(store, searching_only, "Observation", [code, subject])
        assert (tuple(matched), brought) == (page, [])
        # Nobody: nothing matched, nothing brought.
        assert (await _both(store, None, "Observation", [code, subject]))[:2] == ([], [])
    finally:
        await database.dispose()

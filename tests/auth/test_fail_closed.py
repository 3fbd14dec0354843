"""The store fails closed: a transaction opened without a principal reads nothing and writes
nothing; the trusted principal sees everything; a restricted one only what its scopes and
population allow — the same predicate every query path ANDs in (store/access.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from cmfhir.app import open_context
from cmfhir.auth.principal import TRUSTED, Principal
from cmfhir.config import Settings
from cmfhir.errors import Forbidden
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.create import create_in
from cmfhir.resources.search_parameters import SearchParameterRegistry
from cmfhir.search.model import SearchRequest
from cmfhir.search.parse import parse_search


@pytest.fixture
async def ctx(settings: Settings, base: str) -> AsyncIterator[FhirContext]:
    # `base`: the server has migrated the database.
    async with open_context(settings) as context:
        yield context


def _search(registry: SearchParameterRegistry, query: list[tuple[str, str]]) -> SearchRequest:
    return parse_search(registry, "Patient", query, strict=True)


async def test_no_principal_reads_and_writes_nothing(ctx: FhirContext) -> None:
    family = f"Closed{uuid.uuid4().hex[:8]}"
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        record, _ = await create_in(
            ctx, repo, {"resourceType": "Patient", "name": [{"family": family}]}
        )
    request = _search(ctx.registry, [("family", family)])
    async with ctx.store.transaction(read_only=True) as repo:
        assert await repo.read("Patient", record.id) is None
        assert await repo.vread("Patient", record.id, 1) is None
        page = await repo.search(request, count_up_to=None)
        assert page.matches == [] and page.total == 0
    with pytest.raises(Forbidden):
        async with ctx.store.transaction() as repo:
            await create_in(ctx, repo, {"resourceType": "Patient"})
    async with ctx.store.transaction(principal=TRUSTED, read_only=True) as repo:
        assert await repo.read("Patient", record.id) is not None
        page = await repo.search(request, count_up_to=None)
        assert page.total == 1
    # A patient/ principal sees its own Patient and no other.
    mine = Principal("patient", patient=record.id, scopes=("patient/*.rs",))
    other = Principal("patient", patient="someone-else", scopes=("patient/*.rs",))
    async with ctx.store.transaction(principal=mine, read_only=True) as repo:
        assert await repo.read("Patient", record.id) is not None
    async with ctx.store.transaction(principal=other, read_only=True) as repo:
        assert await repo.read("Patient", record.id) is None
        assert (await repo.search(request, count_up_to=None)).total == 0

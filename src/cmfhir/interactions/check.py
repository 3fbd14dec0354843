"""`cmfhir check`: is what is stored consistent? Current versions against history, versions
against the outbox, and every live resource's index rows against a fresh extraction from
its content. Reports resource types and ids only, never content."""

from __future__ import annotations

from cmfhir.interactions.context import FhirContext
from cmfhir.resources.fhirjson import parse_json
from cmfhir.resources.index_values import IndexingFailed, extract_index

__all__ = ["check"]


async def check(ctx: FhirContext, *, batch: int = 500) -> dict[str, list[str]]:
    """Every inconsistency found, by kind, with a sample of where; empty when all is well."""
    async with ctx.store.transaction(read_only=True) as repo:
        problems = await repo.structural_problems()
    stale: list[str] = []
    failing: list[str] = []
    after = 0
    while True:
        async with ctx.store.transaction(read_only=True) as repo:
            rows = await repo.batch(None, after, batch)
            if not rows:
                break
            expected = []
            for rid, type_, content in rows:
                try:
                    expected.append((rid, type_, extract_index(parse_json(content), ctx.registry)))
                except IndexingFailed as error:
                    failing.append(f"{type_} rid {rid} ({error.parameter.code})")
            differing = set(await repo.index_differences(expected))
        stale += [f"{type_} rid {rid}" for rid, type_, _ in rows if rid in differing]
        after = rows[-1][0]
    if stale:
        problems["index rows differ from the resource's content"] = stale[:20]
    if failing:
        problems["search parameter expressions fail on the resource"] = failing[:20]
    return problems

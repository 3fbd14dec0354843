"""`cmfhir check`: is what is stored consistent? Current versions against history, versions
against the outbox, and every live resource's index rows against a fresh extraction from
its content. Reports resource types and ids only, never content.

Everything is read in one read-only REPEATABLE READ transaction, so a server writing
meanwhile cannot make content and index rows look different: the check sees one
committed state (and, being read-only, holds back no writer and no history follower).
"""

from __future__ import annotations

from cmfhir.auth.principal import TRUSTED
from cmfhir.interactions.context import FhirContext
from cmfhir.resources.fhirjson import parse_json
from cmfhir.resources.index_values import IndexingFailed, extract_index

__all__ = ["check"]


async def check(ctx: FhirContext, *, batch: int = 500) -> dict[str, list[str]]:
    """Every inconsistency found, by kind, with a sample of where; empty when all is well."""
    stale: list[str] = []
    failing: list[str] = []
    async with ctx.store.snapshot(TRUSTED) as repo:
        problems = await repo.structural_problems()
        after = 0
        while rows := await repo.batch(None, after, batch):
            expected = []
            for rid, type_, content in rows:
                try:
                    expected.append((rid, type_, extract_index(parse_json(content), ctx.registry)))
                except IndexingFailed as error:  # a search parameter's expression fails on it
                    failing.append(f"{type_} rid {rid} ({error.parameter.code})")
            differing = set(await repo.index_differences(expected))
            stale += [f"{type_} rid {rid}" for rid, type_, _ in rows if rid in differing]
            after = rows[-1][0]
    if stale:
        problems["index rows differ from the resource's content"] = stale[:20]
    if failing:
        problems["search parameter expressions fail on the resource"] = failing[:20]
    return problems

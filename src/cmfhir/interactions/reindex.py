"""Rebuilding the search index of stored resources, after a SearchParameter was added to or
changed in `profiles/` (`cmfhir reindex [--type T]`). Batches are locked while they are
rebuilt, so a concurrent write never has its fresh index replaced by a stale one."""

from __future__ import annotations

from cmfhir.interactions.common import require_type
from cmfhir.interactions.context import FhirContext
from cmfhir.resources.compartment import patient_compartment
from cmfhir.resources.fhirjson import parse_json
from cmfhir.resources.index_values import IndexingFailed, extract_index

__all__ = ["reindex"]


async def reindex(ctx: FhirContext, resource_type: str | None = None, *, batch: int = 500) -> int:
    """Re-extract the index of every live resource (of one type); returns how many."""
    if resource_type is not None:
        require_type(resource_type)
    after, done = 0, 0
    while True:
        async with ctx.store.transaction(principal=ctx.principal) as repo:
            rows = await repo.batch(resource_type, after, batch, lock=True)
            if not rows:
                return done
            entries = []
            for rid, type_, content in rows:
                resource = parse_json(content)
                try:
                    index = extract_index(resource, ctx.registry)
                except IndexingFailed as error:
                    raise IndexingFailed(
                        error.parameter, f"{type_}/{resource.get('id')}", error.cause
                    ) from error
                patients = patient_compartment(resource, ctx.compartment, index)
                entries.append((rid, type_, index, patients[0] if patients else None))
            await repo.replace_index(entries)
        after = rows[-1][0]
        done += len(rows)

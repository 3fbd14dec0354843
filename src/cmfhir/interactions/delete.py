"""delete and conditional delete (https://hl7.org/fhir/R4B/http.html#delete, #cdelete).
A delete is a version: history keeps it, and a read then answers 410 Gone."""

from __future__ import annotations

from cmfhir.errors import Issue, NotFound, PreconditionFailed, operation_outcome
from cmfhir.interactions.common import (
    check_id,
    check_if_match,
    match,
    parse_conditions,
    require_type,
)
from cmfhir.interactions.context import FhirContext, Result, utcnow
from cmfhir.interactions.versions import deletion
from cmfhir.store import Repository

__all__ = ["delete", "delete_conditional", "delete_in"]


async def delete_in(
    repo: Repository, resource_type: str, id: str, *, if_match: str | None = None
) -> Result:
    current = await repo.lock(resource_type, id)
    if current is None:
        raise NotFound(f"{resource_type}/{id} is not known")
    check_if_match(if_match, current.version, f"{resource_type}/{id}")
    if current.deleted:
        return _outcome(f"{resource_type}/{id} was already deleted", current.version)
    record = deletion(resource_type, id, current.version + 1, utcnow(), current.rid)
    await repo.write([record])
    result = _outcome(f"{resource_type}/{id} deleted", record.version)
    result.last_updated = record.last_updated
    return result


def _outcome(message: str, version: int | None) -> Result:
    body = operation_outcome([Issue(message, code="informational", severity="information")])
    return Result(200, body, version=version)


async def delete(
    ctx: FhirContext, resource_type: str, id: str, *, if_match: str | None = None
) -> Result:
    require_type(resource_type, ctx.fhir_version)
    check_id(id)
    async with ctx.store.transaction(principal=ctx.principal) as repo:
        return await delete_in(repo, resource_type, id, if_match=if_match)


async def delete_conditional(ctx: FhirContext, resource_type: str, query: str) -> Result:
    """Deletes the single match; no match is a no-op; several matches is 412."""
    require_type(resource_type, ctx.fhir_version)
    conditions = parse_conditions(ctx.registry, resource_type, query)
    async with ctx.store.transaction(principal=ctx.principal) as repo:
        found = await match(repo, conditions)
        if len(found) > 1:
            raise PreconditionFailed(f"'{query}' matches more than one {resource_type}")
        if not found:
            issue = Issue(
                f"No {resource_type} matches the criteria; nothing was deleted",
                code="not-found",
                severity="warning",
            )
            return Result(200, operation_outcome([issue]))
        return await delete_in(repo, resource_type, found[0][0])

"""update, update-as-create and conditional update
(https://hl7.org/fhir/R4B/http.html#update, #cond-update)."""

from __future__ import annotations

from typing import Any

from cmfhir.errors import BadRequest, PreconditionFailed
from cmfhir.interactions.common import (
    Conditions,
    check_id,
    check_if_match,
    match,
    parse_conditions,
    require_type,
)
from cmfhir.interactions.context import FhirContext, Result, utcnow
from cmfhir.interactions.questionnaire_responses import ResponseChecker
from cmfhir.interactions.versions import new_id, to_version, written
from cmfhir.resources.version_validation import validate_for_version
from cmfhir.store import NewVersion, Repository

__all__ = ["conditional_target", "update", "update_conditional", "update_in"]


async def update_in(
    ctx: FhirContext,
    repo: Repository,
    resource: dict[str, Any],
    id: str,
    *,
    if_match: str | None = None,
) -> tuple[NewVersion, bool]:
    """Write a new version of `resource` (validated) as `id`; True when it was created."""
    resource_type = resource["resourceType"]
    current = (await repo.lock_or_claim([(resource_type, id)])).get((resource_type, id))
    if current is None:
        if if_match is not None:
            raise PreconditionFailed(f"{resource_type}/{id} does not exist, so If-Match fails")
        version, rid, created = 1, None, True
    else:
        check_if_match(
            if_match, current.version, f"{resource_type}/{id}", exists=not current.deleted
        )
        version, rid, created = current.version + 1, current.rid, current.deleted
    record, _ = to_version(
        ctx,
        resource,
        id=id,
        version=version,
        now=utcnow(),
        method="create" if created else "update",
        rid=rid,
    )
    await repo.write([record])
    await ResponseChecker(ctx, repo).check(record)
    return record, created


async def update(
    ctx: FhirContext,
    resource_type: str,
    id: str,
    resource: Any,
    *,
    if_match: str | None = None,
) -> Result:
    require_type(resource_type, ctx.fhir_version)
    check_id(id)
    validate_for_version(resource, ctx.fhir_version, expected_type=resource_type)
    body_id = resource.get("id")
    if body_id is None:
        raise BadRequest("The resource has no id; an update must carry the id of the URL")
    if body_id != id:
        raise BadRequest(
            f"The id in the resource ('{body_id}') differs from the id in the URL ('{id}')",
            expression=[f"{resource_type}.id"],
        )
    async with ctx.store.transaction(principal=ctx.principal) as repo:
        record, created = await update_in(ctx, repo, resource, id, if_match=if_match)
    return written(record, created)


async def conditional_target(
    repo: Repository, conditions: Conditions, body_id: str | None, *, lock: bool = True
) -> tuple[str, bool]:
    """The id a conditional update writes to, and whether it matched: the single match, or
    a new (or the body's) id. Racing conditional updates with the same criteria take turns
    on a lock named by what the criteria mean, so they do not make two resources."""
    found = await match(repo, conditions, lock=lock)
    resource_type = conditions.resource_type
    if len(found) > 1:
        raise PreconditionFailed(f"'{conditions.query}' matches more than one {resource_type}")
    if found:
        target = found[0][0]
        if body_id is not None and body_id != target:
            raise BadRequest(
                f"The resource's id '{body_id}' differs from the matched {resource_type}/{target}"
            )
        return target, True
    return body_id or new_id(), False


async def update_conditional(
    ctx: FhirContext,
    resource_type: str,
    query: str,
    resource: Any,
    *,
    if_match: str | None = None,
) -> Result:
    require_type(resource_type, ctx.fhir_version)
    validate_for_version(resource, ctx.fhir_version, expected_type=resource_type)
    conditions = parse_conditions(ctx.registry, resource_type, query)
    async with ctx.store.transaction(principal=ctx.principal) as repo:
        target, _ = await conditional_target(repo, conditions, resource.get("id"))
        record, created = await update_in(ctx, repo, resource, target, if_match=if_match)
    return written(record, created)

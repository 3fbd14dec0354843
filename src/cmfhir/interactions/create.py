"""create and conditional create (https://hl7.org/fhir/R4B/http.html#create, #ccreate)."""

from __future__ import annotations

from typing import Any

from cmfhir.errors import PreconditionFailed
from cmfhir.interactions.common import Conditions, match, parse_conditions, require_type
from cmfhir.interactions.context import FhirContext, Result, utcnow
from cmfhir.interactions.questionnaire_responses import ResponseChecker
from cmfhir.interactions.versions import new_id, to_version, written
from cmfhir.resources.version_validation import validate_for_version
from cmfhir.store import NewVersion, Repository

__all__ = ["create", "create_in", "find_existing"]


async def find_existing(
    repo: Repository, conditions: Conditions, *, lock: bool = True
) -> tuple[str, str] | None:
    """The one resource `If-None-Exist` matches, or None; several matches is an error.

    A lock named by what the criteria mean makes racing conditional creates take turns
    however each spells them, so exactly one of them creates.
    """
    found = await match(repo, conditions, lock=lock)
    if len(found) > 1:
        raise PreconditionFailed(
            f"If-None-Exist '{conditions.query}' matches more than one {conditions.resource_type}"
        )
    return found[0] if found else None


async def create_in(
    ctx: FhirContext, repo: Repository, resource: dict[str, Any], *, id: str | None = None
) -> tuple[NewVersion, dict[str, Any]]:
    """Prepare a new resource (already validated) and write it in the open transaction."""
    record, served = to_version(
        ctx, resource, id=id or new_id(), version=1, now=utcnow(), method="create", rid=None
    )
    await repo.write([record])
    await ResponseChecker(ctx, repo).check(record)
    return record, served


async def create(
    ctx: FhirContext,
    resource_type: str,
    resource: Any,
    *,
    if_none_exist: str | None = None,
) -> Result:
    require_type(resource_type, ctx.fhir_version)
    validate_for_version(resource, ctx.fhir_version, expected_type=resource_type)
    conditions = (
        parse_conditions(ctx.registry, resource_type, if_none_exist) if if_none_exist else None
    )
    async with ctx.store.transaction(principal=ctx.principal) as repo:
        if conditions is not None:
            existing = await find_existing(repo, conditions)
            if existing is not None:
                id, content = existing
                return Result(200, content, resource_type=resource_type, id=id)
        record, _ = await create_in(ctx, repo, resource)
    return written(record, created=True)

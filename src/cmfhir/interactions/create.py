"""create and conditional create (https://hl7.org/fhir/R4B/http.html#create, #ccreate)."""

from __future__ import annotations

from typing import Any

from cmfhir.errors import PreconditionFailed
from cmfhir.interactions.common import advisory_key, match, require_type
from cmfhir.interactions.context import FhirContext, Result, utcnow
from cmfhir.interactions.versions import new_id, to_version, written
from cmfhir.resources.validation import validate_resource
from cmfhir.store import NewVersion, Repository

__all__ = ["create", "create_in", "find_existing"]


async def find_existing(
    ctx: FhirContext, repo: Repository, resource_type: str, if_none_exist: str
) -> tuple[str, str] | None:
    """The one resource `If-None-Exist` matches, or None; several matches is an error.

    An advisory lock on the criteria makes racing conditional creates take turns, so
    exactly one of them creates.
    """
    await repo.advisory_lock(advisory_key(resource_type, if_none_exist))
    found = await match(ctx, repo, resource_type, if_none_exist)
    if len(found) > 1:
        raise PreconditionFailed(
            f"If-None-Exist '{if_none_exist}' matches more than one {resource_type}"
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
    return record, served


async def create(
    ctx: FhirContext,
    resource_type: str,
    resource: Any,
    *,
    if_none_exist: str | None = None,
) -> Result:
    require_type(resource_type)
    validate_resource(resource, expected_type=resource_type)
    async with ctx.store.transaction() as repo:
        if if_none_exist:
            existing = await find_existing(ctx, repo, resource_type, if_none_exist)
            if existing is not None:
                id, content = existing
                return Result(200, content, resource_type=resource_type, id=id)
        record, _ = await create_in(ctx, repo, resource)
    return written(record, created=True)

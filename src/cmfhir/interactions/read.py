"""read and vread (https://hl7.org/fhir/R4B/http.html#read, #vread). The stored JSON text is
served as it is: no model is rebuilt on this hot path."""

from __future__ import annotations

from cmfhir.errors import Gone, NotFound
from cmfhir.interactions.common import check_id, require_type
from cmfhir.interactions.context import FhirContext, Result
from cmfhir.store import Repository, StoredVersion

__all__ = ["read", "read_in", "vread", "vread_in"]


def _result(found: StoredVersion, label: str) -> Result:
    if found.deleted:
        raise Gone(f"{label} was deleted", headers={"ETag": f'W/"{found.version}"'})
    return Result(
        200,
        found.content,
        resource_type=found.resource_type,
        id=found.id,
        version=found.version,
        last_updated=found.last_updated,
    )


async def read_in(repo: Repository, resource_type: str, id: str) -> Result:
    require_type(resource_type)
    check_id(id)
    found = await repo.read(resource_type, id)
    if found is None:
        raise NotFound(f"{resource_type}/{id} is not known")
    return _result(found, f"{resource_type}/{id}")


async def read(ctx: FhirContext, resource_type: str, id: str) -> Result:
    async with ctx.store.transaction(read_only=True) as repo:
        return await read_in(repo, resource_type, id)


async def vread_in(repo: Repository, resource_type: str, id: str, version_id: str) -> Result:
    require_type(resource_type)
    check_id(id)
    if not version_id.isdigit():
        raise NotFound(f"{resource_type}/{id} has no version '{version_id}'")
    found = await repo.vread(resource_type, id, int(version_id))
    if found is None:
        raise NotFound(f"{resource_type}/{id} has no version {version_id}")
    return _result(found, f"{resource_type}/{id}/_history/{version_id}")


async def vread(ctx: FhirContext, resource_type: str, id: str, version_id: str) -> Result:
    async with ctx.store.transaction(read_only=True) as repo:
        return await vread_in(repo, resource_type, id, version_id)

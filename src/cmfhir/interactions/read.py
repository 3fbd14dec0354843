"""read and vread (https://hl7.org/fhir/R4B/http.html#read, #vread). The stored JSON text is
served as it is: no model is rebuilt on this hot path. `_summary` and `_elements`
(https://hl7.org/fhir/R4B/search.html#summary) are honoured too, and only then is the
stored JSON parsed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cmfhir.errors import BadRequest, Gone, NotFound
from cmfhir.interactions.common import check_id, parse_version, require_type
from cmfhir.interactions.context import FhirContext, Result
from cmfhir.resources.fhirjson import parse_json
from cmfhir.resources.summary import (
    SUMMARY_MODES,
    check_elements,
    element_names,
    select_elements,
    summarize,
)
from cmfhir.store import Repository, StoredVersion

__all__ = ["read", "read_in", "vread", "vread_in"]


def _subset_params(
    resource_type: str, params: Sequence[tuple[str, str]]
) -> tuple[str | None, list[str]]:
    """`_summary` and `_elements` of a read; other parameters (`_format`, `_pretty`) are
    left to the HTTP layer."""
    summary: str | None = None
    elements: list[str] = []
    for name, raw in params:
        if name == "_summary":
            if raw not in SUMMARY_MODES | {"false"}:
                raise BadRequest(
                    f"Invalid value for '_summary': '{raw}' is not one of data, false, text, true",
                    expression=["_summary"],
                )
            summary = raw
        elif name == "_elements":
            elements.extend(e.strip() for e in raw.split(",") if e.strip())
    if elements and summary in SUMMARY_MODES:
        raise BadRequest(
            f"_elements cannot be combined with _summary={summary}", expression=["_elements"]
        )
    check_elements(resource_type, elements)
    return summary, elements


def _result(found: StoredVersion, label: str, params: Sequence[tuple[str, str]]) -> Result:
    summary, elements = _subset_params(found.resource_type, params)
    if found.deleted:
        raise Gone(f"{label} was deleted", headers={"ETag": f'W/"{found.version}"'})
    body: str | dict[str, Any] | None = found.content
    if found.content is not None and summary in SUMMARY_MODES:
        body = summarize(parse_json(found.content), summary)
    elif found.content is not None and elements:
        keys = element_names(found.resource_type, elements, matched=True)
        if keys is not None:
            body = select_elements(parse_json(found.content), keys)
    return Result(
        200,
        body,
        resource_type=found.resource_type,
        id=found.id,
        version=found.version,
        last_updated=found.last_updated,
    )


async def read_in(
    repo: Repository, resource_type: str, id: str, params: Sequence[tuple[str, str]] = ()
) -> Result:
    require_type(resource_type)
    check_id(id)
    found = await repo.read(resource_type, id)
    if found is None:
        raise NotFound(f"{resource_type}/{id} is not known")
    return _result(found, f"{resource_type}/{id}", params)


async def read(
    ctx: FhirContext, resource_type: str, id: str, params: Sequence[tuple[str, str]] = ()
) -> Result:
    async with ctx.store.transaction(read_only=True) as repo:
        return await read_in(repo, resource_type, id, params)


async def vread_in(
    repo: Repository,
    resource_type: str,
    id: str,
    version_id: str,
    params: Sequence[tuple[str, str]] = (),
) -> Result:
    require_type(resource_type)
    check_id(id)
    version = parse_version(version_id)
    if version is None:
        raise NotFound(f"{resource_type}/{id} has no version '{version_id}'")
    found = await repo.vread(resource_type, id, version)
    if found is None:
        raise NotFound(f"{resource_type}/{id} has no version {version_id}")
    return _result(found, f"{resource_type}/{id}/_history/{version_id}", params)


async def vread(
    ctx: FhirContext,
    resource_type: str,
    id: str,
    version_id: str,
    params: Sequence[tuple[str, str]] = (),
) -> Result:
    async with ctx.store.transaction(read_only=True) as repo:
        return await vread_in(repo, resource_type, id, version_id, params)

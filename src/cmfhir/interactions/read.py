"""read and vread (https://hl7.org/fhir/R4/http.html#read, #vread). The stored JSON text is
served as it is (with `resourceType` moved first): no model is rebuilt on this hot path.
`_summary` and `_elements` (https://hl7.org/fhir/R4/search.html#summary) are honoured too,
and only then is the stored JSON parsed. A conditional read
(https://hl7.org/fhir/R4/http.html#cread) answers 304 when `If-None-Match` names the
current version or nothing changed since `If-Modified-Since`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from cmfhir.errors import BadRequest, Gone, NotFound
from cmfhir.interactions.audit_store import AUDIT_EVENT, read_audit_event
from cmfhir.interactions.common import check_id, parse_version, require_type
from cmfhir.interactions.context import FhirContext, Result
from cmfhir.resources.fhirjson import parse_json
from cmfhir.resources.key_order import resource_type_first
from cmfhir.resources.summary import (
    SUMMARY_MODES,
    check_elements,
    element_names,
    select_elements,
    summarize,
)
from cmfhir.store import Repository, StoredVersion

__all__ = ["Conditions", "read", "read_in", "vread", "vread_in"]


@dataclass(frozen=True, slots=True)
class Conditions:
    """The conditional-read headers as sent: `If-None-Match`, `If-Modified-Since`."""

    if_none_match: str | None = None
    if_modified_since: str | None = None


def _etag_versions(header: str) -> set[str]:
    out: set[str] = set()
    for tag in header.split(","):
        tag = tag.strip()
        tag = tag.removeprefix("W/").strip('"')
        if tag:
            out.add(tag)
    return out


def _since(header: str) -> datetime | None:
    try:
        moment = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None  # RFC 9110 13.1.3: an invalid date is ignored
    return moment if moment.tzinfo is not None else None


def _not_modified(found: StoredVersion, conditions: Conditions) -> bool:
    """RFC 9110 13.2.2: If-None-Match decides when present; If-Modified-Since otherwise."""
    if conditions.if_none_match is not None:
        tags = _etag_versions(conditions.if_none_match)
        return "*" in tags or str(found.version) in tags
    if conditions.if_modified_since is not None:
        since = _since(conditions.if_modified_since)
        # Last-Modified is sent to the second; compare at that precision.
        return since is not None and found.last_updated.replace(microsecond=0) <= since
    return False


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


def _result(
    found: StoredVersion,
    label: str,
    params: Sequence[tuple[str, str]],
    conditions: Conditions | None = None,
) -> Result:
    summary, elements = _subset_params(found.resource_type, params)
    if found.deleted:
        raise Gone(f"{label} was deleted", headers={"ETag": f'W/"{found.version}"'})
    if conditions is not None and _not_modified(found, conditions):
        return Result(
            304,
            None,
            resource_type=found.resource_type,
            id=found.id,
            version=found.version,
            last_updated=found.last_updated,
        )
    body: str | dict[str, Any] | None = found.content
    if found.content is not None:
        subset: dict[str, Any] | None = None
        if summary in SUMMARY_MODES:
            subset = summarize(parse_json(found.content), summary)
        elif elements:
            keys = element_names(found.resource_type, elements, matched=True)
            if keys is not None:
                subset = select_elements(parse_json(found.content), keys)
        if subset is None:
            body = resource_type_first(found.content, found.resource_type)
        else:
            body = {"resourceType": found.resource_type, **subset}
    return Result(
        200,
        body,
        resource_type=found.resource_type,
        id=found.id,
        version=found.version,
        last_updated=found.last_updated,
    )


async def read_in(
    repo: Repository,
    resource_type: str,
    id: str,
    params: Sequence[tuple[str, str]] = (),
    conditions: Conditions | None = None,
) -> Result:
    require_type(resource_type)
    check_id(id)
    if resource_type == AUDIT_EVENT:
        found = await read_audit_event(repo, repo.principal, id)
    else:
        found = await repo.read(resource_type, id)
    if found is None:
        raise NotFound(f"{resource_type}/{id} is not known")
    return _result(found, f"{resource_type}/{id}", params, conditions)


async def read(
    ctx: FhirContext,
    resource_type: str,
    id: str,
    params: Sequence[tuple[str, str]] = (),
    conditions: Conditions | None = None,
) -> Result:
    require_type(resource_type, ctx.fhir_version)
    check_id(id)
    if resource_type == AUDIT_EVENT:
        found = await read_audit_event(ctx.store, ctx.principal, id)
    else:
        found = await ctx.store.read(ctx.principal, resource_type, id)
    if found is None:
        raise NotFound(f"{resource_type}/{id} is not known")
    return _result(found, f"{resource_type}/{id}", params, conditions)


async def vread_in(
    repo: Repository,
    resource_type: str,
    id: str,
    version_id: str,
    params: Sequence[tuple[str, str]] = (),
    conditions: Conditions | None = None,
) -> Result:
    require_type(resource_type)
    check_id(id)
    version = parse_version(version_id)
    if version is None:
        raise NotFound(f"{resource_type}/{id} has no version '{version_id}'")
    if resource_type == AUDIT_EVENT:
        found = await read_audit_event(repo, repo.principal, id, version)
    else:
        found = await repo.vread(resource_type, id, version)
    if found is None:
        raise NotFound(f"{resource_type}/{id} has no version {version_id}")
    return _result(found, f"{resource_type}/{id}/_history/{version_id}", params, conditions)


async def vread(
    ctx: FhirContext,
    resource_type: str,
    id: str,
    version_id: str,
    params: Sequence[tuple[str, str]] = (),
    conditions: Conditions | None = None,
) -> Result:
    require_type(resource_type, ctx.fhir_version)
    check_id(id)
    version = parse_version(version_id)
    if version is None:
        raise NotFound(f"{resource_type}/{id} has no version '{version_id}'")
    # One statement on the read pool, as a read (store/reader.py).
    if resource_type == AUDIT_EVENT:
        found = await read_audit_event(ctx.store, ctx.principal, id, version)
    else:
        found = await ctx.store.vread(ctx.principal, resource_type, id, version)
    if found is None:
        raise NotFound(f"{resource_type}/{id} has no version {version_id}")
    return _result(found, f"{resource_type}/{id}/_history/{version_id}", params, conditions)

"""Turning a validated resource into the version the store writes: id and meta filled in,
index values extracted, the Patient compartment found, the JSON text made once."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from cmfhir.interactions.context import FhirContext, Result, instant
from cmfhir.resources.compartment import patient_compartment
from cmfhir.resources.fhirjson import dump_json
from cmfhir.resources.index_values import extract_index
from cmfhir.store import Method, NewVersion

__all__ = ["deletion", "new_id", "stamp", "to_version", "written"]


def new_id() -> str:
    return str(uuid.uuid4())


def stamp(resource: dict[str, Any], id: str, version: int, now: datetime) -> dict[str, Any]:
    """The resource as served: resourceType, id and meta first, the client's content after."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = instant(now)
    out: dict[str, Any] = {"resourceType": resource["resourceType"], "id": id, "meta": meta}
    for key, value in resource.items():
        if key not in out:
            out[key] = value
    return out


def to_version(
    ctx: FhirContext,
    resource: dict[str, Any],
    *,
    id: str,
    version: int,
    now: datetime,
    method: Method,
    rid: int | None,
) -> tuple[NewVersion, dict[str, Any]]:
    hook = ctx.write_hooks.get(resource["resourceType"])
    if hook is not None:
        resource = hook(ctx, resource, id)
    served = stamp(resource, id, version, now)
    index = extract_index(served, ctx.registry)
    patients = patient_compartment(served, ctx.compartment, index)
    record = NewVersion(
        resource_type=served["resourceType"],
        id=id,
        version=version,
        last_updated=now,
        method=method,
        content=dump_json(served).decode(),
        index=index,
        patient_id=patients[0] if patients else None,
        rid=rid,
    )
    return record, served


def deletion(resource_type: str, id: str, version: int, now: datetime, rid: int) -> NewVersion:
    return NewVersion(
        resource_type=resource_type,
        id=id,
        version=version,
        last_updated=now,
        method="delete",
        content=None,
        index=None,
        patient_id=None,
        rid=rid,
    )


def written(record: NewVersion, created: bool) -> Result:
    """The answer to a write: 201 for a new resource, 200 for a new version, 204 for a
    delete; with the version's ETag, Last-Modified and (not for a delete) Location."""
    if record.method == "delete":
        status, location = 204, None
    else:
        status = 201 if created else 200
        location = f"{record.resource_type}/{record.id}/_history/{record.version}"
    return Result(
        status,
        record.content,
        resource_type=record.resource_type,
        id=record.id,
        version=record.version,
        last_updated=record.last_updated,
        location=location,
    )

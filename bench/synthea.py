"""Synthea patient bundles as ingest input: `collection` or `transaction` Bundles become
transactions of POST entries whose fullUrls and internal references are fresh urn:uuids,
so the same files can be loaded any number of times (https://hl7.org/fhir/R4B/http.html#trules)."""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import orjson

__all__ = ["load_synthea", "synthea_bundle"]

Resource = dict[str, Any]


def load_synthea(directory: Path) -> list[Resource]:
    """Every Bundle (`*.json`) in `directory`, sorted by file name."""
    bundles = []
    for path in sorted(directory.glob("*.json")):
        data = orjson.loads(path.read_bytes())
        if data.get("resourceType") == "Bundle" and data.get("type") in (
            "collection",
            "transaction",
        ):
            bundles.append(data)
    if not bundles:
        raise ValueError(f"no collection or transaction Bundles in {directory}")
    return bundles


def _rewrite(value: Any, targets: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                out[key] = targets.get(item, item)
            else:
                out[key] = _rewrite(item, targets)
        return out
    if isinstance(value, list):
        return [_rewrite(item, targets) for item in value]
    return value


def synthea_bundle(source: Resource, copy: int) -> Resource:
    """Copy number `copy` of a Synthea Bundle, as a transaction with its own urn:uuids."""
    rng = random.Random(f"synthea:{copy}")
    targets: dict[str, str] = {}
    entries = source.get("entry", [])
    urns = [f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}" for _ in entries]
    for entry, urn in zip(entries, urns, strict=True):
        resource = entry["resource"]
        if entry.get("fullUrl"):
            targets[entry["fullUrl"]] = urn
        if resource.get("id"):
            targets[f"{resource['resourceType']}/{resource['id']}"] = urn
    out = []
    for entry, urn in zip(entries, urns, strict=True):
        resource = _rewrite(entry["resource"], targets)
        resource.pop("id", None)
        resource.pop("meta", None)
        request = {"method": "POST", "url": resource["resourceType"]}
        out.append({"fullUrl": urn, "resource": resource, "request": request})
    return {"resourceType": "Bundle", "type": "transaction", "entry": out}

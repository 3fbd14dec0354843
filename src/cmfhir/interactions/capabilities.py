"""capabilities (https://hl7.org/fhir/R4B/http.html#capabilities): the CapabilityStatement,
generated from the same registries that drive validation, indexing and search."""

from __future__ import annotations

from functools import cache
from typing import Any

from cmfhir import FHIR_VERSION, __version__
from cmfhir.interactions.context import FhirContext, Result
from cmfhir.resources.index_values import composite_components
from cmfhir.resources.search_parameters import SearchParameterRegistry
from cmfhir.resources.types import RESOURCE_TYPES

__all__ = ["capabilities", "capability_statement"]

TYPE_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
RESULT_PARAMS = (
    ("_count", "number", "Page size"),
    ("_summary", "token", "count: only the total"),
    ("_total", "token", "none | estimate | accurate"),
    ("_sort", "string", "_id or _lastUpdated, '-' for descending"),
)


def _search_params(registry: SearchParameterRegistry, resource_type: str) -> list[dict[str, Any]]:
    params = [
        {
            "name": "_id",
            "type": "token",
            "definition": "http://hl7.org/fhir/SearchParameter/Resource-id",
        },
        {
            "name": "_lastUpdated",
            "type": "date",
            "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
        },
    ]
    for code, param in sorted(registry.for_type(resource_type).items()):
        if code in ("_id", "_lastUpdated") or param.expression is None:
            continue
        if param.type == "special" or (
            param.type == "composite" and composite_components(registry, param) is None
        ):
            continue
        entry: dict[str, Any] = {"name": code, "type": param.type, "definition": param.url}
        if param.description:
            entry["documentation"] = param.description
        params.append(entry)
    return params


@cache
def _statement(registry: SearchParameterRegistry) -> dict[str, Any]:
    resources = [
        {
            "type": resource_type,
            "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "logical"],
            "searchParam": _search_params(registry, resource_type),
        }
        for resource_type in sorted(RESOURCE_TYPES)
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "publisher": "cmfhir",
        "kind": "instance",
        "software": {"name": "cmfhir", "version": __version__},
        "implementation": {"description": "cmfhir FHIR server"},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "search-system"},
                    {"code": "history-system"},
                ],
                "searchParam": [
                    {"name": name, "type": kind, "documentation": doc}
                    for name, kind, doc in RESULT_PARAMS
                ],
            }
        ],
    }


def capability_statement(ctx: FhirContext, base: str) -> dict[str, Any]:
    statement = dict(_statement(ctx.registry))
    statement["implementation"] = {"description": "cmfhir FHIR server", "url": base}
    return statement


async def capabilities(ctx: FhirContext, *, base: str) -> Result:
    return Result(200, capability_statement(ctx, base))

"""capabilities (https://hl7.org/fhir/R4/http.html#capabilities): the CapabilityStatement,
generated from the same registries that drive validation, indexing, search and operations,
declaring the FHIR version the request negotiated (4.0.1 by default, 4.3.0 when asked)."""

from __future__ import annotations

from functools import cache
from typing import Any

from cmfhir import __version__
from cmfhir.interactions.audit_store import capability as audit_capability
from cmfhir.interactions.context import FhirContext, Result
from cmfhir.resources.fhir_versions import RELEASES, restrict_capability_statement
from cmfhir.resources.index_values import composite_components
from cmfhir.resources.operations import OperationDefinition, OperationRegistry
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


def _operations(definitions: list[OperationDefinition]) -> list[dict[str, Any]]:
    return [{"name": d.code, "definition": d.url} for d in definitions]


def _resource_operations(operations: OperationRegistry, resource_type: str) -> dict[str, Any]:
    listed = _operations(operations.for_type(resource_type))
    return {"operation": listed} if listed else {}


@cache
def _statement(
    registry: SearchParameterRegistry, operations: OperationRegistry, fhir_version: str
) -> dict[str, Any]:
    resources = [
        {
            "type": resource_type,
            "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "full-support",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "logical"],
            "searchParam": _search_params(registry, resource_type),
            **_resource_operations(operations, resource_type),
        }
        for resource_type in sorted(RESOURCE_TYPES)
    ]
    resources = [audit_capability(r) for r in resources]  # AuditEvent offers less
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "publisher": "cmfhir",
        "kind": "instance",
        "software": {"name": "cmfhir", "version": __version__},
        "implementation": {"description": "cmfhir FHIR server"},
        "fhirVersion": RELEASES[fhir_version],
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
                "operation": _operations(operations.system_level()),
            }
        ],
    }
    # Only the types that exist in the request's version (R4 has no SubscriptionTopic...).
    return restrict_capability_statement(statement, fhir_version)


def capability_statement(ctx: FhirContext, base: str) -> dict[str, Any]:
    statement = dict(_statement(ctx.registry, ctx.operations, ctx.fhir_version))
    statement["implementation"] = {"description": "cmfhir FHIR server", "url": base}
    for hook in ctx.capability_hooks:
        statement = hook(statement)
    return statement


async def capabilities(ctx: FhirContext, *, base: str) -> Result:
    return Result(200, capability_statement(ctx, base))

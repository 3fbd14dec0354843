"""A `$export` kick-off's parameters, checked (https://hl7.org/fhir/uv/bulkdata/export.html#query-parameters)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from cmfhir.errors import BadRequest, FhirError
from cmfhir.interactions.audit_store import refuse_bulk
from cmfhir.interactions.common import require_type
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.operations.call import OperationCall
from cmfhir.search import parse_instant, parse_search

__all__ = ["NDJSON_FORMATS", "ExportRequest", "export_request"]

NDJSON_FORMATS = {"application/fhir+ndjson", "application/ndjson", "ndjson"}
# Search result parameters a _typeFilter may not carry (the spec's list).
_RESULT_PARAMETERS = {
    "_include",
    "_revinclude",
    "_sort",
    "_count",
    "_elements",
    "_summary",
    "_total",
    "_contained",
    "_containedType",
}


@dataclass
class ExportRequest:
    level: str  # system | patient | group
    group: str | None = None
    types: list[str] | None = None
    since: str | None = None
    type_filters: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    patients: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportRequest:
        return cls(
            level=data["level"],
            group=data.get("group"),
            types=data.get("types"),
            since=data.get("since"),
            type_filters=[(t, [tuple(p) for p in q]) for t, q in data.get("type_filters", [])],
            patients=data.get("patients"),
        )


def _known(ctx: FhirContext, kind: str, name: str) -> None:
    try:
        require_type(kind, ctx.fhir_version)
    except FhirError:
        raise BadRequest(
            f"{name} names '{kind}', which is not a resource type this server holds",
            expression=[name],
        ) from None


def _values(call: OperationCall, name: str) -> list[Any]:
    return [
        value
        for p in call.parameters.get("parameter", [])
        if p.get("name") == name
        for key, value in p.items()
        if key.startswith("value")
    ]


def export_request(
    ctx: FhirContext, call: OperationCall, level: str, group: str | None, *, posted: bool
) -> ExportRequest:
    out = ExportRequest(level=level, group=group)
    for value in _values(call, "_outputFormat"):
        if str(value) not in NDJSON_FORMATS:
            raise BadRequest(
                f"_outputFormat '{value}' is not supported; use application/fhir+ndjson",
                expression=["_outputFormat"],
            )
    types = [t.strip() for raw in _values(call, "_type") for t in str(raw).split(",") if t.strip()]
    for kind in types:
        _known(ctx, kind, "_type")
        refuse_bulk(kind, "_type")
    if types:
        out.types = sorted(set(types))
    since = call.value("_since")
    if since is not None:
        parse_instant("_since", str(since))
        out.since = str(since)
    for raw in _values(call, "_typeFilter"):
        kind, _, query = str(raw).partition("?")
        _known(ctx, kind, "_typeFilter")
        if out.types is not None and kind not in out.types:
            raise BadRequest(
                f"_typeFilter names {kind}, which _type leaves out", expression=["_typeFilter"]
            )
        params = parse_qsl(query, keep_blank_values=True)
        for name, _ in params:
            if name.split(":")[0] in _RESULT_PARAMETERS:
                raise BadRequest(
                    f"_typeFilter may not use the result parameter {name}",
                    expression=["_typeFilter"],
                )
        parse_search(ctx.registry, kind, params)  # refused now rather than in the worker
        out.type_filters.append((kind, params))
    if _values(call, "_elements"):
        raise BadRequest("_elements is not supported by this server's export", code="not-supported")
    patients = []
    for entry in call.parameters.get("parameter", []):
        if entry.get("name") != "patient":
            continue
        if not posted:
            raise BadRequest("The patient parameter is sent in a POSTed Parameters body")
        reference = str(entry.get("valueReference", {}).get("reference", ""))
        if not reference.startswith("Patient/") or reference.count("/") != 1:
            raise BadRequest(
                f"patient must reference a Patient ('Patient/id'), not '{reference}'",
                expression=["patient"],
            )
        patients.append(reference.removeprefix("Patient/"))
    if patients:
        if level == "system":
            raise BadRequest("The patient parameter is for Patient and Group exports")
        out.patients = sorted(set(patients))
    return out

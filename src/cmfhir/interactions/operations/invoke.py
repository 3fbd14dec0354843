"""Operation routing (https://hl7.org/fhir/R4/operations.html): `$code` at system, type or
instance level is checked against its OperationDefinition (level, resource type, GET only
when it changes nothing), its input gathered into a Parameters resource, and handed to the
implementation registered under the definition's code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cmfhir.errors import BadRequest, MethodNotAllowed, NotFound
from cmfhir.interactions.common import check_id, require_type
from cmfhir.interactions.context import FhirContext, Result
from cmfhir.interactions.operations.call import OperationCall
from cmfhir.interactions.operations.registry import IMPLEMENTATIONS
from cmfhir.resources.operations import Level, OperationDefinition

__all__ = ["RESULT_PARAMETERS", "invoke"]

# Parameters about the response, not the operation's input.
RESULT_PARAMETERS = frozenset({"_format", "_pretty"})
_CONVERT = {"boolean": {"true": True, "false": False}}


def _from_query(definition: OperationDefinition, name: str, raw: str) -> dict[str, Any]:
    declared = definition.parameter(name)
    if declared is None:
        known = ", ".join(p.name for p in definition.inputs()) or "none"
        raise BadRequest(
            f"${definition.code} has no input parameter '{name}' (it takes: {known})",
            expression=[name],
        )
    kind = declared.type
    if kind is None or kind[:1].isupper():
        raise BadRequest(
            f"Parameter '{name}' of ${definition.code} is a {kind or 'group of parts'}: "
            "send it in a Parameters body with POST",
            expression=[name],
        )
    value: Any = raw
    if kind in _CONVERT:
        if raw not in _CONVERT[kind]:
            raise BadRequest(f"Parameter '{name}' must be a {kind}", expression=[name])
        value = _CONVERT[kind][raw]
    elif kind in ("integer", "positiveInt", "unsignedInt"):
        if not (raw.isascii() and raw.lstrip("-").isdigit() and len(raw) < 12):
            raise BadRequest(f"Parameter '{name}' must be an integer", expression=[name])
        value = int(raw)
    return {"name": name, f"value{kind[0].upper()}{kind[1:]}": value}


def _from_body(definition: OperationDefinition, body: Any) -> list[dict[str, Any]]:
    if body is None:
        return []
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise BadRequest(f"The body of ${definition.code} must be a FHIR resource")
    if body["resourceType"] != "Parameters":
        # A resource posted as it is stands for the operation's one resource input.
        takes = [p for p in definition.inputs() if p.is_resource]
        if len(takes) != 1:
            raise BadRequest(
                f"${definition.code} takes a Parameters body, not a {body['resourceType']}"
            )
        return [{"name": takes[0].name, "resource": body}]
    entries = body.get("parameter", [])
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("name"), str) for e in entries
    ):
        raise BadRequest(
            "Parameters.parameter must be a list of parameters, each with a name",
            expression=["Parameters.parameter"],
        )
    for entry in entries:
        declared = definition.parameter(entry["name"])
        if declared is None:
            raise BadRequest(
                f"${definition.code} has no input parameter '{entry['name']}'",
                expression=[f"Parameters.parameter.where(name='{entry['name']}')"],
            )
    return list(entries)


def _level(resource_type: str | None, id: str | None) -> Level:
    if id is not None:
        return "instance"
    return "type" if resource_type is not None else "system"


def _check_target(definition: OperationDefinition, level: Level, resource_type: str | None) -> None:
    where = f"${definition.code}"
    if not definition.allows(level):
        levels = " or ".join(definition.levels())
        raise BadRequest(
            f"{where} is not defined at {level} level (it is invoked at {levels} level)",
            code="not-supported",
            expression=[where],
        )
    if resource_type is not None and not definition.applies_to(resource_type):
        raise BadRequest(
            f"{where} is not defined for {resource_type}",
            code="not-supported",
            expression=[where],
        )


async def invoke(
    ctx: FhirContext,
    code: str,
    *,
    resource_type: str | None,
    id: str | None,
    method: str,
    query: Sequence[tuple[str, str]],
    body: Any = None,
    plain_json: bool = False,
) -> Result:
    """Run `$code` on `[resource_type[/id]]`: `query` are the URL's parameters, `body` the
    parsed POST body (None when there was none)."""
    definition = ctx.operations.get(code)
    implementation = ctx.implementations.get(code) or IMPLEMENTATIONS.get(code)
    if definition is None or implementation is None:
        raise NotFound(f"Unknown operation '${code}'", expression=[f"${code}"])
    if resource_type is not None:
        require_type(resource_type, ctx.fhir_version)
    if id is not None:
        check_id(id)
    level = _level(resource_type, id)
    _check_target(definition, level, resource_type)
    if method == "GET" and definition.affects_state:
        raise MethodNotAllowed(
            f"${code} changes data, so it is invoked with POST",
            headers={"Allow": "POST"},
        )
    entries = [
        _from_query(definition, name, raw) for name, raw in query if name not in RESULT_PARAMETERS
    ]
    entries.extend(_from_body(definition, body))
    for declared in definition.inputs():
        if declared.min > 0 and not any(e.get("name") == declared.name for e in entries):
            raise BadRequest(
                f"${code} needs the parameter '{declared.name}'", expression=[declared.name]
            )
    call = OperationCall(
        definition,
        level,
        resource_type,
        id,
        {"resourceType": "Parameters", "parameter": entries},
        plain_json=plain_json,
    )
    return await implementation(ctx, call)

"""Stored JSON text served with `resourceType` first (https://hl7.org/fhir/R4/json.html:
every example, and streaming parsers, expect it there).

PostgreSQL's jsonb keeps an object's keys sorted by length, then bytes, so the text it gives
back starts with `id` and has `resourceType` somewhere after. Re-parsing every resource to
move one key would cost a read most of its time (0.2-1 ms); instead the top-level
`"resourceType": "T"` pair is cut out of the text and put in front (a few microseconds).

Which occurrence is the top-level one: in JSON text a `"` inside a string is always escaped,
so an unescaped `"resourceType": "T"` is a real key and value, i.e. a resource. Resources
nest only under `contained`, `entry` and `parameter` (R4, R4B), keys shorter than
`resourceType`, which jsonb prints before it; so the last occurrence is the top-level one,
found by scanning from the end. Text not printed by jsonb is parsed and written again.
"""

from __future__ import annotations

from typing import Any

from cmfhir.resources.fhirjson import dump_json, parse_json

__all__ = ["resource_type_first"]


def resource_type_first(content: str, resource_type: str) -> str:
    """`content` (a resource as JSON text, as jsonb prints it) with `resourceType` first."""
    if content.startswith('{"resourceType":'):
        return content
    pair = f'"resourceType": "{resource_type}"'
    at = content.rfind(pair)
    if at > 1 and content[at - 2 : at] == ", ":
        return "".join(("{", pair, ", ", content[1 : at - 2], content[at + len(pair) :]))
    parsed: dict[str, Any] = parse_json(content)
    ordered = {"resourceType": parsed.pop("resourceType", resource_type)}
    ordered.update(parsed)
    return dump_json(ordered).decode()

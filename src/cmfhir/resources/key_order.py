"""Stored JSON text served with `resourceType` first (https://hl7.org/fhir/R4/json.html:
every example, and streaming parsers, expect it there).

PostgreSQL's jsonb keeps an object's keys sorted by length, then bytes, so the text it gives
back starts with `id` and has `resourceType` somewhere after. Re-parsing every resource to
move one key would cost a read most of its time; instead the top-level `"resourceType": "T"`
pair is cut out of the text and put in front. In JSON text a `"` inside a string is always
escaped, so the unescaped pair can only be a real key and value; when it occurs exactly
once (no contained or nested resource of the same type), that one is the top-level key.
Otherwise the text is parsed and written again.
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
    cut = ", " + pair
    if content.count(pair) == 1 and content.count(cut) == 1:
        return "{" + pair + ", " + content[1:].replace(cut, "", 1)
    parsed: dict[str, Any] = parse_json(content)
    ordered = {"resourceType": parsed.pop("resourceType", resource_type)}
    ordered.update(parsed)
    return dump_json(ordered).decode()

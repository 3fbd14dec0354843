"""Finding what an ADT message names among the stored resources: patients by identifier,
encounters by visit number, what belongs to a patient. Reads go through the search
interaction, so they see what the caller's principal may see."""

from __future__ import annotations

from typing import Any

from cmfhir.interactions import search
from cmfhir.interactions.context import FhirContext
from cmfhir.resources.fhirjson import dump_json, parse_json

__all__ = ["Found", "find", "token"]

Found = dict[str, Any]  # a stored resource's content (id and meta.versionId included)


def _escape(value: str) -> str:
    for special in ("\\", ",", "|", "$"):
        value = value.replace(special, "\\" + special)
    return value


def token(ident: dict[str, Any]) -> str:
    """An Identifier as a token search value: system|value (escaped)."""
    value = _escape(str(ident["value"]))
    system = ident.get("system")
    return f"{_escape(system)}|{value}" if system else value


async def find(
    ctx: FhirContext, resource_type: str, params: list[tuple[str, str]], *, base: str
) -> list[Found]:
    """The current resources of `resource_type` matching `params` (at most 1000)."""
    result = await search(ctx, resource_type, [*params, ("_count", "1000")], base=base)
    bundle = parse_json(dump_json(result.body))
    return [
        entry["resource"]
        for entry in bundle.get("entry", [])
        if entry.get("search", {}).get("mode") == "match"
    ]

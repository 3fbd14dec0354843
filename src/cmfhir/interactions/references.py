"""References inside a transaction (https://hl7.org/fhir/R4B/bundle.html#references,
http.html#trules): to another entry's `fullUrl`, or conditional (`Patient?identifier=s|v`),
rewritten to the `Type/id` they resolve to before anything is stored."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from cmfhir.errors import BadRequest

__all__ = ["is_conditional", "is_placeholder", "references", "rewrite"]

# A fullUrl that names no server: a reference to one must resolve to an entry of the Bundle.
_PLACEHOLDERS = ("urn:uuid:", "urn:oid:")


def is_placeholder(reference: str) -> bool:
    return reference.startswith(_PLACEHOLDERS)


def is_conditional(reference: str) -> bool:
    return "?" in reference and not is_placeholder(reference)


def _walk(value: Any, visit: Callable[[dict[str, Any]], None]) -> None:
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            visit(value)
        for child in value.values():
            if isinstance(child, dict | list):
                _walk(child, visit)
    elif isinstance(value, list):
        for child in value:
            if isinstance(child, dict | list):
                _walk(child, visit)


def references(resource: Any) -> Iterator[str]:
    """Every `reference` string in the resource."""
    found: list[str] = []
    _walk(resource, lambda ref: found.append(ref["reference"]))
    return iter(found)


def rewrite(resource: Any, resolved: Mapping[str, str]) -> None:
    """Replace each reference `resolved` knows, in place. A `urn:uuid:` or `urn:oid:`
    reference left unresolved names no entry of the Bundle: storing it as it is would leave
    a reference that points nowhere, so it is refused."""

    def visit(ref: dict[str, Any]) -> None:
        target = ref["reference"]
        replacement = resolved.get(target)
        if replacement is not None:
            ref["reference"] = replacement
        elif is_placeholder(target):
            raise BadRequest(
                f"The reference '{target}' names no entry of the Bundle (no entry has it as "
                "its fullUrl, or that entry creates or updates nothing)"
            )

    _walk(resource, visit)

"""References inside a transaction (https://hl7.org/fhir/R4B/bundle.html#references,
http.html#trules): to another entry's `fullUrl`, or conditional (`Patient?identifier=s|v`),
rewritten to the `Type/id` they resolve to before anything is stored."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cmfhir.errors import BadRequest

__all__ = ["holders", "is_conditional", "is_placeholder", "rewrite"]

# A fullUrl that names no server: a reference to one must resolve to an entry of the Bundle.
_PLACEHOLDERS = ("urn:uuid:", "urn:oid:")


def is_placeholder(reference: str) -> bool:
    return reference.startswith(_PLACEHOLDERS)


def is_conditional(reference: str) -> bool:
    return "?" in reference and not is_placeholder(reference)


def _collect(value: Any, found: list[dict[str, Any]]) -> None:
    if type(value) is dict:
        if type(value.get("reference")) is str:
            found.append(value)
        for child in value.values():
            if type(child) is dict or type(child) is list:
                _collect(child, found)
    else:
        for child in value:
            if type(child) is dict or type(child) is list:
                _collect(child, found)


def holders(resource: Any) -> list[dict[str, Any]]:
    """Every object in the resource with a `reference` string, in document order: found
    once per entry, then read and rewritten in place as often as needed."""
    found: list[dict[str, Any]] = []
    if type(resource) is dict or type(resource) is list:
        _collect(resource, found)
    return found


def rewrite(found: Iterable[dict[str, Any]], resolved: Mapping[str, str]) -> None:
    """Replace each reference `resolved` knows, in place, in the objects `holders` found.
    A `urn:uuid:` or `urn:oid:` reference left unresolved names no entry of the Bundle:
    storing it as it is would leave a reference that points nowhere, so it is refused."""
    for ref in found:
        target = ref["reference"]
        replacement = resolved.get(target)
        if replacement is not None:
            ref["reference"] = replacement
        elif is_placeholder(target):
            raise BadRequest(
                f"The reference '{target}' names no entry of the Bundle (no entry has it as "
                "its fullUrl, or that entry creates or updates nothing)"
            )

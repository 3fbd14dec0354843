"""The size limit of FHIR strings: "strings SHALL NOT exceed 1MB in size"
(https://hl7.org/fhir/R4B/datatypes.html#primitive). base64Binary has no such limit (an
attachment's data may be larger), so a long value is refused unless its element is one.

Only a body larger than the limit can hold such a string, so callers check those alone.
"""

from __future__ import annotations

import functools
from typing import Any

from cmfhir.errors import BadRequest, Issue
from cmfhir.resources._elements import (
    COMPLEX,
    PRIMITIVE,
    PRIMITIVE_EXTENSION,
    RESOURCE,
    ElementTables,
    Table,
)
from cmfhir.resources.types import is_resource_type

__all__ = ["MAX_STRING_BYTES", "check_string_sizes"]

# 1 MB read as 2**20 bytes of UTF-8 (the larger reading, so nothing valid is refused).
MAX_STRING_BYTES = 1024 * 1024
_LISTED = 10  # issues named in one refusal

Path = tuple[str | int, ...]


@functools.cache
def _tables() -> ElementTables:
    return ElementTables({})


def _too_long(value: str, limit: int) -> bool:
    # A character is 1 to 4 bytes of UTF-8: encode only when the length cannot decide.
    return len(value) > limit or (len(value) * 4 > limit and len(value.encode()) > limit)


def _any_too_long(document: Any, limit: int) -> bool:
    """Whether any string in the document is too long: one cheap pass, no paths."""
    stack = [document]
    while stack:
        node = stack.pop()
        for value in node.values() if type(node) is dict else node:
            kind = type(value)
            if kind is str:
                if len(value) * 4 > limit and _too_long(value, limit):
                    return True
            elif kind is dict or kind is list:
                stack.append(value)
    return False


def _too_long_paths(document: Any, limit: int) -> list[Path]:
    found: list[Path] = []
    stack: list[tuple[Any, Path]] = [(document, ())]
    while stack:
        node, path = stack.pop()
        items = node.items() if type(node) is dict else enumerate(node)
        for key, value in items:
            if type(value) is str:
                if _too_long(value, limit):
                    found.append((*path, key))
            elif type(value) in (dict, list):
                stack.append((value, (*path, key)))
    return sorted(found, key=lambda p: [str(step) for step in p])


def _table_of(node: Any) -> Table | None:
    resource_type = node.get("resourceType") if isinstance(node, dict) else None
    if not isinstance(resource_type, str) or not is_resource_type(resource_type):
        return None
    return _tables().for_type(resource_type)


def _is_base64(document: Any, path: Path) -> bool:
    """Whether the element at `path` is a base64Binary, by the resource's definitions."""
    table = _table_of(document)
    node = document
    kind = -1
    type_name = ""
    for step in path:
        node = node[step]
        if isinstance(step, int):
            if kind == RESOURCE:
                table = _table_of(node)
            continue
        element = table.elements.get(step) if table is not None else None
        if element is None:
            return False
        kind, type_name = element.kind, element.type_name
        if kind in (COMPLEX, PRIMITIVE_EXTENSION) and element.model is not None:
            table = _tables().table(element.model)
        elif kind == RESOURCE:
            table = _table_of(node)
        else:
            table = None
    return kind == PRIMITIVE and type_name == "base64Binary"


def _location(document: Any, path: Path) -> str:
    root = document.get("resourceType") if isinstance(document, dict) else None
    text = root if isinstance(root, str) and root.isidentifier() else "$"
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else f".{step}"
    return text


def check_string_sizes(document: Any, limit: int = MAX_STRING_BYTES) -> None:
    """Refuse (400, `too-long`) a document holding a string of more than `limit` bytes of
    UTF-8 anywhere but in a base64Binary element; the issues name each element."""
    if not isinstance(document, dict | list) or not _any_too_long(document, limit):
        return
    refused = [p for p in _too_long_paths(document, limit) if not _is_base64(document, p)]
    if not refused:
        return
    issues = [
        Issue(
            f"{_location(document, path)} is longer than {limit} bytes: FHIR strings "
            "SHALL NOT exceed 1MB (https://hl7.org/fhir/R4B/datatypes.html#primitive)",
            code="too-long",
            expression=(_location(document, path),),
        )
        for path in refused[:_LISTED]
    ]
    raise BadRequest(issues[0].diagnostics, issues=issues)

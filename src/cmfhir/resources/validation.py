"""Resource validation: https://hl7.org/fhir/R4B/validation.html, for the checks a server
makes on every write.

Two passes, both reporting every problem with a FHIRPath-style location
(`Patient.name[0].given[1]`; choice elements keep their JSON name, `Observation.valueQuantity`;
`_birthDate` extensions are reported at `Patient.birthDate.extension[0]`):

1. A walk of the JSON with element tables read from the fhir.resources models
   (`_elements.py`) for what the library lets through: unknown properties (it accepts its
   own field names, `fhir_comments`), JSON types (it coerces `"true"` to a boolean and a
   string to a nested object), null, empty strings, arrays and objects
   (https://hl7.org/fhir/R4B/json.html), NUL characters (PostgreSQL JSONB cannot store
   them), string formats (id, code, uri, oid, uuid, base64Binary), choice elements, and
   required bindings (`profiles/required-bindings.json`) wherever the bound element occurs,
   in datatypes, backbone elements, contained resources and Bundle entries.
2. `fhir.resources.R4B` (pydantic) for required elements, dates and times, numeric ranges.
   Its errors at or under a location the walk already reported are dropped.
"""

from __future__ import annotations

import functools
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from cmfhir.errors import InvalidResource, Issue
from cmfhir.resources._elements import (
    BOOLEAN,
    DECIMAL,
    INTEGER,
    PRIMITIVE,
    PRIMITIVE_EXTENSION,
    RESOURCE,
    Binding,
    Element,
    ElementTables,
    Table,
)
from cmfhir.resources.types import is_resource_type

__all__ = [
    "ResourceValidator",
    "load_required_bindings",
    "validate_resource",
]

# Deeper than any real resource; keeps the recursive walk far from Python's limit even for
# data that did not come through parse_json's depth check.
_MAX_DEPTH = 128
_LISTED_CODES = 25  # a message names at most this many allowed codes
_JSON_KIND_NAMES = {BOOLEAN: "boolean", INTEGER: "integer", DECIMAL: "number"}
# fhir.resources' messages for choice elements, which the walk reports itself.
_CHOICE_MESSAGES = ("Any of one field value is expected", "Expect any of field value")
_FORMAT_MESSAGE = re.compile(r"(\w+) value string does not match spec regex")


def load_required_bindings(path: Path) -> dict[str, Binding]:
    """Read `required-bindings.json` (see scripts/derive_required_bindings.py)."""
    document = json.loads(path.read_text(encoding="utf-8"))
    bindings: dict[str, Binding] = {}
    for element_path, entry in document["bindings"].items():
        codes: list[str] = entry["codes"]
        allowed = ", ".join(codes[:_LISTED_CODES])
        if len(codes) > _LISTED_CODES:
            allowed += f", ... ({len(codes)} codes)"
        bindings[element_path] = Binding(
            path=element_path,
            value_set=entry["valueSet"],
            codes=frozenset(codes),
            allowed=allowed,
        )
    return bindings


def _issue(expression: str, message: str, code: str) -> Issue:
    return Issue(f"{expression}: {message}", code=code, expression=(expression,))


class ResourceValidator:
    """Validates resources against R4B and the required bindings; keeps per-type element
    tables, so build one per process (`app.py` passes it down)."""

    def __init__(self, bindings: dict[str, Binding]) -> None:
        self._tables = ElementTables(bindings)

    @classmethod
    def from_profiles(cls, profiles_dir: Path) -> ResourceValidator:
        return cls(load_required_bindings(profiles_dir / "required-bindings.json"))

    def validate(self, resource: Any, *, expected_type: str | None = None) -> None:
        """Raise `InvalidResource` listing every problem of `resource` (parsed JSON)."""
        if not isinstance(resource, dict):
            raise InvalidResource("A resource must be a JSON object", issues=[])
        resource_type = resource.get("resourceType")
        if not isinstance(resource_type, str):
            raise InvalidResource("The resource has no resourceType", expression=["resourceType"])
        if not is_resource_type(resource_type):
            raise InvalidResource(
                f"{resource_type!r} is not a FHIR R4B resource type",
                expression=["resourceType"],
            )
        if expected_type is not None and resource_type != expected_type:
            raise InvalidResource(
                f"resourceType is {resource_type!r} where {expected_type!r} is expected",
                expression=["resourceType"],
            )

        issues: list[Issue] = []
        self._walk(resource, self._tables.for_type(resource_type), resource_type, issues, 0)
        issues += _model_issues(resource, resource_type, issues)
        if issues:
            count = "1 problem" if len(issues) == 1 else f"{len(issues)} problems"
            # The summary names no values: it is the part that may reach a log.
            raise InvalidResource(f"{resource_type} failed validation ({count})", issues=issues)

    # --- the JSON walk -------------------------------------------------------------------

    def _walk(
        self, obj: dict[str, Any], table: Table, path: str, issues: list[Issue], depth: int
    ) -> None:
        elements = table.elements
        chosen: dict[str, str] = {}
        for key, value in obj.items():
            element = elements.get(key)
            if element is None:
                if not (key == "resourceType" and table.is_resource):
                    issues.append(_issue(f"{path}.{key}", "unknown element", "structure"))
                continue
            location = f"{path}.{element.name}"
            if element.choice is not None:
                other = chosen.setdefault(element.choice, element.name)
                if other != element.name:
                    issues.append(
                        _issue(
                            f"{path}.{element.choice}",
                            f"{element.choice}[x] takes one type, found {other} and {element.name}",
                            "structure",
                        )
                    )
            if value is None:
                issues.append(_issue(location, "null is not allowed; omit it", "structure"))
            elif element.is_list:
                if type(value) is not list:
                    issues.append(_issue(location, "must be a JSON array", "structure"))
                elif not value:
                    issues.append(_issue(location, "empty arrays are not allowed", "structure"))
                elif element.kind == PRIMITIVE or element.kind == PRIMITIVE_EXTENSION:
                    self._primitive_array(obj, key, element, value, location, issues, depth)
                else:
                    for index, item in enumerate(value):
                        self._value(element, item, f"{location}[{index}]", issues, depth)
            elif type(value) is list:
                issues.append(_issue(location, "must be a single value, not an array", "structure"))
            else:
                self._value(element, value, location, issues, depth)
        for choice in table.required_choices:
            if choice not in chosen:
                issues.append(_issue(f"{path}.{choice}", f"{choice}[x] is required", "required"))

    def _value(
        self, element: Element, value: Any, location: str, issues: list[Issue], depth: int
    ) -> None:
        if element.kind == PRIMITIVE:
            self._primitive(element, value, location, issues)
            return
        if type(value) is not dict:
            issues.append(_issue(location, "must be a JSON object", "structure"))
        elif not value:
            issues.append(_issue(location, "empty objects are not allowed", "structure"))
        elif depth >= _MAX_DEPTH:
            issues.append(_issue(location, "nested too deeply", "structure"))
        elif element.kind == RESOURCE:
            self._resource(value, location, issues, depth + 1)
        elif element.model is not None:
            self._walk(value, self._tables.table(element.model), location, issues, depth + 1)

    def _resource(
        self, value: dict[str, Any], location: str, issues: list[Issue], depth: int
    ) -> None:
        resource_type = value.get("resourceType")
        if not isinstance(resource_type, str):
            issues.append(_issue(location, "a resource needs a resourceType", "structure"))
        elif not is_resource_type(resource_type):
            issues.append(
                _issue(location, f"{resource_type!r} is not a FHIR R4B resource type", "invalid")
            )
        else:
            self._walk(value, self._tables.for_type(resource_type), location, issues, depth)

    def _primitive_array(
        self,
        obj: dict[str, Any],
        key: str,
        element: Element,
        value: list[Any],
        location: str,
        issues: list[Issue],
        depth: int,
    ) -> None:
        # `given` and `_given` line up by index; null fills a slot the other array fills.
        # https://hl7.org/fhir/R4B/json.html#primitive
        is_extension = element.kind == PRIMITIVE_EXTENSION
        twin_key = key[1:] if is_extension else f"_{key}"
        twin = obj.get(twin_key)
        twin = twin if type(twin) is list else None
        for index, item in enumerate(value):
            item_location = f"{location}[{index}]"
            if item is None:
                if twin is None or index >= len(twin) or twin[index] is None:
                    issues.append(
                        _issue(
                            item_location,
                            f"null is only allowed where {twin_key} has a value at index {index}",
                            "structure",
                        )
                    )
            else:
                self._value(element, item, item_location, issues, depth)
        if twin is not None and not is_extension and len(twin) != len(value):
            issues.append(
                _issue(location, f"{key} and {twin_key} must have the same length", "structure")
            )

    def _primitive(self, element: Element, value: Any, location: str, issues: list[Issue]) -> None:
        kind = element.json_kind
        if kind == BOOLEAN:
            valid = value is True or value is False
        elif kind == INTEGER:
            valid = type(value) is int
        elif kind == DECIMAL:
            valid = type(value) is int or isinstance(value, (Decimal, float))
        elif type(value) is not str:
            valid = False
        elif not value:
            issues.append(_issue(location, "empty strings are not allowed", "value"))
            return
        else:
            if "\x00" in value:
                issues.append(_issue(location, "the NUL character is not allowed", "value"))
            elif element.check is not None and not element.check(value):
                issues.append(_issue(location, f"must be {element.format_name}", "value"))
            elif element.binding is not None and value not in element.binding.codes:
                binding = element.binding
                issues.append(
                    _issue(
                        location,
                        f"{value!r} is not in the required value set {binding.value_set} "
                        f"(allowed: {binding.allowed})",
                        "code-invalid",
                    )
                )
            return
        if not valid:
            expected = _JSON_KIND_NAMES.get(kind, "string")
            issues.append(
                _issue(
                    location,
                    f"expected a JSON {expected} (FHIR {element.type_name}), "
                    f"found {_json_type(value)}",
                    "value",
                )
            )


def _json_type(value: Any) -> str:
    if isinstance(value, str):
        return "a string"
    if value is True or value is False:
        return "a boolean"
    if isinstance(value, (int, float, Decimal)):
        return f"the number {value}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


# --- fhir.resources ------------------------------------------------------------------------


def _model_issues(resource: dict[str, Any], resource_type: str, found: list[Issue]) -> list[Issue]:
    """Issues fhir.resources finds that the walk did not already report."""
    try:
        get_fhir_model_class(resource_type).model_validate(resource)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
    except Exception:
        # fhir.resources raises AttributeError/KeyError on some malformed input (an integer
        # url, an unknown contained type). The walk reports those; if it found nothing,
        # the resource still must not pass.
        if found:
            return []
        return [Issue(f"{resource_type}: the resource could not be validated", code="invalid")]
    else:
        return []

    covered = {issue.expression[0] for issue in found if issue.expression}
    issues: list[Issue] = []
    for error in errors:
        message = str(error["msg"])
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if message.startswith(_CHOICE_MESSAGES):
            continue
        location = _location(resource, resource_type, error["loc"])
        if _is_covered(location, covered):
            continue
        code = "value"
        if error["type"] in ("missing", "model_field_validation.missing"):
            message, code = "required element is missing", "required"
        elif error["type"] == "extra_forbidden":
            message, code = "unknown element", "structure"
        elif message == "One of field value is required.":  # `_birthDate: {}`-like objects
            message = "needs an id or an extension"
        elif (matched := _FORMAT_MESSAGE.match(message)) is not None:
            message = f"not a valid FHIR {matched.group(1)[0].lower()}{matched.group(1)[1:]}"
        covered.add(location)
        issues.append(_issue(location, message, code))
    return issues


def _location(resource: dict[str, Any], resource_type: str, loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a FHIRPath-style path, following the data so the
    validator's own segments (`root`, union member names) drop out."""
    path = resource_type
    node: Any = resource
    for segment in loc:
        if isinstance(node, dict) and isinstance(segment, str) and segment in node:
            node = node[segment]
            path += "." + (segment[1:] if segment.startswith("_") else segment)
        elif isinstance(node, list) and isinstance(segment, int) and 0 <= segment < len(node):
            node = node[segment]
            path += f"[{segment}]"
        elif isinstance(segment, str) and segment.isidentifier() and isinstance(node, dict):
            path += "." + segment  # a missing element: not in the data
    return path


def _is_covered(location: str, covered: set[str]) -> bool:
    if location in covered:
        return True
    return any(char in ".[" and location[:index] in covered for index, char in enumerate(location))


# --- the default validator -----------------------------------------------------------------


def _default_profiles_dir() -> Path:
    # `profiles/` beside `src/`, as cmfhir.config.default_profiles_dir finds it.
    return Path(__file__).resolve().parents[3] / "profiles"


@functools.cache
def _default_validator() -> ResourceValidator:
    return ResourceValidator.from_profiles(_default_profiles_dir())


def validate_resource(resource: Any, *, expected_type: str | None = None) -> None:
    """Raise `InvalidResource` listing every problem of `resource` (parsed FHIR JSON), with
    the bindings in the checkout's `profiles/`. Servers with settings use
    `ResourceValidator.from_profiles(settings.profiles_dir)` instead."""
    _default_validator().validate(resource, expected_type=expected_type)

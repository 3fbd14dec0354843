"""The validation before the walk checked required elements, dates and ranges itself: the
`fhir.resources.R4B` (pydantic) model of the resource built and its errors turned into issues.

Off the write path: `ResourceValidator(..., models=True)` uses it, so that the tests and
`bench/validation_cost.py` can compare the walk with it on the same resources.
"""

from __future__ import annotations

import re
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from cmfhir.errors import Issue

__all__ = ["is_covered", "model_issues"]

# fhir.resources' messages for choice elements, which the walk reports itself.
_CHOICE_MESSAGES = ("Any of one field value is expected", "Expect any of field value")
_FORMAT_MESSAGE = re.compile(r"(\w+) value string does not match spec regex")


def _issue(expression: str, message: str, code: str) -> Issue:
    return Issue(f"{expression}: {message}", code=code, expression=(expression,))


def model_issues(resource: dict[str, Any], resource_type: str, found: list[Issue]) -> list[Issue]:
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
        if is_covered(location, covered):
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


def is_covered(location: str, covered: set[str]) -> bool:
    if location in covered:
        return True
    return any(char in ".[" and location[:index] in covered for index, char in enumerate(location))

"""Validation in a request's FHIR version (https://hl7.org/fhir/R4B/versioning.html): R4B
content as `validation.py` checks it; R4 (4.0.1) content with the same R4B models plus the
recorded R4/R4B differences (docs/fhir-versions.md), so R4-valid content is never refused:

- the resource types are R4's (an R4B-only type, also contained or in a Bundle, is refused);
- required bindings are R4's (`profiles/r4/required-bindings.json`): `Questionnaire.subjectType`
  takes `MedicinalProduct`, not `SubscriptionTopic`;
- choice types R4 has and R4B dropped (`Extension.valueMeta`, `ElementDefinition.fixedMeta`)
  are checked as the datatype they are, outside the R4B models (`r4_adjustments`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmfhir.errors import InvalidResource, Issue
from cmfhir.resources.fhir_versions import R4B, check_resource_types, fhir_versions
from cmfhir.resources.validation import ResourceValidator, load_required_bindings

__all__ = ["SetAside", "r4_adjustments", "validate_for_version"]

# Where an R4-only choice type (`valueMeta`) is validated: an element of that datatype.
_HOSTS = {"Meta": ("Basic", {"code": {"text": "-"}}, "meta")}
_STAND_IN = "(checked as R4)"


@dataclass(frozen=True, slots=True)
class SetAside:
    """An element of an R4-only choice type, checked apart from the R4B models."""

    location: str  # Patient.extension[0].valueMeta
    datatype: str  # Meta
    value: Any
    # another type of the same choice in the same object (`valueString`), if any
    conflict: str | None = None


def r4_adjustments(
    resource: Any, names: frozenset[str] | None = None
) -> tuple[Any, list[SetAside]]:
    """`resource` as the R4B models can check it, and what was set aside: each element of
    an R4-only choice type (`valueMeta`) becomes a string of the same choice (`valueString`)
    and is returned, to be checked as its datatype. The input is not changed; without such
    elements it is returned as is."""
    names = fhir_versions().r4_only_choice_names if names is None else names
    found: list[SetAside] = []

    def visit(node: Any, path: str) -> Any:
        if isinstance(node, dict):
            changed: dict[str, Any] | None = None
            for key, value in node.items():
                if key in names:
                    datatype = _datatype(key)
                    stem = key[: -len(datatype)]
                    others = [
                        other
                        for other in node
                        if other != key
                        and other.startswith(stem)
                        and other[len(stem) : len(stem) + 1].isupper()
                    ]
                    conflict = others[0] if others else None
                    found.append(SetAside(f"{path}.{key}", datatype, value, conflict))
                    changed = dict(node) if changed is None else changed
                    del changed[key]
                    if conflict is None:
                        changed[stem + "String"] = _STAND_IN
                    continue
                new = visit(value, f"{path}.{key}")
                if new is not value:
                    changed = dict(node) if changed is None else changed
                    changed[key] = new
            return node if changed is None else changed
        if isinstance(node, list):
            items = [visit(item, f"{path}[{index}]") for index, item in enumerate(node)]
            if any(new is not old for new, old in zip(items, node, strict=True)):
                return items
        return node

    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    view = visit(resource, kind if isinstance(kind, str) else "")
    return view, found


def _datatype(name: str) -> str:
    for datatype in _HOSTS:
        if name.endswith(datatype):
            return datatype
    raise ValueError(f"no datatype host for {name!r}")


def validate_for_version(
    resource: Any,
    version: str,
    *,
    expected_type: str | None = None,
    profiles_dir: Path | None = None,
) -> None:
    """Raise `InvalidResource` listing every problem of `resource` (parsed JSON) as FHIR
    `version` ("4.0" or "4.3") defines it."""
    validator = _validator(version, profiles_dir)
    if version == R4B:
        validator.validate(resource, expected_type=expected_type)
        return
    if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
        check_resource_types(resource, version)
    view, set_aside = r4_adjustments(resource)
    issues: list[Issue] = []
    try:
        validator.validate(view, expected_type=expected_type)
    except InvalidResource as error:
        if not set_aside:
            raise
        issues.extend(error.issues)
    for item in set_aside:
        if item.conflict is not None:
            element = item.location.rsplit(".", 1)[0]
            stem = item.location.rsplit(".", 1)[1][: -len(item.datatype)]
            issues.append(
                Issue(
                    f"{element}.{stem}: {stem}[x] takes one type, found "
                    f"{stem}{item.datatype} and {item.conflict}",
                    code="structure",
                    expression=(f"{element}.{stem}",),
                )
            )
        issues.extend(_datatype_issues(validator, item.location, item.datatype, item.value))
    if issues:
        count = "1 problem" if len(issues) == 1 else f"{len(issues)} problems"
        raise InvalidResource(f"{view['resourceType']} failed validation ({count})", issues=issues)


def _datatype_issues(
    validator: ResourceValidator, location: str, datatype: str, value: Any
) -> list[Issue]:
    host_type, host, element = _HOSTS[datatype]
    prefix = f"{host_type}.{element}"
    try:
        validator.validate({"resourceType": host_type, **host, element: value})
    except InvalidResource as error:
        return [_moved(issue, prefix, location) for issue in error.issues]
    return []


def _moved(issue: Issue, prefix: str, location: str) -> Issue:
    def move(text: str) -> str:
        return location + text[len(prefix) :] if text.startswith(prefix) else text

    return Issue(
        move(issue.diagnostics),
        code=issue.code,
        severity=issue.severity,
        expression=tuple(move(item) for item in issue.expression) or (location,),
    )


@functools.cache
def _validator(version: str, profiles_dir: Path | None) -> ResourceValidator:
    folder = profiles_dir or Path(__file__).resolve().parents[3] / "profiles"
    if version == R4B:
        return ResourceValidator.from_profiles(folder)
    fhir_versions(profiles_dir)  # the differences load (and fail) before the first write
    return ResourceValidator(load_required_bindings(folder / "r4" / "required-bindings.json"))

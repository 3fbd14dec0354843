"""Validation in a request's FHIR version (https://hl7.org/fhir/R4B/versioning.html): R4B
content as `validation.py` checks it; R4 (4.0.1) content with the same R4B models plus the
recorded R4/R4B differences (docs/fhir-versions.md), so R4-valid content is never refused and
R4B-only content is:

- the resource types are R4's: an R4B-only type, also contained or in a Bundle, is refused;
- required bindings are R4's (`profiles/r4/required-bindings.json`): `Questionnaire.subjectType`
  takes `MedicinalProduct`, not `SubscriptionTopic`;
- choice types R4 has and R4B dropped (`Extension.valueMeta`, `ElementDefinition.fixedMeta`)
  are checked as the datatype they are, outside the R4B models (`r4_adjustments`); those R4B
  added (`valueCodeableReference`, `valueRatioRange`) are refused.

Reference targets and invariants are the validation layer's, R4's being R4B's with the
recorded differences applied (R4's narrower `Observation.subject` and `Group.member.entity`;
`fhir_versions.constraint_differences`).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmfhir.errors import InvalidResource, Issue
from cmfhir.resources.fhir_versions import (
    R4,
    R4B,
    constraint_differences,
    fhir_release,
    fhir_versions,
    served_types,
    version_label,
)
from cmfhir.resources.fhirjson import dump_json
from cmfhir.resources.invariants import load_invariants
from cmfhir.resources.narrative import load_narrative_rules
from cmfhir.resources.validation import (
    ResourceValidator,
    load_reference_targets,
    load_required_bindings,
)

__all__ = ["R4View", "SetAside", "r4_adjustments", "validate_for_version"]

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


@dataclass(slots=True)
class R4View:
    """An R4 resource as the R4B models can check it, and what they cannot."""

    resource: Any
    set_aside: list[SetAside] = field(default_factory=list)
    # (location, resourceType) of resources R4 has no such type for, or cmfhir does not serve
    foreign_types: list[tuple[str, str]] = field(default_factory=list)
    # locations of elements of R4B-only choice types (`Extension.valueCodeableReference`)
    r4b_only: list[str] = field(default_factory=list)


@functools.cache
def _screen() -> tuple[re.Pattern[bytes], frozenset[str]]:
    """A key of an R4-only or R4B-only choice type, as it is written in JSON; the types
    served in R4."""
    versions = fhir_versions()
    names = sorted(versions.r4_only_choice_names | versions.r4b_only_choice_names)
    keys = b"|".join(re.escape(name.encode()) for name in names)
    return re.compile(b'"(?:' + keys + b')":'), served_types(R4)


_RESOURCE_TYPE_KEY = b'"resourceType":'
_RESOURCE_TYPE = re.compile(rb'"resourceType":"([A-Za-z]+)"')


def _nothing_to_adjust(resource: dict[str, Any]) -> bool:
    """Whether `r4_adjustments` would find nothing in `resource`, read from its compact JSON
    text in a few µs instead of a walk over every element: no key is an R4-only or R4B-only
    choice name and every `resourceType` (contained, nested) names a type served in R4. A
    key is always written `"name":` there (a quote inside a string is escaped), so nothing
    is missed; anything unusual (an unserializable value, a `resourceType` that is not a
    plain name) answers False, and the walk decides."""
    try:
        text = dump_json(resource)
    except Exception:  # the walk reports what is wrong with such content
        return False
    keys, served = _screen()
    if keys.search(text) is not None:
        return False
    kinds = _RESOURCE_TYPE.findall(text)
    if len(kinds) != text.count(_RESOURCE_TYPE_KEY):
        return False
    return all(kind.decode() in served for kind in kinds)


def r4_adjustments(resource: Any) -> R4View:
    """One pass over `resource` (parsed R4 JSON). Each element of an R4-only choice type
    (`valueMeta`) becomes a string of the same choice (`valueString`) in the view and is set
    aside, to be checked as its datatype; resource types and R4B-only choice types are noted.
    The input is not changed; without R4-only elements the view is the input itself."""
    versions = fhir_versions()
    r4_only, r4b_only = versions.r4_only_choice_names, versions.r4b_only_choice_names
    served = served_types(R4)
    found = R4View(resource)
    # The path is built only for what is found: segments pushed and popped on the way down.
    trail: list[str] = []

    def here(key: str | None = None) -> str:
        path = "".join(trail)
        return path if key is None else f"{path}.{key}"

    def visit(node: Any) -> Any:
        if type(node) is dict:
            kind = node.get("resourceType")
            if kind is not None and isinstance(kind, str) and kind not in served:
                found.foreign_types.append((here(), kind))
            changed: dict[str, Any] | None = None
            for key, value in node.items():
                if key in r4b_only:
                    found.r4b_only.append(here(key))
                elif key in r4_only:
                    changed = dict(node) if changed is None else changed
                    _set_aside(changed, key, value, here(key), found)
                    continue
                if type(value) is dict or type(value) is list:
                    trail.append("." + key)
                    new = visit(value)
                    trail.pop()
                    if new is not value:
                        changed = dict(node) if changed is None else changed
                        changed[key] = new
            return node if changed is None else changed
        items: list[Any] | None = None
        for index, item in enumerate(node):
            if type(item) is dict or type(item) is list:
                trail.append(f"[{index}]")
                new = visit(item)
                trail.pop()
                if new is not item:
                    items = list(node) if items is None else items
                    items[index] = new
        return node if items is None else items

    if isinstance(resource, dict):
        kind = resource.get("resourceType")
        trail.append(kind if isinstance(kind, str) else "")
        found.resource = visit(resource)
    return found


def _set_aside(node: dict[str, Any], key: str, value: Any, location: str, found: R4View) -> None:
    datatype = next(name for name in _HOSTS if key.endswith(name))
    stem = key[: -len(datatype)]
    others = [
        other
        for other in node
        if other != key and other.startswith(stem) and other[len(stem) : len(stem) + 1].isupper()
    ]
    conflict = others[0] if others else None
    found.set_aside.append(SetAside(location, datatype, value, conflict))
    del node[key]
    if conflict is None:
        node[stem + "String"] = _STAND_IN


def validate_for_version(
    resource: Any,
    version: str,
    *,
    expected_type: str | None = None,
    profiles_dir: Path | None = None,
    stored: bool = True,
) -> None:
    """Raise `InvalidResource` listing every problem of `resource` (parsed JSON) as FHIR
    `version` ("4.0" or "4.3") defines it; `stored=False` for an operation body, which may
    be a Parameters."""
    fhir_release(version)  # a known version, or ValueError
    validator = _validator(version, profiles_dir)
    if version == R4B or not isinstance(resource, dict):
        validator.validate(resource, expected_type=expected_type, stored=stored)
        return
    if _nothing_to_adjust(resource):
        validator.validate(resource, expected_type=expected_type, stored=stored)
        return
    view = r4_adjustments(resource)
    if not view.set_aside and not view.foreign_types and not view.r4b_only:
        validator.validate(resource, expected_type=expected_type, stored=stored)
        return
    issues = _version_issues(view, version)
    if view.foreign_types and view.foreign_types[0][0] == resource.get("resourceType"):
        # The resource itself is of another version: nothing more to say about it.
        raise InvalidResource(issues[0].diagnostics, issues=issues)
    try:
        validator.validate(view.resource, expected_type=expected_type, stored=stored)
    except InvalidResource as error:
        issues[:0] = error.issues
    for item in view.set_aside:
        issues.extend(_set_aside_issues(validator, item))
    if issues:
        kind = view.resource.get("resourceType")
        count = "1 problem" if len(issues) == 1 else f"{len(issues)} problems"
        raise InvalidResource(f"{kind} failed validation as FHIR R4 ({count})", issues=issues)


def _version_issues(view: R4View, version: str) -> list[Issue]:
    versions = fhir_versions()
    label = version_label(version)
    issues = []
    for location, kind in view.foreign_types:
        other = versions.other_version_of(kind, version)
        why = (
            f"a FHIR {version_label(other)} resource type; send it with fhirVersion={other}"
            if other is not None
            else f"not a resource type cmfhir serves in FHIR {label}"
        )
        where = location if "." in location or "[" in location else "resourceType"
        issues.append(_issue(where, f"'{kind}' is {why}", "not-supported"))
    for location in view.r4b_only:
        name = location.rsplit(".", 1)[1]
        issues.append(
            _issue(location, f"{name} is a FHIR R4B choice type, not in {label}", "structure")
        )
    return issues


def _set_aside_issues(validator: ResourceValidator, item: SetAside) -> list[Issue]:
    issues = []
    if item.conflict is not None:
        element, name = item.location.rsplit(".", 1)
        stem = name[: -len(item.datatype)]
        issues.append(
            _issue(
                f"{element}.{stem}",
                f"{stem}[x] takes one type, found {name} and {item.conflict}",
                "structure",
            )
        )
    host_type, host, element_name = _HOSTS[item.datatype]
    prefix = f"{host_type}.{element_name}"
    try:
        validator.validate({"resourceType": host_type, **host, element_name: item.value})
    except InvalidResource as error:
        issues.extend(_moved(issue, prefix, item.location) for issue in error.issues)
    return issues


def _issue(expression: str, message: str, code: str) -> Issue:
    return Issue(f"{expression}: {message}", code=code, expression=(expression,))


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
    # R4's invariants: R4B's with the recorded differences; narrative rules are the same.
    invariants = load_invariants(folder / "invariants.json")
    targets = load_reference_targets(folder / "reference-targets.json")
    return ResourceValidator(
        load_required_bindings(folder / "r4" / "required-bindings.json"),
        invariants.with_differences(constraint_differences(R4), "FHIR R4"),
        _r4_targets(targets, folder / "r4" / "differences.json"),
        load_narrative_rules(folder / "narrative-xhtml.json"),
    )


def _r4_targets(targets: dict[str, frozenset[str]], differences: Path) -> dict[str, frozenset[str]]:
    """R4's reference targets: R4B's, with the recorded differences of each element undone
    (R4B widened some, e.g. Observation.subject; R4 allowed types R4B dropped)."""
    recorded = json.loads(differences.read_text(encoding="utf-8"))
    r4 = dict(targets)
    for section in ("resources", "datatypes"):
        for difference in recorded[section].values():
            for changed in difference.get("targets", ()):
                path = changed["path"].removesuffix("[x]")
                allowed = r4.get(path, frozenset()) - set(changed["onlyInR4B"])
                r4[path] = allowed | set(changed["onlyInR4"])
    return r4

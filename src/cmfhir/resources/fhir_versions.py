"""FHIR R4 (4.0.1) and R4B (4.3.0): which resource types and codes each version has, and what
differs for the types cmfhir serves (https://hl7.org/fhir/R4B/diff.html).

Pure functions over `profiles/r4/differences.json` and `profiles/r4/required-bindings.json`,
both derived from the core packages by `scripts/diff_r4_r4b.py` (docs/fhir-versions.md tells
what they hold). A version is named as the `fhirVersion` MIME parameter names it: "4.0" or
"4.3" (https://hl7.org/fhir/R4B/http.html#version-parameter).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmfhir.errors import InvalidResource, Issue, NotFound
from cmfhir.resources.types import RESOURCE_TYPES

__all__ = [
    "DEFAULT_VERSION",
    "R4",
    "R4B",
    "RELEASES",
    "VERSIONS",
    "Constraint",
    "FhirVersions",
    "binding_codes",
    "check_resource_types",
    "check_type_in_version",
    "codes_only_in",
    "constraint_differences",
    "fhir_release",
    "fhir_versions",
    "parse_version",
    "resource_types",
    "restrict_capability_statement",
    "served_types",
    "version_label",
]

R4 = "4.0"
R4B = "4.3"
VERSIONS: tuple[str, ...] = (R4, R4B)
DEFAULT_VERSION = R4
RELEASES = {R4: "4.0.1", R4B: "4.3.0"}
_LABELS = {R4: "R4", R4B: "R4B"}


def parse_version(text: str) -> str | None:
    """A `fhirVersion` parameter value ("4.0", "4.0.1", "4.3", "4.3.0") as "4.0" or "4.3";
    None for any other version. The patch release is ignored, as the spec says."""
    parts = text.strip().split(".")
    if len(parts) not in (2, 3) or not all(part.isascii() and part.isdigit() for part in parts):
        return None
    version = f"{int(parts[0])}.{int(parts[1])}"
    return version if version in RELEASES else None


def fhir_release(version: str) -> str:
    """The release a version names: "4.0" → "4.0.1" (CapabilityStatement.fhirVersion)."""
    return RELEASES[_known(version)]


def version_label(version: str) -> str:
    """ "R4" or "R4B", for messages."""
    return _LABELS[_known(version)]


def _known(version: str) -> str:
    if version not in RELEASES:
        raise ValueError(f"unknown FHIR version {version!r}; expected one of {VERSIONS}")
    return version


@dataclass(frozen=True, slots=True)
class Constraint:
    """An invariant (ElementDefinition.constraint) as one version defines it."""

    severity: str
    expression: str


@dataclass(frozen=True, slots=True)
class FhirVersions:
    """What the recorded differences say, loaded once."""

    r4_only_types: frozenset[str]
    r4b_only_types: frozenset[str]
    # element path → codes, for R4's required bindings of code elements
    r4_bindings: dict[str, frozenset[str]]
    # (path, key) → the constraint in R4, in R4B (None where that version has no such key)
    constraints: dict[tuple[str, str], tuple[Constraint | None, Constraint | None]]
    # element path → codes of the R4B required binding that R4 does not have, and back
    binding_codes_only: dict[str, tuple[frozenset[str], frozenset[str]]]
    # types in both versions whose R4 elements the R4B models lack (redesigned in R4B)
    redesigned_types: frozenset[str]
    # JSON names of choice elements whose type R4 allows and R4B does not (`valueMeta`)
    r4_only_choice_names: frozenset[str]
    # and the other way round (`valueCodeableReference`, `ActivityDefinition.subjectCanonical`)
    r4b_only_choice_names: frozenset[str]

    @classmethod
    def from_profiles(cls, profiles_dir: Path) -> FhirVersions:
        folder = profiles_dir / "r4"
        diff = json.loads((folder / "differences.json").read_text(encoding="utf-8"))
        bindings = json.loads((folder / "required-bindings.json").read_text(encoding="utf-8"))
        constraints: dict[tuple[str, str], tuple[Constraint | None, Constraint | None]] = {}
        codes_only: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        redesigned: set[str] = set()
        # (structure, JSON name) of choice types only one version has
        choice_names: set[tuple[str, str]] = set()
        r4b_choice_names: set[tuple[str, str]] = set()
        for group in ("resources", "datatypes"):
            for name, found in diff[group].items():
                for item in found.get("constraints", []):
                    constraints[(item["path"], item["key"])] = (
                        _constraint(item["r4"]),
                        _constraint(item["r4b"]),
                    )
                for item in found.get("bindings", []):
                    if "codesOnlyInR4" in item:
                        codes_only[item["path"]] = (
                            frozenset(item["codesOnlyInR4"]),
                            frozenset(item["codesOnlyInR4B"]),
                        )
                if group == "resources" and found.get("elementsOnlyInR4"):
                    redesigned.add(name)
                for item in found.get("types", []):
                    stem = item["path"].rsplit(".", 1)[-1]
                    if stem.endswith("[x]"):
                        old, new = set(item["r4"]), set(item["r4b"])
                        choice_names.update((name, _choice(stem, kind)) for kind in old - new)
                        r4b_choice_names.update((name, _choice(stem, kind)) for kind in new - old)
        return cls(
            r4_only_types=frozenset(diff["resourceTypesOnlyInR4"]),
            r4b_only_types=frozenset(diff["resourceTypesOnlyInR4B"]),
            r4_bindings={
                path: frozenset(entry["codes"]) for path, entry in bindings["bindings"].items()
            },
            constraints=constraints,
            binding_codes_only=codes_only,
            redesigned_types=frozenset(redesigned),
            # a redesigned type is refused whole in R4; its choice names say nothing more
            r4_only_choice_names=frozenset(
                choice for name, choice in choice_names if name not in redesigned
            ),
            r4b_only_choice_names=frozenset(
                choice for name, choice in r4b_choice_names if name not in redesigned
            ),
        )

    def resource_types(self, version: str) -> frozenset[str]:
        """Every concrete resource type the version defines (R4: 146, R4B: 141)."""
        if _known(version) == R4B:
            return RESOURCE_TYPES
        return (RESOURCE_TYPES - self.r4b_only_types) | self.r4_only_types

    def served_types(self, version: str) -> frozenset[str]:
        """The types cmfhir serves to a request in `version`: the version's types whose
        content the R4B models can validate. Not served in R4: the 18 types R4B withdrew,
        and those it redesigned (Evidence, EvidenceVariable)."""
        if _known(version) == R4B:
            return RESOURCE_TYPES
        return (self.resource_types(R4) & RESOURCE_TYPES) - self.redesigned_types

    def other_version_of(self, resource_type: str, version: str) -> str | None:
        """The version a type of the other version only belongs to; None if `version` has it
        (or neither version does)."""
        if _known(version) == R4 and resource_type in self.r4b_only_types:
            return R4B
        if version == R4B and resource_type in self.r4_only_types:
            return R4
        return None


def _choice(stem: str, type_code: str) -> str:
    """The JSON name of a choice element of one type: `value[x]`, `Meta` → `valueMeta`."""
    return stem[:-3] + type_code[0].upper() + type_code[1:]


def _constraint(item: dict[str, Any] | None) -> Constraint | None:
    if item is None:
        return None
    return Constraint(severity=item["severity"], expression=item["expression"])


def _default_profiles_dir() -> Path:
    # `profiles/` beside `src/`, as cmfhir.config.default_profiles_dir finds it.
    return Path(__file__).resolve().parents[3] / "profiles"


@functools.cache
def fhir_versions(profiles_dir: Path | None = None) -> FhirVersions:
    """The recorded differences of a `profiles/` folder (the checkout's by default)."""
    return FhirVersions.from_profiles(profiles_dir or _default_profiles_dir())


# --- types ------------------------------------------------------------------------------------


def resource_types(version: str) -> frozenset[str]:
    """Every concrete resource type FHIR `version` defines."""
    return fhir_versions().resource_types(version)


def served_types(version: str) -> frozenset[str]:
    """The resource types cmfhir accepts and lists in /metadata for a request in `version`."""
    return fhir_versions().served_types(version)


@functools.lru_cache(maxsize=16)
def _served_types(version: str) -> frozenset[str]:
    """`served_types` of the checkout's profiles, computed once per version (every request
    asks)."""
    return fhir_versions().served_types(version)


def check_type_in_version(resource_type: str, version: str) -> None:
    """Raise NotFound (404, as for an unknown type in a URL) when `resource_type` is not a
    type cmfhir serves in `version`, naming the version that has it."""
    if resource_type in _served_types(version):
        return
    versions = fhir_versions()
    label = version_label(version)
    other = versions.other_version_of(resource_type, version)
    if other is not None:
        raise NotFound(
            f"'{resource_type}' is a FHIR {version_label(other)} resource type, not an "
            f"{label} one; ask with fhirVersion={other} to use it",
            expression=[resource_type],
        )
    if resource_type in versions.resource_types(version):
        why = "redesigned" if resource_type in RESOURCE_TYPES else "withdrawn"
        raise NotFound(
            f"'{resource_type}' is a FHIR {label} resource type that cmfhir does not serve "
            f"in {label} (it was {why} in R4B)",
            expression=[resource_type],
        )
    raise NotFound(f"Unknown resource type '{resource_type}'", expression=[resource_type])


def check_resource_types(resource: Any, version: str, *, location: str | None = None) -> None:
    """Raise InvalidResource (400) when `resource` (parsed JSON), or a resource inside it
    (contained, Bundle entries, Parameters), has a type cmfhir does not serve in `version`."""
    served = served_types(version)
    versions = fhir_versions()
    stack: list[tuple[Any, str]] = [(resource, location or _type_of(resource))]
    problems: list[tuple[str, str]] = []
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            kind = node.get("resourceType")
            if isinstance(kind, str) and kind not in served:
                problems.append((path, kind))
            stack.extend((value, f"{path}.{key}") for key, value in node.items())
        elif isinstance(node, list):
            stack.extend((item, f"{path}[{index}]") for index, item in enumerate(node))
    if not problems:
        return
    label = version_label(version)
    issues = []
    for path, kind in sorted(problems):
        other = versions.other_version_of(kind, version)
        why = (
            f"a FHIR {version_label(other)} resource type; send it with fhirVersion={other}"
            if other is not None
            else f"not a resource type cmfhir serves in FHIR {label}"
        )
        issues.append(_issue(path if path else "resourceType", f"'{kind}' is {why}"))
    raise InvalidResource(
        f"The resource holds types that are not FHIR {label} ({len(issues)} found)",
        issues=issues,
    )


def _type_of(resource: Any) -> str:
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    return kind if isinstance(kind, str) else ""


def _issue(expression: str, message: str) -> Issue:
    return Issue(f"{expression}: {message}", code="not-supported", expression=(expression,))


# --- codes and constraints ----------------------------------------------------------------------


def binding_codes(version: str, path: str) -> frozenset[str] | None:
    """The codes `version`'s required binding of the code element at `path` allows
    (`CapabilityStatement.rest.resource.type`); None when the element has no enumerated
    required binding in that version. Under R4B the answer comes from
    `profiles/required-bindings.json`."""
    if _known(version) == R4:
        return fhir_versions().r4_bindings.get(path)
    return _r4b_bindings().get(path)


@functools.cache
def _r4b_bindings() -> dict[str, frozenset[str]]:
    document = json.loads(
        (_default_profiles_dir() / "required-bindings.json").read_text(encoding="utf-8")
    )
    return {path: frozenset(entry["codes"]) for path, entry in document["bindings"].items()}


def codes_only_in(version: str, path: str) -> frozenset[str]:
    """Codes of the required binding at `path` that exist in `version` but not in the other
    (`codes_only_in("4.3", "Questionnaire.subjectType")` holds "SubscriptionTopic")."""
    found = fhir_versions().binding_codes_only.get(path)
    if found is None:
        return frozenset()
    return found[0] if _known(version) == R4 else found[1]


def constraint_differences(version: str) -> dict[tuple[str, str], Constraint | None]:
    """The invariants that differ, as `version` defines them: (path, key) → the constraint,
    or None where `version` has no such key (R4 has no `dom-r4b`, `que-1a`…; R4B no `que-1`).

    The path is where the core definitions put the constraint; `dom-*` keys sit on
    `DomainResource` (every resource but Bundle, Binary and Parameters), `ele-1` on
    `Element` (every element). An invariant not listed is the same in both versions.
    """
    index = 0 if _known(version) == R4 else 1
    return {key: pair[index] for key, pair in fhir_versions().constraints.items()}


# --- the CapabilityStatement ---------------------------------------------------------------------


def restrict_capability_statement(statement: dict[str, Any], version: str) -> dict[str, Any]:
    """A copy of `statement` for a client of `version`: its `fhirVersion`, and only the
    resource types cmfhir serves in that version."""
    served = served_types(version)
    restricted = dict(statement)
    restricted["fhirVersion"] = fhir_release(version)
    rests = []
    for rest in statement.get("rest", []):
        rest = dict(rest)
        if "resource" in rest:
            rest["resource"] = [entry for entry in rest["resource"] if entry.get("type") in served]
        rests.append(rest)
    if "rest" in statement:
        restricted["rest"] = rests
    return restricted

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
   The walk also checks what the HL7 validator checks beyond structure: whitespace-only
   strings, extensions (a url, absolute outside a complex extension; a value or
   sub-extensions, never both: ext-1), narrative XHTML (txt-1, txt-2: `narrative.py`),
   contained resources and local references (dom-2, dom-3, dom-4, ref-1: `contained.py`)
   and the resource types each Reference element allows (`profiles/reference-targets.json`).
   The same walk checks what the fhir.resources (pydantic) models used to check on every
   write: required elements (minimum cardinality 1, in resources, backbone elements and
   datatypes; a required primitive may carry only an extension), dates, dateTimes,
   instants and times (the spec's regexes and a real calendar day), integer ranges
   (integer, unsignedInt, positiveInt) and strings of more than whitespace. These are
   reported after the others, as the models' errors were, and are dropped at or under a
   location already reported. `tests/resources/test_validation_equivalence.py` runs both
   over every example and a set of mutations (`model_check.py` keeps the model-based
   check, `ResourceValidator(..., models=True)`, off the write path).
2. The FHIRPath invariants of the core definitions on each element present
   (`invariants.py`, `profiles/invariants.json`), when the walk found nothing.

`Parameters` and `OperationOutcome` are operation bodies and results, never stored: a
write of one is refused (`validate(..., stored=False)` checks one as an operation body).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from cmfhir.errors import InvalidResource, Issue, Unprocessable
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
    is_root_type,
)
from cmfhir.resources.contained import LocalReferences
from cmfhir.resources.fhirpath import parse_reference
from cmfhir.resources.invariants import Invariant, InvariantSet, load_invariants
from cmfhir.resources.model_check import is_covered, model_issues
from cmfhir.resources.narrative import NarrativeRules, load_narrative_rules
from cmfhir.resources.types import is_resource_type

__all__ = [
    "NOT_STORED",
    "ResourceValidator",
    "load_reference_targets",
    "load_required_bindings",
    "validate_resource",
]

# Resource types that are operation bodies and results, not stored resources.
NOT_STORED = frozenset({"Parameters", "OperationOutcome"})
# Resources that are not DomainResources: no text, contained, extension (dom-* do not apply).
_NOT_DOMAIN = frozenset({"Bundle", "Binary", "Parameters"})
_HAS_VALUE_ELSEWHERE = frozenset({"FHIRPrimitiveExtension"})
_FHIR_WHITESPACE = " \t\r\n"
_URI_TYPES = frozenset({"uri", "url", "canonical"})
# `Patient?identifier=x`: a conditional reference in a transaction names its type too.
_CONDITIONAL_REFERENCE = re.compile(r"([A-Z][A-Za-z]+)\?")

# Deeper than any real resource; keeps the recursive walk far from Python's limit even for
# data that did not come through parse_json's depth check.
_MAX_DEPTH = 128
_LISTED_CODES = 25  # a message names at most this many allowed codes
_JSON_KIND_NAMES = {BOOLEAN: "boolean", INTEGER: "integer", DECIMAL: "number"}


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


def load_reference_targets(path: Path) -> dict[str, frozenset[str]]:
    """Read `reference-targets.json` (see scripts/derive_invariants.py): element path ->
    the resource types its references may point to."""
    document = json.loads(path.read_text(encoding="utf-8"))
    return {element: frozenset(types) for element, types in document["targets"].items()}


def _issue(expression: str, message: str, code: str) -> Issue:
    return Issue(f"{expression}: {message}", code=code, expression=(expression,))


@dataclass(slots=True)
class _Run:
    """The state of one validation: issues found, invariants to evaluate after the walk, and
    the resources (%resource, %rootResource) around the element being walked."""

    issues: list[Issue] = field(default_factory=list)
    # Invariants broken, reported only when the structure is right (as FHIRPath ones are).
    broken: list[Issue] = field(default_factory=list)
    pending: list[tuple[tuple[Invariant, ...], Any, str, Any, Any]] = field(default_factory=list)
    # What the models used to find (required elements, dates, ranges): reported last.
    late: list[Issue] = field(default_factory=list)
    resource: Any = None
    root: Any = None
    local: LocalReferences = field(default_factory=LocalReferences)


@dataclass(frozen=True, slots=True)
class _Rules:
    """What applies to the elements of one table, looked up once per table."""

    invariants: tuple[Invariant, ...]  # on the table's own element (a resource, a datatype)
    element_invariants: dict[str, tuple[Invariant, ...]]  # on a child holding a datatype
    targets: dict[str, frozenset[str]]  # JSON key -> allowed resource types


class ResourceValidator:
    """Validates resources against R4B, the required bindings, the core invariants and the
    reference target types; keeps per-type element tables, so build one per process."""

    def __init__(
        self,
        bindings: dict[str, Binding],
        invariants: InvariantSet | None = None,
        targets: dict[str, frozenset[str]] | None = None,
        narrative: NarrativeRules | None = None,
        *,
        models: bool = False,
    ) -> None:
        """`models`: check required elements, dates and ranges by building the
        fhir.resources model instead of in the walk, as before; kept to compare the two
        (tests, bench/validation_cost.py), never used on writes."""
        self._models = models
        self._tables = ElementTables(bindings, own_checks=not models)
        self._invariants = invariants or InvariantSet({})
        self._targets = targets or {}
        self._narrative = narrative
        self._rules: dict[str, _Rules] = {}
        self.check_invariants = True

    @classmethod
    def from_profiles(cls, profiles_dir: Path, *, models: bool = False) -> ResourceValidator:
        return cls(
            load_required_bindings(profiles_dir / "required-bindings.json"),
            load_invariants(profiles_dir / "invariants.json"),
            load_reference_targets(profiles_dir / "reference-targets.json"),
            load_narrative_rules(profiles_dir / "narrative-xhtml.json"),
            models=models,
        )

    def validate(
        self, resource: Any, *, expected_type: str | None = None, stored: bool = True
    ) -> None:
        """Raise `InvalidResource` listing every problem of `resource` (parsed JSON); with
        `stored` (a create or update), `Unprocessable` for a type that is never stored."""
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

        if stored and resource_type in NOT_STORED:
            raise Unprocessable(
                f"{resource_type} is not stored as a resource; it is the body or result of "
                "operations",
                expression=["resourceType"],
                code="not-supported",
            )

        run = _Run(resource=resource, root=resource)
        self._walk(resource, self._tables.for_type(resource_type), resource_type, run, 0)
        issues = run.issues
        if not issues:
            issues += run.broken
            self._local_references(run, resource, resource_type)
        if not issues and self.check_invariants:
            for invariants, node, location, current, root in run.pending:
                for invariant in invariants:
                    if not invariant.holds(node, current, root):
                        issues.append(
                            _issue(location, f"{invariant.key}: {invariant.human}", "invariant")
                        )
        if self._models:
            issues += model_issues(resource, resource_type, issues)
        elif run.late:
            issues += _late_issues(run.late, issues)
        if issues:
            count = "1 problem" if len(issues) == 1 else f"{len(issues)} problems"
            # The summary names no values: it is the part that may reach a log.
            raise InvalidResource(f"{resource_type} failed validation ({count})", issues=issues)

    # --- the JSON walk -------------------------------------------------------------------

    def _rules_of(self, table: Table) -> _Rules:
        rules = self._rules.get(table.path)
        if rules is None:
            own = self._invariants.for_path(table.path)
            if table.is_resource and table.path not in _NOT_DOMAIN:
                own += self._invariants.for_path("DomainResource")
            element_invariants: dict[str, tuple[Invariant, ...]] = {}
            targets: dict[str, frozenset[str]] = {}
            for key, element in table.elements.items():
                path = f"{table.path}.{element.choice or element.name}"
                found = self._invariants.for_path(path)
                # A backbone element's own table carries them; a datatype's does not.
                backbone = element.model is not None and not is_root_type(element.model)
                if found and not backbone:
                    element_invariants[key] = found
                allowed = self._targets.get(path)
                if allowed and element.type_name in ("Reference", "CodeableReference"):
                    targets[key] = allowed
            rules = self._rules[table.path] = _Rules(own, element_invariants, targets)
        return rules

    def _walk(self, obj: dict[str, Any], table: Table, path: str, run: _Run, depth: int) -> None:
        issues = run.issues
        elements = table.elements
        rules = self._rules_of(table)
        if rules.invariants:
            run.pending.append((rules.invariants, obj, path, run.resource, run.root))
        # ele-1 (an element with an id only); `_birthDate: {"id": ..}` sits beside its value.
        if len(obj) == 1 and "id" in obj and table.path not in _HAS_VALUE_ELSEWHERE:
            run.broken.append(
                _issue(path, "ele-1: All FHIR elements must have a @value or children", "invariant")
            )
        if table.path == "Extension":
            self._extension(obj, path, run)
        elif table.path == "Reference":
            reference = obj.get("reference")
            if type(reference) is str and reference.startswith("#"):
                run.local.reference(reference, f"{path}.reference")
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
                    self._primitive_array(obj, key, element, value, location, run, depth)
                else:
                    for index, item in enumerate(value):
                        self._value(element, item, f"{location}[{index}]", run, depth)
            elif type(value) is list:
                issues.append(_issue(location, "must be a single value, not an array", "structure"))
            else:
                self._value(element, value, location, run, depth)
            if key in rules.element_invariants and value is not None:
                items = value if type(value) is list else (value,)
                for index, item in enumerate(items):
                    at = f"{location}[{index}]" if type(value) is list else location
                    if item is not None:
                        run.pending.append(
                            (rules.element_invariants[key], item, at, run.resource, run.root)
                        )
            if key in rules.targets and value is not None:
                self._targets_of(element, value, location, rules.targets[key], run)

        for choice in table.required_choices:
            if choice not in chosen:
                issues.append(_issue(f"{path}.{choice}", f"{choice}[x] is required", "required"))
        for key, ext_key, own_name in table.required:
            if (
                obj.get(key) is None
                and (ext_key is None or not _has_extension(obj.get(ext_key)))
                and (own_name is None or own_name not in obj)
            ):
                run.late.append(_issue(f"{path}.{key}", "required element is missing", "required"))
        if table.needs_id_or_extension and obj.get("id") is None and obj.get("extension") is None:
            run.late.append(_issue(path, "needs an id or an extension", "value"))

    def _extension(self, obj: dict[str, Any], location: str, run: _Run) -> None:
        """Extension rules outside FHIRPath: ext-1 and the url. A sub-extension of a complex
        extension is named by a plain name; any other by an absolute URL."""
        url = obj.get("url")
        if url is None:
            run.issues.append(_issue(f"{location}.url", "an extension needs a url", "required"))
        has_value = any(key.startswith(("value", "_value")) for key in obj)
        if has_value == ("extension" in obj):
            run.broken.append(
                _issue(
                    location,
                    "ext-1: Must have either extensions or value[x], not both"
                    if has_value
                    else "ext-1: an extension needs a value[x] or sub-extensions",
                    "invariant",
                )
            )
        if type(url) is str and url and ":" not in url and not self._in_complex(location):
            run.issues.append(_issue(f"{location}.url", f"{url!r} is not an absolute URL", "value"))

    @staticmethod
    def _in_complex(location: str) -> bool:
        # `...extension[0].extension[1]`: a part of a complex extension.
        parent, _, _ = location.rpartition(".")
        return parent.endswith("]") and parent.rpartition(".")[2].startswith(
            ("extension[", "modifierExtension[")
        )

    def _targets_of(
        self, element: Element, value: Any, location: str, allowed: frozenset[str], run: _Run
    ) -> None:
        items = value if type(value) is list else (value,)
        for index, item in enumerate(items):
            if type(item) is not dict:
                continue
            at = f"{location}[{index}]" if type(value) is list else location
            if element.type_name == "CodeableReference":
                item = item.get("reference")
                at = f"{at}.reference"
                if type(item) is not dict:
                    continue
            for kind, where in _reference_types(item, run.root):
                if kind not in allowed:
                    run.issues.append(
                        _issue(
                            f"{at}.{where}",
                            f"a reference to {kind} is not allowed here (allowed: "
                            f"{', '.join(sorted(allowed))})",
                            "invalid",
                        )
                    )

    def _local_references(self, run: _Run, resource: dict[str, Any], location: str) -> None:
        for where, message in run.local.problems(resource, location):
            run.issues.append(_issue(where, message, "invariant"))

    def _value(self, element: Element, value: Any, location: str, run: _Run, depth: int) -> None:
        issues = run.issues
        if element.kind == PRIMITIVE:
            self._primitive(element, value, location, run)
            return
        if type(value) is not dict:
            issues.append(_issue(location, "must be a JSON object", "structure"))
        elif not value:
            issues.append(_issue(location, "empty objects are not allowed", "structure"))
        elif depth >= _MAX_DEPTH:
            issues.append(_issue(location, "nested too deeply", "structure"))
        elif element.kind == RESOURCE:
            self._resource(value, location, run, depth + 1, contained=element.name == "contained")
        elif element.model is not None:
            self._walk(value, self._tables.table(element.model), location, run, depth + 1)

    def _resource(
        self, value: dict[str, Any], location: str, run: _Run, depth: int, *, contained: bool
    ) -> None:
        issues = run.issues
        resource_type = value.get("resourceType")
        if not isinstance(resource_type, str):
            issues.append(_issue(location, "a resource needs a resourceType", "structure"))
        elif not is_resource_type(resource_type):
            issues.append(
                _issue(location, f"{resource_type!r} is not a FHIR R4B resource type", "invalid")
            )
        else:
            saved = run.resource, run.root, run.local
            run.resource = value
            if contained:
                inside = run.local.inside
                run.local.inside = _contained_index(location)
                self._walk(value, self._tables.for_type(resource_type), location, run, depth)
                run.local.inside = inside
            else:
                # A resource in a Bundle entry or a parameter is a root of its own.
                run.root, run.local = value, LocalReferences()
                before = len(issues)
                self._walk(value, self._tables.for_type(resource_type), location, run, depth)
                if len(issues) == before:
                    self._local_references(run, value, location)
            run.resource, run.root, run.local = saved

    def _primitive_array(
        self,
        obj: dict[str, Any],
        key: str,
        element: Element,
        value: list[Any],
        location: str,
        run: _Run,
        depth: int,
    ) -> None:
        issues = run.issues
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
                self._value(element, item, item_location, run, depth)
        if twin is not None and not is_extension and len(twin) != len(value):
            issues.append(
                _issue(location, f"{key} and {twin_key} must have the same length", "structure")
            )

    def _primitive(self, element: Element, value: Any, location: str, run: _Run) -> None:
        issues = run.issues
        kind = element.json_kind
        if kind == BOOLEAN:
            valid = value is True or value is False
        elif kind in (INTEGER, DECIMAL):
            valid = type(value) is int or (kind == DECIMAL and isinstance(value, (Decimal, float)))
            if valid and element.value_check is not None:
                problem = element.value_check(value)
                if problem is not None:
                    run.late.append(_issue(location, problem, "value"))
        elif type(value) is not str:
            valid = False
        elif not value:
            issues.append(_issue(location, "empty strings are not allowed", "value"))
            return
        else:
            if "\x00" in value:
                issues.append(_issue(location, "the NUL character is not allowed", "value"))
            elif not value.strip(_FHIR_WHITESPACE):
                issues.append(_issue(location, "whitespace-only strings are not allowed", "value"))
            elif element.check is not None and not element.check(value):
                issues.append(_issue(location, f"must be {element.format_name}", "value"))
            elif element.type_name == "xhtml" and self._narrative is not None:
                for problem in self._narrative.problems(value):
                    issues.append(_issue(location, problem, "invariant"))
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
            elif element.type_name in _URI_TYPES and value.startswith("#"):
                run.local.uri(value)
            elif element.value_check is not None:
                problem = element.value_check(value)
                if problem is not None:
                    run.late.append(_issue(location, problem, "value"))
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


def _has_extension(value: Any) -> bool:
    """Whether a required primitive's `_key` stands in for its value (extensions present).
    For a repeating one (`CapabilityStatement.format`) values are needed, as before."""
    return type(value) is dict and bool(value.get("extension"))


def _late_issues(late: list[Issue], found: list[Issue]) -> list[Issue]:
    """The late issues not at or under a location already reported, each location once."""
    if not found and len(late) == 1:
        return late
    covered = {issue.expression[0] for issue in found if issue.expression}
    kept = []
    for issue in late:
        location = issue.expression[0]
        if not is_covered(location, covered):
            covered.add(location)
            kept.append(issue)
    return kept


def _contained_index(location: str) -> int:
    # `Patient.contained[2]` -> 2
    return int(location.rpartition("[")[2].rstrip("]"))


def _reference_types(reference: dict[str, Any], root: Any) -> list[tuple[str, str]]:
    """(resource type, element) each part of a Reference says it points to: the text
    (`Type/id`, an absolute URL ending so, `Type?criteria`, `#id` of a contained resource)
    and `type`."""
    found: list[tuple[str, str]] = []
    text = reference.get("reference")
    if type(text) is str:
        kind: str | None = None
        if text.startswith("#"):
            for item in root.get("contained", ()) if type(root) is dict else ():
                if type(item) is dict and item.get("id") == text[1:]:
                    kind = item.get("resourceType")
        else:
            kind = parse_reference(text)[0]
            relative = "://" not in text and not text.startswith("urn:")
            if kind is None and (matched := _CONDITIONAL_REFERENCE.match(text)) is not None:
                kind = matched.group(1)
            elif kind is not None and not relative and not is_resource_type(kind):
                kind = None  # an absolute URL that only looks like `.../Word/id`
        if type(kind) is str:
            found.append((kind, "reference"))
    declared = reference.get("type")
    if type(declared) is str:
        name = declared.rsplit("/", 1)[-1]
        if declared == name or declared.startswith("http://hl7.org/fhir/StructureDefinition/"):
            found.append((name, "type"))
    return found


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


# --- the default validator -----------------------------------------------------------------


def _default_profiles_dir() -> Path:
    # `profiles/` beside `src/`, as cmfhir.config.default_profiles_dir finds it.
    return Path(__file__).resolve().parents[3] / "profiles"


@functools.cache
def _default_validator() -> ResourceValidator:
    return ResourceValidator.from_profiles(_default_profiles_dir())


def validate_resource(
    resource: Any, *, expected_type: str | None = None, stored: bool = True
) -> None:
    """Raise `InvalidResource` listing every problem of `resource` (parsed FHIR JSON), with
    the definitions in the checkout's `profiles/`; `stored=False` for an operation body,
    which may be a Parameters. Servers with settings use
    `ResourceValidator.from_profiles(settings.profiles_dir)` instead."""
    _default_validator().validate(resource, expected_type=expected_type, stored=stored)

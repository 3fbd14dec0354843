"""FHIRPath invariants of the R4B core definitions (https://hl7.org/fhir/R4B/conformance-rules.html#constraints):
the `constraint`s of severity `error` in `profiles/invariants.json`, evaluated with fhirpathpy
on each element they are defined on.

Each expression is compiled once, on first use. An invariant is evaluated only when the
element it belongs to is present, and, for most, only when one of the names its expression
starts a path with is a key of that element: otherwise its result is the one it has on an
element without those keys, computed once. The invariants that nearly every resource
reaches (ref-1 on every Reference, per-1, qty-3, obs-6, obs-7, and those a care-management
caseload reaches on each Appointment, MedicationDispense and QuestionnaireResponse item:
app-1, app-2, app-3, mdd-1, qrs-1; and con-4, con-5, gol-1, cpt-2, cpl-3 on each Condition,
Goal target, ContactPoint and CarePlan activity) and rng-2 (fhirpathpy cannot compare Quantities)
have a Python equivalent (`EQUIVALENTS`, checked
against fhirpathpy by the tests) that answers the common cases and hands the rest to
fhirpathpy. An expression that fhirpathpy cannot evaluate on some input (an engine gap)
counts as satisfied and is logged without the data: a valid resource must never be refused
because of the engine.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fhirpathpy
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models as _fhirpath_models

__all__ = ["EQUIVALENTS", "KEEP_R4B", "Invariant", "InvariantSet", "load_invariants"]

logger = logging.getLogger(__name__)

_R4_MODEL: dict[str, Any] = _fhirpath_models["r4"]
_CHOICE_SUFFIXES: frozenset[str] = frozenset(
    t[0].upper() + t[1:] for types in _R4_MODEL["choiceTypePaths"].values() for t in types
)
# An expression that reads more than the element's own keys: the whole resource, or the
# element itself (`$this`, a function called on it: `hasValue()`, `children()`...).
_READS_MORE = re.compile(r"%resource|%rootResource|%context|\$this|(?<![.\w])\s*\w+\(")
# String literals (skipped), then names; group 3 is set when a `.` comes before the name.
_IDENTIFIER = re.compile(r"'(?:[^'\\]|\\.)*'|(\.\s*)?(?:`([^`]+)`|([A-Za-z_][A-Za-z0-9_]*))")
_KEYWORDS = frozenset({"and", "or", "xor", "implies", "is", "as", "in", "contains", "div", "mod"})


def _has_value(inputs: list[Any]) -> list[bool]:
    # FHIRPath hasValue(): a single primitive with a value (not only extensions).
    return [len(inputs) == 1 and inputs[0] is not None and not isinstance(inputs[0], dict | list)]


def _no_trace(*_: Any) -> None:
    """trace() prints by default; invariants run on every write."""


_OPTIONS = {"userInvocationTable": {"hasValue": {"fn": _has_value}}, "traceFn": _no_trace}

# Another version's expressions known to be wrong, for which R4B's stay, and why.
KEEP_R4B = {
    "que-7": "R4 writes `answer is Boolean` (System.Boolean), which no FHIR boolean answer "
    "is, so every `exists` enableWhen would fail; R4B corrected it to `boolean`",
}
# What scripts/derive_invariants.py skips, for constraints of another version.
_UNSUPPORTED = ("conformsTo(", "memberOf(", "resolve(", "htmlChecks(")

Evaluate = Callable[[Any, dict[str, Any]], list[Any]]
# node, %resource -> whether the invariant holds, or None to ask fhirpathpy.
Equivalent = Callable[[dict[str, Any], Any], bool | None]


def _has(node: dict[str, Any], name: str) -> bool:
    return name in node or "_" + name in node


def _zone(value: str) -> str | None:
    """The time-zone suffix of a dateTime (`Z`, `+05:00`), "" for a date, None if neither."""
    if len(value) <= 10:
        return ""
    if value.endswith("Z"):
        return "Z"
    if len(value) > 19 and value[-6] in "+-" and value[-3] == ":":
        return value[-6:]
    return None


def _per_1(node: dict[str, Any], resource: Any) -> bool | None:
    # start.hasValue().not() or end.hasValue().not() or (start <= end)
    start, end = node.get("start"), node.get("end")
    if type(start) is not str or type(end) is not str:
        return True
    # The same precision in the same zone compares as text; anything else asks fhirpathpy.
    zone = _zone(start)
    if len(start) == len(end) and zone is not None and zone == _zone(end):
        return start <= end
    return None


def _qty_3(node: dict[str, Any], resource: Any) -> bool | None:
    # code.empty() or system.exists()
    return not _has(node, "code") or _has(node, "system")


def _obs_6(node: dict[str, Any], resource: Any) -> bool | None:
    # dataAbsentReason.empty() or value.empty()
    return not _has(node, "dataAbsentReason") or not any(
        k.startswith(("value", "_value")) for k in node
    )


def _obs_7(node: dict[str, Any], resource: Any) -> bool | None:
    # value.empty() or component.code.where(coding.intersect(%resource.code.coding)
    #   .exists()).empty()
    if not any(k.startswith(("value", "_value")) for k in node):
        return True
    components = node.get("component")
    if components is None:
        return True
    code = resource.get("code") if type(resource) is dict else None
    codings = code.get("coding") if type(code) is dict else None
    if type(components) is not list or (codings is not None and type(codings) is not list):
        return None
    for component in components:
        own = component.get("code") if type(component) is dict else None
        mine = own.get("coding") if type(own) is dict else None
        if mine and codings and any(coding in codings for coding in mine):
            return False
    return True


def _rng_2(node: dict[str, Any], resource: Any) -> bool | None:
    # low.empty() or high.empty() or (low <= high). fhirpathpy 2.2 cannot compare
    # Quantities (a TypeError), so this is the only evaluation rng-2 gets: quantities in
    # the same unit compare by value; in different units (a UCUM conversion) it holds.
    low, high = node.get("low"), node.get("high")
    if type(low) is not dict or type(high) is not dict:
        return True
    low_value, high_value = low.get("value"), high.get("value")
    if low_value is None or high_value is None or type(low_value) is bool:
        return True
    same_unit = (low.get("system"), low.get("code"), low.get("unit")) == (
        high.get("system"),
        high.get("code"),
        high.get("unit"),
    )
    try:
        return not same_unit or low_value <= high_value
    except TypeError:
        return True


def _ref_1(node: dict[str, Any], resource: Any) -> bool | None:
    # reference.startsWith('#').not() or (reference.substring(1) in %rootResource.contained.id)
    # On every Reference: only a local one (`#id`, which the walk checks too) needs the rest.
    reference = node.get("reference")
    if type(reference) is str:
        return None if reference.startswith("#") else True
    return True if reference is None and "_reference" not in node else None


def _qrs_1(node: dict[str, Any], resource: Any) -> bool | None:
    # (answer.exists() and item.exists()).not()
    return not ("answer" in node and "item" in node)


def _app_1(node: dict[str, Any], resource: Any) -> bool | None:
    # type.exists() or actor.exists()
    return "type" in node or "actor" in node


def _app_2(node: dict[str, Any], resource: Any) -> bool | None:
    # start.exists() = end.exists()
    if "_start" in node or "_end" in node:
        return None
    return ("start" in node) == ("end" in node)


_APP_3_STATUSES = frozenset({"proposed", "cancelled", "waitlist"})


def _app_3(node: dict[str, Any], resource: Any) -> bool | None:
    # (start.exists() and end.exists()) or (status in ('proposed' | 'cancelled' | 'waitlist'))
    if "start" in node and "end" in node:
        return True
    status = node.get("status")
    if "_start" in node or "_end" in node or "_status" in node or type(status) is not str:
        return None
    return status in _APP_3_STATUSES


def _mdd_1(node: dict[str, Any], resource: Any) -> bool | None:
    # whenHandedOver.empty() or whenPrepared.empty() or whenHandedOver >= whenPrepared
    handed, prepared = node.get("whenHandedOver"), node.get("whenPrepared")
    if "_whenHandedOver" in node or "_whenPrepared" in node:
        return None
    if handed is None or prepared is None:
        return True
    if type(handed) is not str or type(prepared) is not str:
        return None
    zone = _zone(handed)
    if len(handed) == len(prepared) and zone is not None and zone == _zone(prepared):
        return handed >= prepared
    return None


_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_VER_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_ABATED = frozenset({"resolved", "remission", "inactive"})


def _plain_codings(concept: Any) -> list[dict[str, Any]] | None:
    """The codings of a CodeableConcept when every one is a plain object of plain text
    `system` and `code` (no extensions on them); None otherwise (fhirpathpy answers)."""
    if concept is None:
        return []
    if type(concept) is not dict:
        return None
    codings = concept.get("coding", [])
    if type(codings) is not list:
        return None
    for coding in codings:
        if type(coding) is not dict or "_system" in coding or "_code" in coding:
            return None
        if type(coding.get("system", "")) is not str or type(coding.get("code", "")) is not str:
            return None
    return codings


def _con_4(node: dict[str, Any], resource: Any) -> bool | None:
    # abatement.empty() or clinicalStatus.coding.where(system='…condition-clinical' and
    #   (code='resolved' or code='remission' or code='inactive')).exists()
    if any(k.startswith("_abatement") for k in node):
        return None
    if not any(k.startswith("abatement") for k in node):
        return True
    codings = _plain_codings(node.get("clinicalStatus"))
    if codings is None:
        return None
    return any(c.get("system") == _CLINICAL and c.get("code") in _ABATED for c in codings)


def _con_5(node: dict[str, Any], resource: Any) -> bool | None:
    # verificationStatus.coding.where(system='…condition-ver-status' and
    #   code='entered-in-error').empty() or clinicalStatus.empty()
    if "clinicalStatus" not in node:
        return True
    codings = _plain_codings(node.get("verificationStatus"))
    if codings is None or type(node["clinicalStatus"]) is not dict:
        return None
    if any(c.get("system") == _VER_STATUS and c.get("code") == "entered-in-error" for c in codings):
        return False if node["clinicalStatus"] else None
    return True


def _gol_1(node: dict[str, Any], resource: Any) -> bool | None:
    # (detail.exists() and measure.exists()) or detail.exists().not()
    if any(k.startswith("_detail") for k in node):
        return None
    return "measure" in node or not any(k.startswith("detail") for k in node)


def _cpt_2(node: dict[str, Any], resource: Any) -> bool | None:
    # value.empty() or system.exists()
    if "_value" in node or "_system" in node:
        return None
    return "value" not in node or "system" in node


def _cpl_3(node: dict[str, Any], resource: Any) -> bool | None:
    # detail.empty() or reference.empty()
    return not ("detail" in node and "reference" in node)


# Another version's expression an equivalent also answers for. R4's ref-1 lacks R4B's
# `or (reference='#' and %rootResource!=%resource)`, which the equivalent hands to fhirpathpy.
_ALSO_ANSWERS: dict[str, frozenset[str]] = {
    "ref-1": frozenset(
        {
            "reference.startsWith('#').not() or (reference.substring(1).trace('url') in "
            "%rootResource.contained.id.trace('ids'))"
        }
    )
}

EQUIVALENTS: dict[str, Equivalent] = {
    "rng-2": _rng_2,
    "per-1": _per_1,
    "qty-3": _qty_3,
    "obs-6": _obs_6,
    "obs-7": _obs_7,
    "ref-1": _ref_1,
    "qrs-1": _qrs_1,
    "app-1": _app_1,
    "app-2": _app_2,
    "app-3": _app_3,
    "mdd-1": _mdd_1,
    "con-4": _con_4,
    "con-5": _con_5,
    "gol-1": _gol_1,
    "cpt-2": _cpt_2,
    "cpl-3": _cpl_3,
}


@dataclass(slots=True)
class Invariant:
    """One constraint, compiled on first use."""

    key: str
    human: str
    expression: str
    path: str  # the element it is defined on: the base type for fhirpathpy
    # The keys of the element whose presence can change the result; None: always evaluate.
    names: frozenset[str] | None = None
    equivalent: Equivalent | None = None
    _compiled: Evaluate | None = field(default=None, repr=False)
    _absent: bool | None = field(default=None, repr=False)  # the result when no name is there
    _failed: bool = field(default=False, repr=False)

    def holds(self, node: Any, resource: Any, root: Any) -> bool:
        """Whether the invariant holds on `node` (the element's JSON); `resource` and `root`
        are %resource and %rootResource."""
        if self.equivalent is not None and type(node) is dict:
            answer = self.equivalent(node, resource)
            if answer is not None:
                return answer
        names = self.names
        if names is not None and type(node) is dict and names.isdisjoint(node):
            if self._absent is None:
                self._absent = self._evaluate({}, {}, {})
            return self._absent
        return self._evaluate(node, resource, root)

    def evaluate_fhirpath(self, node: Any, resource: Any, root: Any) -> bool:
        """The answer of fhirpathpy alone (the tests compare the shortcuts with it)."""
        return self._evaluate(node, resource, root)

    def _evaluate(self, node: Any, resource: Any, root: Any) -> bool:
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = fhirpathpy.compile(
                self.expression, model=_R4_MODEL, options=_OPTIONS
            )
        try:
            result = compiled(
                ResourceNode.create_node(node, self.path),  # type: ignore[no-untyped-call]
                {"resource": resource, "rootResource": root},
            )
        except Exception as error:
            # The data may hold PHI: log the constraint and the error type only.
            level = logging.DEBUG if self._failed else logging.WARNING
            self._failed = True
            logger.log(level, "invariant %s not evaluated (%s)", self.key, type(error).__name__)
            return True
        return result != [False]


def _names(expression: str) -> frozenset[str] | None:
    """Every JSON key a name that starts a path in the expression may be spelled as
    (`value` is also `valueQuantity`..., `_value`...), or None when the result depends on
    more than those keys. Names inside `where(...)` count too: more than needed, never less."""
    if _READS_MORE.search(expression.replace("%ucum", "''")):
        return None
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(expression):
        name = match.group(2) or match.group(3)
        if not name or match.group(1) or name in _KEYWORDS:
            continue  # a string literal, or a name after `.`
        names.add(name)
        names.add("_" + name)
        for suffix in _CHOICE_SUFFIXES:
            names.add(name + suffix)
            names.add("_" + name + suffix)
    return frozenset(names)


class InvariantSet:
    """The invariants of each element path (`Patient.contact`, `Period`)."""

    def __init__(self, by_path: dict[str, tuple[Invariant, ...]]) -> None:
        self._by_path = by_path

    def for_path(self, path: str) -> tuple[Invariant, ...]:
        return self._by_path.get(path, ())

    @property
    def paths(self) -> frozenset[str]:
        return frozenset(self._by_path)

    def __len__(self) -> int:
        return sum(len(found) for found in self._by_path.values())

    def with_differences(
        self, differences: Mapping[tuple[str, str], Any], version_label: str
    ) -> InvariantSet:
        """These invariants as another FHIR version defines them: `differences` maps
        (path, key) to that version's constraint (with `severity` and `expression`), or
        None where it has no such key (fhir_versions.constraint_differences). Keys this set
        does not evaluate as FHIRPath (native, skipped) stay as they are."""
        by_path = {path: list(found) for path, found in self._by_path.items()}
        known = {(i.path, i.key) for found in self._by_path.values() for i in found}
        for (path, key), constraint in differences.items():
            if key in KEEP_R4B:
                continue
            if (path, key) in known:
                by_path[path] = [i for i in by_path[path] if i.key != key]
            elif constraint is None or path == "Element" or key.startswith(("dom-", "ele-")):
                continue  # not evaluated here in either version (native or skipped)
            if constraint is None or constraint.severity != "error":
                continue
            if any(name in constraint.expression for name in _UNSUPPORTED):
                continue
            previous = next((i for i in self._by_path.get(path, ()) if i.key == key), None)
            human = previous.human if previous is not None else f"the {version_label} invariant"
            by_path.setdefault(path, []).append(
                Invariant(
                    key=key,
                    human=human,
                    expression=constraint.expression,
                    path=path,
                    names=_names(constraint.expression),
                    equivalent=EQUIVALENTS.get(key)
                    if (previous is not None and previous.expression == constraint.expression)
                    or constraint.expression in _ALSO_ANSWERS.get(key, ())
                    else None,
                )
            )
        return InvariantSet({path: tuple(found) for path, found in by_path.items() if found})


def load_invariants(path: Path) -> InvariantSet:
    """Read `invariants.json` (see scripts/derive_invariants.py)."""
    document = json.loads(path.read_text(encoding="utf-8"))
    by_path: dict[str, tuple[Invariant, ...]] = {}
    for element_path, entries in document["constraints"].items():
        by_path[element_path] = tuple(
            Invariant(
                key=entry["key"],
                human=entry["human"],
                expression=entry["expression"],
                path=element_path,
                names=_names(entry["expression"]),
                equivalent=EQUIVALENTS.get(entry["key"]),
            )
            for entry in entries
        )
    return InvariantSet(by_path)

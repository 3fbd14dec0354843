"""A topic's `fhirPathCriteria` (over `%current` and `%previous`), compiled once and its
results remembered by what the expression can see of the two versions.

Evaluating the admission topic's criteria with fhirpathpy costs about 250 µs per change,
a third of the matcher's CPU per event, for an answer that depends on two `status`
values. When the expression can only look at named elements of the versions (every
`%current` and `%previous` is followed by `.element`, or by `.empty()`, `.exists()` or
`.count()`; no function that walks a whole resource, no `$this`, no clock, no other
variable), its result is a function of those elements alone: each version is cut down to
`resourceType` and its top-level elements named anywhere in the expression (with their
choice-type and `_element` forms), and the result is kept by that projection. Any other
expression is evaluated in full for every change, as before.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any

import fhirpathpy
from fhirpathpy.models import models as fhirpath_models

from cmfhir.resources.fhirjson import dump_json

__all__ = ["Criteria", "criteria"]

log = logging.getLogger(__name__)

_MODEL = fhirpath_models["r4"]
# String literals (their content names nothing) and the tokens the analysis looks at.
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'")
_VARIABLE = re.compile(r"%(`[^`]*`|'[^']*'|[A-Za-z_][A-Za-z0-9_\-]*)")
_ROOT = re.compile(r"%(current|previous)(?:\.([A-Za-z_][A-Za-z0-9_]*)\s*(\()?)?")
_NAME = re.compile(r"`([^`]*)`|([A-Za-z_][A-Za-z0-9_]*)")
_CALL = re.compile(r"(?<![A-Za-z0-9_`%])([A-Za-z_][A-Za-z0-9_]*)\s*\(")
# Operators written as words (`and (`... is not a call).
_KEYWORDS = frozenset({"and", "or", "xor", "implies", "is", "as", "div", "mod", "in", "contains"})
# Functions that look at more of a resource than the elements they name, or at the clock.
_WHOLE = frozenset(
    {
        "children",
        "descendants",
        "repeat",
        "resolve",
        "trace",
        "now",
        "today",
        "timeOfDay",
        "conformsTo",
        "memberOf",
        "htmlChecks",
        "toString",
        "encode",
        "decode",
        "defineVariable",
    }
)
# What may follow `%current.` / `%previous.` as a call on the version itself.
_ROOT_CALLS = frozenset({"empty", "exists", "count"})
_CACHE_SIZE = 4096


def _names(expression: str) -> frozenset[str] | None:
    """The element names the expression may read, when its result depends on nothing else
    of the two versions; None when it may."""
    text = _STRING.sub("''", expression)
    if "$this" in text or "$index" in text or "$total" in text:
        return None
    for variable in _VARIABLE.finditer(text):
        if variable.group(1) not in ("current", "previous"):
            return None
    for root in _ROOT.finditer(text):
        element, call = root.group(2), root.group(3)
        if element is None or (call and element not in _ROOT_CALLS):
            return None  # the whole version compared, converted or passed on
    for call in _CALL.finditer(text):
        name = call.group(1)
        if name in _KEYWORDS:
            continue
        if name in _WHOLE:
            return None
        on = text[: call.start()].rstrip()[-1:]
        if on != "." and name not in _ROOT_CALLS and name not in ("not", "iif"):
            return None  # a function of the context (the current version) itself
    names = set()
    for name in _NAME.finditer(_VARIABLE.sub(" ", text)):
        names.add(name.group(1) or name.group(2))
    return frozenset(names)


def _kept(key: str, names: frozenset[str]) -> bool:
    if key == "resourceType":
        return True
    bare = key[1:] if key.startswith("_") else key
    if bare in names:
        return True
    # A choice element (`value` read as `valueQuantity`).
    return any(
        bare.startswith(name) and len(bare) > len(name) and bare[len(name)].isupper()
        for name in names
    )


class Criteria:
    """One `fhirPathCriteria`: `fires(current, previous)`."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self._evaluate: Callable[[Any, Any], Any] = fhirpathpy.compile(expression, _MODEL)
        self.names = _names(expression)
        self._results: dict[bytes, bool] = {}
        # Whether an element (by its key in the JSON) is read: decided once per key.
        self._reads: dict[str, bool] = {}
        # Evaluations run (the rest were answered from what was kept).
        self.evaluated = 0

    def fires(self, current: dict[str, Any] | None, previous: dict[str, Any] | None) -> bool:
        if self.names is None:
            return self._run(current, previous)
        seen_current = None if current is None else self._seen(current)
        seen_previous = None if previous is None else self._seen(previous)
        key = dump_json([seen_current, seen_previous])
        found = self._results.get(key)
        if found is None:
            found = self._results[key] = self._run(seen_current, seen_previous)
            if len(self._results) > _CACHE_SIZE:
                self._results.clear()
                self._results[key] = found
        return found

    def _seen(self, version: dict[str, Any]) -> dict[str, Any]:
        """The version's elements the expression may read."""
        names, reads = self.names, self._reads
        assert names is not None
        seen = {}
        for key, value in version.items():
            kept = reads.get(key)
            if kept is None:
                kept = reads[key] = _kept(key, names)
                if len(reads) > _CACHE_SIZE:
                    reads.clear()
            if kept:
                seen[key] = value
        return seen

    def _run(self, current: dict[str, Any] | None, previous: dict[str, Any] | None) -> bool:
        self.evaluated += 1
        environment: dict[str, Any] = {"previous": previous or [], "current": current or []}
        try:
            value = self._evaluate(current or {}, environment)
        except Exception as error:
            log.warning("topic fhirPathCriteria failed: %s", type(error).__name__)
            return False
        return bool(value == [True])


@functools.lru_cache(maxsize=256)
def criteria(expression: str) -> Criteria:
    """A topic's expression compiled once (parsing costs ~100 times evaluating)."""
    return Criteria(expression)

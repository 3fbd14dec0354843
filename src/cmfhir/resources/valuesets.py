"""Expanding a ValueSet from its `compose` (https://hl7.org/fhir/R4/valueset.html#compose,
https://hl7.org/fhir/R4/valueset-operation-expand.html) over the CodeSystems and ValueSets
it names, which the caller fetched first (`needs` says which).

Supported: whole code systems (`content` complete), enumerated concepts (no CodeSystem
needed), filters `concept is-a | descendent-of | is-not-a | =` and `<property> = | in` on
the hierarchy and properties of a held CodeSystem, included ValueSets (intersected),
`exclude`, and a ValueSet that carries its own `expansion`. The required bindings of the
core specification (`profiles/required-bindings.json`) expand without being stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cmfhir.errors import Unprocessable

__all__ = [
    "Concept",
    "ExpansionError",
    "binding_expansions",
    "expand",
    "matches_filter",
    "needs",
]

_CORE = "http://hl7.org/fhir/"
_CORE_VALUE_SETS = "http://hl7.org/fhir/ValueSet/"
# ValueSets within ValueSets: deeper than this is a cycle or an abuse.
MAX_DEPTH = 8


class ExpansionError(Unprocessable):
    """The ValueSet cannot be expanded here (a code system not held, a filter not supported)."""

    code = "not-supported"


@dataclass(frozen=True, slots=True)
class Concept:
    system: str
    code: str
    display: str | None = None
    version: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.system, self.code)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"system": self.system}
        if self.version:
            out["version"] = self.version
        out["code"] = self.code
        if self.display:
            out["display"] = self.display
        return out


def _canonical(url: Any) -> str:
    return str(url).split("|", 1)[0]


def _includes(value_set: dict[str, Any]) -> Iterator[dict[str, Any]]:
    compose = value_set.get("compose")
    if isinstance(compose, dict):
        for key in ("include", "exclude"):
            for part in compose.get(key) or ():
                if isinstance(part, dict):
                    yield part


def needs(value_set: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The code system urls and value set urls the compose of `value_set` names."""
    systems: set[str] = set()
    value_sets: set[str] = set()
    for part in _includes(value_set):
        if isinstance(part.get("system"), str):
            systems.add(part["system"])
        for url in part.get("valueSet") or ():
            value_sets.add(_canonical(url))
    return systems, value_sets


def _flatten(
    concepts: Any, ancestors: tuple[str, ...] = ()
) -> Iterator[tuple[dict[str, Any], tuple[str, ...]]]:
    for concept in concepts if isinstance(concepts, list) else ():
        if isinstance(concept, dict) and isinstance(concept.get("code"), str):
            yield concept, ancestors
            yield from _flatten(concept.get("concept"), (*ancestors, concept["code"]))


def _property_values(concept: dict[str, Any], name: str) -> list[str]:
    values: list[str] = []
    for prop in concept.get("property") or ():
        if isinstance(prop, dict) and prop.get("code") == name:
            for key, value in prop.items():
                if key.startswith("value"):
                    if isinstance(value, dict):
                        values.append(str(value.get("code")))
                    elif isinstance(value, bool):
                        values.append("true" if value else "false")
                    else:
                        values.append(str(value))
    return values


def _passes(
    concept: dict[str, Any], ancestors: tuple[str, ...], rule: dict[str, Any], system: str
) -> bool:
    prop, op, value = rule.get("property"), rule.get("op"), rule.get("value")
    code = concept["code"]
    if prop == "concept" and op == "is-a":
        return code == value or value in ancestors
    if prop == "concept" and op == "descendent-of":
        return value in ancestors
    if prop == "concept" and op == "is-not-a":
        return code != value and value not in ancestors
    if prop == "concept" and op == "=":
        return bool(code == value)
    if isinstance(prop, str) and op == "=":
        return str(value) in _property_values(concept, prop)
    if isinstance(prop, str) and op == "in":
        return bool(set(str(value).split(",")) & set(_property_values(concept, prop)))
    raise ExpansionError(
        f"The filter '{prop} {op}' on {system} is not supported (supported: concept is-a, "
        "descendent-of, is-not-a, =; a property = or in)",
        expression=["ValueSet.compose.include.filter"],
    )


def _system_concepts(
    part: dict[str, Any], code_systems: Mapping[str, dict[str, Any]]
) -> list[Concept]:
    system = str(part["system"])
    listed = part.get("concept")
    filters = [f for f in part.get("filter") or () if isinstance(f, dict)]
    held = code_systems.get(system)
    version = part.get("version")
    if isinstance(listed, list) and not filters:
        known = {c["code"]: c for c, _ in _flatten(held.get("concept"))} if held else {}
        out = []
        for entry in listed:
            if isinstance(entry, dict) and isinstance(entry.get("code"), str):
                display = entry.get("display") or known.get(entry["code"], {}).get("display")
                out.append(Concept(system, entry["code"], display, version))
        return out
    if held is None:
        raise ExpansionError(
            f"The code system {system} is not held by this server, so its codes cannot be listed",
            expression=["ValueSet.compose.include.system"],
        )
    if held.get("content") != "complete":
        raise ExpansionError(
            f"The code system {system} is held as '{held.get('content')}', not complete, so "
            "its codes cannot be listed",
            expression=["ValueSet.compose.include.system"],
        )
    version = version or held.get("version")
    codes = [
        Concept(system, c["code"], c.get("display"), version)
        for c, ancestors in _flatten(held.get("concept"))
        if all(_passes(c, ancestors, f, system) for f in filters)
    ]
    if isinstance(listed, list):
        wanted = {e.get("code") for e in listed if isinstance(e, dict)}
        codes = [c for c in codes if c.code in wanted]
    return codes


def _part(
    part: dict[str, Any],
    code_systems: Mapping[str, dict[str, Any]],
    value_sets: Mapping[str, dict[str, Any]],
    depth: int,
) -> list[Concept]:
    found: list[Concept] | None = None
    if isinstance(part.get("system"), str):
        found = _system_concepts(part, code_systems)
    for url in part.get("valueSet") or ():
        nested = value_sets.get(_canonical(url))
        if nested is None:
            raise ExpansionError(
                f"The value set {url} that this one includes is not held by this server",
                expression=["ValueSet.compose.include.valueSet"],
            )
        codes = expand(nested, code_systems, value_sets, depth=depth + 1)
        if found is None:
            found = codes
        else:
            keys = {c.key for c in codes}
            found = [c for c in found if c.key in keys]
    return found or []


def expand(
    value_set: dict[str, Any],
    code_systems: Mapping[str, dict[str, Any]],
    value_sets: Mapping[str, dict[str, Any]],
    *,
    depth: int = 0,
) -> list[Concept]:
    """Every concept of `value_set`, in the order its compose lists them, without repeats.
    `code_systems` and `value_sets` are the resources held, by canonical url."""
    if depth > MAX_DEPTH:
        raise ExpansionError(
            f"The value set {value_set.get('url')} includes value sets more than "
            f"{MAX_DEPTH} deep (or in a cycle)"
        )
    compose = value_set.get("compose")
    if not isinstance(compose, dict):
        expansion = value_set.get("expansion")
        if isinstance(expansion, dict):
            return list(_contains(expansion.get("contains")))
        raise ExpansionError(
            f"The value set {value_set.get('url')} has neither compose nor expansion"
        )
    out: dict[tuple[str, str], Concept] = {}
    for part in compose.get("include") or ():
        if isinstance(part, dict):
            for concept in _part(part, code_systems, value_sets, depth):
                out.setdefault(concept.key, concept)
    for part in compose.get("exclude") or ():
        if isinstance(part, dict):
            for concept in _part(part, code_systems, value_sets, depth):
                out.pop(concept.key, None)
    return list(out.values())


def _contains(contains: Any) -> Iterator[Concept]:
    for entry in contains if isinstance(contains, list) else ():
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("system"), str) and isinstance(entry.get("code"), str):
            yield Concept(entry["system"], entry["code"], entry.get("display"))
        yield from _contains(entry.get("contains"))


def matches_filter(concept: Concept, text: str) -> bool:
    """The `filter` of $expand: every word of `text` starts a word of the display or the
    code, case-insensitively (`food ins` finds "Food insecurity")."""
    words = [*(concept.display or "").lower().replace("/", " ").split(), concept.code.lower()]
    return all(any(w.startswith(part) for w in words) for part in text.lower().split())


@lru_cache(maxsize=4)
def _bindings(path: Path) -> dict[str, tuple[Concept, ...]]:
    document = json.loads(path.read_text(encoding="utf-8"))
    codes: dict[str, dict[str, None]] = {}
    for binding in document.get("bindings", {}).values():
        url = _canonical(binding.get("valueSet", ""))
        if url.startswith(_CORE_VALUE_SETS):
            codes.setdefault(url, {}).update(dict.fromkeys(binding.get("codes", ())))
    out: dict[str, tuple[Concept, ...]] = {}
    for url, listed in codes.items():
        # The core names a value set of required codes after its code system.
        system = _CORE + url.removeprefix(_CORE_VALUE_SETS)
        out[url] = tuple(Concept(system, code) for code in listed)
    return out


def binding_expansions(
    r4: bool, profiles_dir: Path | None = None
) -> dict[str, tuple[Concept, ...]]:
    """The codes of each value set a required binding of the core specification names
    (R4's or R4B's), by canonical url; each code's system is the one the core names after
    the value set. `profiles_dir` is the checkout's `profiles/` unless given, as for the
    validation the bindings come from."""
    folder = profiles_dir or Path(__file__).resolve().parents[3] / "profiles"
    path = folder / ("r4/required-bindings.json" if r4 else "required-bindings.json")
    return _bindings(path.resolve()) if path.exists() else {}

"""The search-parameter registry (https://hl7.org/fhir/R4B/searchparameter.html): what can be
searched on each resource type, read from `profiles/`, with one compiled extractor per
(type, parameter) for the indexer.

Sources, in load order: `profiles/search-parameters.json` (the R4B core definitions, derived
by `scripts/derive_profiles.py`), then every `profiles/search-parameters/*.json` (cmfhir's
own: a SearchParameter or a Bundle of them), in file-name order, then every
`profiles/content/SearchParameter-*.json` (those the server also stores as resources).
For a type, a parameter declared on the type wins over one declared on `DomainResource`,
which wins over `Resource`; among definitions with the same base and code the one loaded
last wins, so a file in `profiles/search-parameters/` can replace a core definition.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cmfhir.resources.fhirpath import (
    Extractor,
    compile_path,
    required_keys,
    split_union,
    uses_fast_path,
)

__all__ = [
    "CompiledParameter",
    "SearchParameter",
    "SearchParameterRegistry",
    "load_registry",
    "parse_search_parameters",
]

CORE_FILE = "search-parameters.json"
CUSTOM_DIR = "search-parameters"
# The SearchParameters the server also holds as resources (interactions.content).
CONTENT_GLOB = "content/SearchParameter-*.json"
BINDINGS_FILE = "required-bindings.json"
_CORE = "http://hl7.org/fhir/"
_CORE_VALUE_SETS = "http://hl7.org/fhir/ValueSet/"
# The resource types that are not DomainResources (no text, contained, extensions).
_NOT_DOMAIN_RESOURCES = frozenset({"Binary", "Bundle", "Parameters"})
_COMMON_BASES = ("Resource", "DomainResource")
# Types whose values the indexer cannot take from a plain expression.
_NOT_EXTRACTED = frozenset({"composite", "special"})
# Types whose rows may be stored under other parameters' names (`stored_under`). Reference
# rows are read by name outside search (includes, access, reports, integrity), so never.
_STORED_UNDER_TYPES = frozenset(
    {"token", "string", "date", "number", "quantity", "uri", "composite"}
)
_ROOT = re.compile(r"^\(*\s*([A-Za-z]+)")


@dataclass(frozen=True, slots=True)
class SearchParameter:
    """One SearchParameter definition, reduced to what the server acts on.

    `component` holds, for a composite parameter, (definition url, expression relative to the
    resource) pairs. An empty `modifier` means the modifiers standard for the type.
    """

    url: str
    code: str
    base: tuple[str, ...]
    type: str
    expression: str | None
    target: tuple[str, ...] = ()
    modifier: tuple[str, ...] = ()
    comparator: tuple[str, ...] = ()
    component: tuple[tuple[str, str], ...] = ()
    description: str = ""
    multiple_or: bool | None = None
    multiple_and: bool | None = None

    def expression_for(self, resource_type: str) -> str | None:
        """The part of the expression that applies to one type (`A.x | B.y` → `B.y` for B);
        parts rooted at `Resource`/`DomainResource` are re-rooted at the type."""
        if self.expression is None:
            return None
        parts: list[str] = []
        for part in split_union(self.expression):
            match = _ROOT.match(part)
            root = match.group(1) if match else None
            if root == resource_type:
                parts.append(part)
            elif root in _COMMON_BASES:
                start, end = match.span(1) if match else (0, 0)
                parts.append(part[:start] + resource_type + part[end:])
        return " | ".join(parts) or None

    def description_for(self, resource_type: str) -> str:
        """The description for one type: multi-base definitions list one line per type."""
        prefix = f"* {resource_type}: "
        for line in self.description.splitlines():
            if line.startswith(prefix):
                return line[len(prefix) :]
        return self.description


@dataclass(frozen=True, slots=True)
class CompiledParameter:
    """A parameter ready to index one resource type: `extract(resource)` gives its values;
    when none of `keys` (if known) is a key of the resource, it gives nothing."""

    parameter: SearchParameter
    expression: str
    extract: Extractor
    fast: bool
    keys: frozenset[str] | None


def _strings(value: Any, what: str, url: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"SearchParameter {url}: {what} must be a list of strings")
    return tuple(value)


def _from_json(resource: dict[str, Any], source: str) -> SearchParameter:
    url = resource.get("url")
    if not isinstance(url, str) or not url:
        raise ValueError(f"{source}: a SearchParameter without url")
    for key in ("code", "type"):
        if not isinstance(resource.get(key), str):
            raise ValueError(f"SearchParameter {url} ({source}): {key} is missing")
    base = _strings(resource.get("base"), "base", url)
    if not base:
        raise ValueError(f"SearchParameter {url} ({source}): base is missing")
    expression = resource.get("expression")
    if expression is not None and not isinstance(expression, str):
        raise ValueError(f"SearchParameter {url} ({source}): expression must be a string")
    components = tuple(
        (str(c.get("definition", "")), str(c.get("expression", "")))
        for c in resource.get("component") or ()
    )
    return SearchParameter(
        url=url,
        code=resource["code"],
        base=base,
        type=resource["type"],
        expression=expression,
        target=_strings(resource.get("target"), "target", url),
        modifier=_strings(resource.get("modifier"), "modifier", url),
        comparator=_strings(resource.get("comparator"), "comparator", url),
        component=components,
        description=str(resource.get("description", "")),
        multiple_or=resource.get("multipleOr"),
        multiple_and=resource.get("multipleAnd"),
    )


def parse_search_parameters(content: Any, source: str) -> list[SearchParameter]:
    """The SearchParameters in a JSON document: one SearchParameter or a Bundle of them."""
    if not isinstance(content, dict):
        raise ValueError(f"{source}: not a FHIR resource")
    kind = content.get("resourceType")
    if kind == "SearchParameter":
        return [_from_json(content, source)]
    if kind == "Bundle":
        resources = [entry.get("resource") for entry in content.get("entry") or ()]
        return [
            _from_json(r, source)
            for r in resources
            if isinstance(r, dict) and r.get("resourceType") == "SearchParameter"
        ]
    raise ValueError(f"{source}: expected a SearchParameter or a Bundle, got {kind}")


class SearchParameterRegistry:
    """The search parameters known to the server, by type, code and url."""

    def __init__(
        self, parameters: Iterable[SearchParameter], code_systems: Mapping[str, str] | None = None
    ) -> None:
        # The code system of each `code` element with a required binding (`Patient.gender` →
        # http://hl7.org/fhir/administrative-gender), so a bare code indexes with its system.
        self.code_systems: Mapping[str, str] = dict(code_systems or {})
        self._all: dict[str, SearchParameter] = {}
        for parameter in parameters:
            self._all.pop(parameter.url, None)  # a redefinition moves to the end
            self._all[parameter.url] = parameter
        self._by_base: dict[str, dict[str, SearchParameter]] = {}
        for parameter in self._all.values():
            for base in parameter.base:
                self._by_base.setdefault(base, {})[parameter.code] = parameter
        self._for_type: dict[str, dict[str, SearchParameter]] = {}
        self._compiled: dict[str, tuple[CompiledParameter, ...]] = {}
        self._stored_under: dict[str, dict[str, tuple[str, ...]]] = {}

    def __iter__(self) -> Iterator[SearchParameter]:
        return iter(self._all.values())

    def __len__(self) -> int:
        return len(self._all)

    def all(self) -> tuple[SearchParameter, ...]:
        return tuple(self._all.values())

    def by_url(self, url: str) -> SearchParameter | None:
        return self._all.get(url)

    def resource_types(self) -> tuple[str, ...]:
        """The concrete types some parameter is declared on (not Resource/DomainResource)."""
        return tuple(sorted(b for b in self._by_base if b not in _COMMON_BASES))

    def for_type(self, resource_type: str) -> Mapping[str, SearchParameter]:
        """Every parameter of a type by code, the common Resource/DomainResource ones
        included. `for_type("Resource")` gives the parameters of a system-level search."""
        known = self._for_type.get(resource_type)
        if known is None:
            known = dict(self._by_base.get("Resource", {}))
            if resource_type not in _NOT_DOMAIN_RESOURCES and resource_type != "Resource":
                known.update(self._by_base.get("DomainResource", {}))
            if resource_type not in _COMMON_BASES:
                known.update(self._by_base.get(resource_type, {}))
            self._for_type[resource_type] = known
        return known

    def get(self, resource_type: str, code: str) -> SearchParameter | None:
        return self.for_type(resource_type).get(code)

    def extractors(self, resource_type: str) -> tuple[CompiledParameter, ...]:
        """The parameters of a type whose values come from an expression (composite and
        special ones excluded), each compiled for that type once."""
        compiled = self._compiled.get(resource_type)
        if compiled is None:
            out: list[CompiledParameter] = []
            for parameter in self.for_type(resource_type).values():
                if parameter.type in _NOT_EXTRACTED:
                    continue
                expression = parameter.expression_for(resource_type)
                if expression is None:
                    continue
                out.append(
                    CompiledParameter(
                        parameter,
                        expression,
                        compile_path(expression),
                        uses_fast_path(expression),
                        required_keys(expression),
                    )
                )
            compiled = tuple(out)
            self._compiled[resource_type] = compiled
        return compiled

    def stored_under(self, resource_type: str) -> Mapping[str, tuple[str, ...]]:
        """The parameters of a type whose index rows are those of other parameters, each
        with the codes of those (in the order of its expression): a parameter whose
        expression is the union of other parameters' expressions of the same type, read and
        converted alike, has no rows of its own; a search reads the rows of the others.

        `combo-code` (`Observation.code | Observation.component.code`) is stored as
        `code` and `component-code`; the composite `combo-code-value-quantity`
        (`Observation | Observation.component`, same components) as `code-value-quantity`
        and `component-code-value-quantity`, whose groups are numbered apart within a
        resource, so a repetition still pairs its own components. Derived from the
        definitions, so the store (store/indexing.py) and the search (store/search_sql.py)
        agree for any registry; a change of definitions needs `cmfhir reindex`, as any."""
        found = self._stored_under.get(resource_type)
        if found is None:
            found = self._stored_under[resource_type] = _stored_under(self, resource_type)
        return found


def _stored_under(
    registry: SearchParameterRegistry, resource_type: str
) -> dict[str, tuple[str, ...]]:
    """`SearchParameterRegistry.stored_under`: each parameter's union operands are covered,
    exactly and without overlap, by those of parameters stored under their own code and
    with fewer operands (or as many, first by code), else it is stored under its own."""
    shapes: list[tuple[int, str, tuple[str, ...], tuple[Any, ...]]] = []
    for parameter in registry.for_type(resource_type).values():
        expression = parameter.expression_for(resource_type)
        if parameter.type not in _STORED_UNDER_TYPES or expression is None:
            continue
        if parameter.code.startswith("_"):
            continue
        parts = tuple(dict.fromkeys(split_union(expression)))
        shapes.append(
            (len(parts), parameter.code, parts, _conversion(registry, parameter, expression))
        )
    shapes.sort()
    own: list[tuple[str, frozenset[str], tuple[Any, ...]]] = []
    out: dict[str, tuple[str, ...]] = {}
    for _, code, parts, conversion in shapes:
        left = set(parts)
        cover: list[tuple[str, frozenset[str]]] = []
        for other, other_parts, other_conversion in sorted(own, key=lambda o: -len(o[1])):
            if other_conversion == conversion and other_parts <= left:
                cover.append((other, other_parts))
                left -= other_parts
        if left or not cover:
            own.append((code, frozenset(parts), conversion))
            continue
        order = {part: n for n, part in enumerate(parts)}
        cover.sort(key=lambda c: min(order[p] for p in c[1]))
        out[code] = tuple(other for other, _ in cover)
    return out


def _conversion(
    registry: SearchParameterRegistry, parameter: SearchParameter, expression: str
) -> tuple[Any, ...]:
    """What decides how a parameter's values are converted, besides its expression: its
    type, a token's code system from a required binding, a composite's components (each
    definition's type and expression relative to the repetition)."""
    if parameter.type == "composite":
        components = []
        for url, relative in parameter.component:
            definition = registry.by_url(url)
            if definition is None:
                return ("composite", parameter.url)  # not searchable: stays its own
            components.append((definition.type, relative))
        return ("composite", tuple(components))
    return (parameter.type, registry.code_systems.get(expression))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from error


@lru_cache(maxsize=16)
def _load(profiles_dir: Path) -> SearchParameterRegistry:
    parameters = parse_search_parameters(
        _read_json(profiles_dir / CORE_FILE), str(profiles_dir / CORE_FILE)
    )
    custom = profiles_dir / CUSTOM_DIR
    if custom.is_dir():
        for path in sorted(custom.glob("*.json")):
            parameters.extend(parse_search_parameters(_read_json(path), str(path)))
    for path in sorted(profiles_dir.glob(CONTENT_GLOB)):
        parameters.extend(parse_search_parameters(_read_json(path), str(path)))
    bindings = profiles_dir / BINDINGS_FILE
    systems = _code_systems(_read_json(bindings).get("bindings", {})) if bindings.exists() else {}
    return SearchParameterRegistry(parameters, systems)


def _code_systems(bindings: Mapping[str, Any]) -> dict[str, str]:
    """The code system behind each required binding to a value set of the core spec: the
    core names them alike (ValueSet/administrative-gender draws on administrative-gender)."""
    systems = {}
    for path, binding in bindings.items():
        value_set = str(binding.get("valueSet", "")).split("|", 1)[0]
        if value_set.startswith(_CORE_VALUE_SETS):
            systems[path] = _CORE + value_set.removeprefix(_CORE_VALUE_SETS)
    return systems


def load_registry(profiles_dir: Path) -> SearchParameterRegistry:
    """The registry defined by a `profiles/` directory (read once per directory).

    Raises ValueError naming the file when a definition is unreadable or incomplete."""
    return _load(Path(profiles_dir).resolve())

"""Canonical resources found by url in the store (https://hl7.org/fhir/R4/references.html#canonical),
and ValueSets expanded over the CodeSystems and ValueSets held (`resources.valuesets`)."""

from __future__ import annotations

from typing import Any

from cmfhir.interactions.context import FhirContext
from cmfhir.resources.fhir_versions import R4
from cmfhir.resources.fhirjson import parse_json
from cmfhir.resources.valuesets import (
    MAX_DEPTH,
    Concept,
    ExpansionError,
    binding_expansions,
    expand,
    needs,
)
from cmfhir.search.parse import parse_search
from cmfhir.store import Repository

__all__ = ["expand_value_set", "find_canonical", "value_set_codes"]


def _escaped(value: str) -> str:
    """A search value standing for itself (https://hl7.org/fhir/R4/search.html#escaping)."""
    for special in ("\\", ",", "$", "|"):
        value = value.replace(special, "\\" + special)
    return value


def _split(canonical: str) -> tuple[str, str | None]:
    url, _, version = canonical.partition("|")
    return url, version or None


async def find_canonical(
    ctx: FhirContext, repo: Repository, resource_type: str, canonical: str
) -> dict[str, Any] | None:
    """The stored resource of `resource_type` with this canonical url (`url|version` picks
    the version); of several, the one written last. None when there is none."""
    url, version = _split(canonical)
    if not url:
        return None
    params = [("url", _escaped(url)), ("_sort", "-_lastUpdated")]
    if version is not None:
        params.append(("version", _escaped(version)))
    request = parse_search(ctx.registry, resource_type, params)
    request.count = 1
    page = await repo.search(request, count_up_to=0)
    if not page.matches:
        return None
    found: dict[str, Any] = parse_json(page.matches[0][2])
    return found


async def _held(
    ctx: FhirContext, repo: Repository, resource_type: str, urls: set[str]
) -> dict[str, dict[str, Any]]:
    held: dict[str, dict[str, Any]] = {}
    for url in sorted(urls):
        found = await find_canonical(ctx, repo, resource_type, url)
        if found is not None:
            held[url] = found
    return held


async def expand_value_set(
    ctx: FhirContext, repo: Repository, value_set: dict[str, Any]
) -> list[Concept]:
    """Every concept of `value_set`, fetching the CodeSystems and ValueSets its compose
    names (and theirs, up to `MAX_DEPTH`). Raises ExpansionError when it cannot be done."""
    systems: set[str] = set()
    value_sets: dict[str, dict[str, Any]] = {}
    pending = [value_set]
    for _ in range(MAX_DEPTH + 1):
        wanted: set[str] = set()
        for current in pending:
            more_systems, more_sets = needs(current)
            systems |= more_systems
            wanted |= {u for u in more_sets if u not in value_sets}
        if not wanted:
            break
        found = await _held(ctx, repo, "ValueSet", wanted)
        value_sets.update(found)
        pending = list(found.values())
    code_systems = await _held(ctx, repo, "CodeSystem", systems)
    return expand(value_set, code_systems, value_sets)


async def value_set_codes(
    ctx: FhirContext, repo: Repository, url: str, contained: list[Any] | None = None
) -> list[Concept] | None:
    """The concepts of the value set `url` (a stored ValueSet, one `contained` when the url
    is `#id`, or a required binding of the core specification); None when it is not
    known or cannot be expanded here."""
    try:
        if url.startswith("#"):
            for resource in contained or ():
                if (
                    isinstance(resource, dict)
                    and resource.get("resourceType") == "ValueSet"
                    and resource.get("id") == url[1:]
                ):
                    return await expand_value_set(ctx, repo, resource)
            return None
        stored = await find_canonical(ctx, repo, "ValueSet", url)
        if stored is not None:
            return await expand_value_set(ctx, repo, stored)
    except ExpansionError:
        return None
    bound = binding_expansions(ctx.fhir_version == R4).get(_split(url)[0])
    return list(bound) if bound is not None else None

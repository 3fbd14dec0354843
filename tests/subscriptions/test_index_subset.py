"""The matcher reads a changed version's index values of its Subscriptions' filter
parameters only (`extract_parameters`): the same entries `extract_index` gives for those
parameters, on the R4B examples."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from cmfhir.resources.index_values import (
    IndexingFailed,
    ResourceIndex,
    extract_index,
    extract_parameters,
)
from cmfhir.resources.search_parameters import load_registry
from cmfhir.subscriptions.matching import index_keys

ROOT = Path(__file__).parents[2]
REGISTRY = load_registry(ROOT / "profiles")


def _examples() -> list[dict[str, Any]]:
    path = ROOT / "tests" / "data" / "fhir-examples" / "r4b-examples.ndjson.gz"
    with gzip.open(path) as lines:
        return [json.loads(line, parse_float=Decimal) for line in lines if line.strip()]


def _of(index: ResourceIndex, params: set[str]) -> tuple[set[Any], ...]:
    return (
        {t for t in index.token if t.param in params},
        {r for r in index.reference if r.param in params},
        {u for u in index.uri if u.param in params},
    )


def test_a_subset_of_parameters_gives_what_the_whole_index_gives_for_them() -> None:
    compared = 0
    for number, resource in enumerate(_examples()):
        kinds = REGISTRY.for_type(resource["resourceType"])
        # The filters a topic may key on: plain token, reference and uri parameters.
        params = {c for c, p in kinds.items() if p.type in ("token", "reference", "uri")}
        some = {c for n, c in enumerate(sorted(params)) if n % 3 == number % 3}
        try:
            whole = extract_index(resource, REGISTRY)
        except IndexingFailed:
            continue
        part = extract_parameters(resource, REGISTRY, some)
        assert _of(part, some) == _of(whole, some), resource.get("id")
        assert _of(part, params - some) == (set(), set(), set())
        assert index_keys(part, some) == index_keys(whole, some)
        compared += 1
    assert compared > 400

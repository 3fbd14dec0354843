"""What indexing a resource costs the server: index value extraction (`extract_index`) and
index-row building (`store/indexing.index_records`, the tuples the store COPYs) for the
resources of the Synthea Bundles and of the caseload's member Bundles (the ingest harness's
shape), in one process.

    .venv/bin/python -m bench.index_cost [--synthea DIR] [--members 40] [--repeat 5]
                                         [--profile N]

Compares, in alternating passes (best of `--repeat` each), the shared evaluation (each
union operand read and converted once per resource, the default) with the generic one
(`extract_index(..., generic=True)`: every parameter's whole expression), and checks that
both give the same entries. On a checkout whose `extract_index` has no `generic` (main
before issue #10's change) it measures the default only, so two checkouts can be compared
by running this in each. Times are CPU time of this process (`time.process_time`). Also
counts the index rows per resource, and those the parameters stored as others' rows
(`SearchParameterRegistry.stored_under`) would add if they had rows of their own.
`--profile N` prints the N functions with the most own time (cProfile) of the default.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import inspect
import pstats
import time
from pathlib import Path
from typing import Any

import orjson

import cmfhir
from bench import caseload
from bench.validation_cost import load_resources
from cmfhir.resources import parse_json
from cmfhir.resources.index_values import extract_index
from cmfhir.resources.search_parameters import SearchParameterRegistry, load_registry
from cmfhir.store import indexing
from cmfhir.store.schema import INDEX_TABLES

ROOT = Path(__file__).resolve().parents[1]
SHARED_SYNTHEA = Path("/work/shared/data/synthea")
TEST_SYNTHEA = ROOT / "tests" / "data" / "synthea"


def caseload_resources(members: int, seed: int = 1) -> list[dict[str, Any]]:
    """The resources of `members` member Bundles as the server parses them (JSON bytes)."""
    staff = caseload.make_staff(max(members, 50))
    found = []
    for index in range(members):
        bundle = parse_json(orjson.dumps(caseload.member_bundle(seed, index, staff)))
        found += [entry["resource"] for entry in bundle["entry"]]
    return found


def _extract_seconds(
    resources: list[dict[str, Any]], registry: SearchParameterRegistry, generic: bool | None
) -> float:
    start = time.process_time()
    if generic is None:
        for resource in resources:
            extract_index(resource, registry)
    else:
        for resource in resources:
            extract_index(resource, registry, generic=generic)
    return time.process_time() - start


def _rows_seconds(resources: list[dict[str, Any]], registry: SearchParameterRegistry) -> float:
    """The store's work from extracted values to the tuples it COPYs: `index_records`, or
    on a checkout without it, `index_rows` and the tuples made from their dicts."""
    indexes = [(r["resourceType"], extract_index(r, registry)) for r in resources]
    records = getattr(indexing, "index_records", None)
    start = time.process_time()
    if records is not None:
        for rid, (kind, index) in enumerate(indexes):
            records(rid, kind, index)
    else:
        columns = {kind: [c.name for c in table.c] for kind, table in INDEX_TABLES.items()}
        for rid, (kind, index) in enumerate(indexes):
            for family, rows in indexing.index_rows(rid, kind, index).items():
                [tuple(row[c] for c in columns[family]) for row in rows]
    return time.process_time() - start


def measure(
    resources: list[dict[str, Any]], registry: SearchParameterRegistry, repeat: int
) -> dict[str, float]:
    """CPU µs per resource, best of `repeat` alternating passes."""
    has_generic = "generic" in inspect.signature(extract_index).parameters
    modes: dict[str, bool | None] = (
        {"generic": True, "shared": False} if has_generic else {"default": None}
    )
    for generic in modes.values():  # compiled expressions, caches
        _extract_seconds(resources[:500], registry, generic)
    gc.collect()
    gc.freeze()  # as the server does after start-up: the loaded resources are not rescanned
    best = dict.fromkeys([*modes, "index_records"], float("inf"))
    for n in range(repeat):
        order = list(modes.items()) if n % 2 == 0 else list(reversed(modes.items()))
        for name, generic in order:
            best[name] = min(best[name], _extract_seconds(resources, registry, generic))
        best["index_records"] = min(best["index_records"], _rows_seconds(resources, registry))
    return {name: seconds / len(resources) * 1e6 for name, seconds in best.items()}


def differences(resources: list[dict[str, Any]], registry: SearchParameterRegistry) -> int:
    """Resources whose entries differ between the generic and the shared evaluation."""
    if "generic" not in inspect.signature(extract_index).parameters:
        return 0
    return sum(
        extract_index(r, registry, generic=True) != extract_index(r, registry) for r in resources
    )


def rows_per_resource(
    resources: list[dict[str, Any]], registry: SearchParameterRegistry
) -> dict[str, float]:
    """Index rows per resource (and per Observation) that `index_records` stores, and those
    it would store for the parameters stored under others' names
    (`ResourceIndex.stored_elsewhere`) if they had rows of their own."""
    stored = everything = observations = observation_rows = 0
    for rid, resource in enumerate(resources):
        index = extract_index(resource, registry)
        kind = resource["resourceType"]
        rows = sum(len(r) for r in indexing.index_records(rid, kind, index).values())
        elsewhere = getattr(index, "stored_elsewhere", None)
        if elsewhere:
            index.stored_elsewhere = frozenset()
            everything += sum(len(r) for r in indexing.index_records(rid, kind, index).values())
            index.stored_elsewhere = elsewhere
        else:
            everything += rows
        stored += rows
        if kind == "Observation":
            observations += 1
            observation_rows += rows
    n = len(resources)
    return {
        "stored": round(stored / n, 2),
        "if every parameter had its own": round(everything / n, 2),
        "per Observation": round(observation_rows / max(observations, 1), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--synthea", type=Path, default=SHARED_SYNTHEA if SHARED_SYNTHEA.is_dir() else TEST_SYNTHEA
    )
    parser.add_argument("--members", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    args = parser.parse_args()

    # The profiles of the checkout whose code runs (this tool can run against another one).
    registry = load_registry(Path(cmfhir.__file__).resolve().parents[2] / "profiles")
    synthea = load_resources(args.synthea)
    members = caseload_resources(args.members)
    for name, resources in (("Synthea", synthea), ("caseload", members)):
        if not resources:
            continue
        figures = measure(resources, registry, args.repeat)
        shown = ", ".join(f"{k} {v:.1f}" for k, v in figures.items())
        print(f"{name}: {len(resources)} resources; CPU µs per resource: {shown}")
        print(f"  resources whose entries differ: {differences(resources, registry)}")
        print(f"  index rows per resource: {rows_per_resource(resources, registry)}")
    if args.profile:
        everything = synthea + members
        profile = cProfile.Profile()
        profile.runcall(lambda: [extract_index(r, registry) for r in everything])
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    main()

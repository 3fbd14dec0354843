"""What validation costs: every resource of the Synthea Bundles validated with and without
the core invariants, in one process, best of `--repeat` alternating passes each; and the
walk that checks required elements, dates and ranges itself against the validation that
built the fhir.resources model of each resource for them (`--models`, issue #10).

    .venv/bin/python -m bench.validation_cost [--synthea DIR] [--repeat N] [--models]

Times are CPU time of this process (the machine may be shared). Prints resources/s for
both, the invariants' cost per resource (the difference, and the time measured inside
invariant evaluation), and that cost as a share of validating a resource. Validation is one
step of an ingested write (parsing, indexing, the database and HTTP come on top), so the
share of ingest time is smaller than the share printed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from cmfhir.resources import ResourceValidator, parse_json
from cmfhir.resources.invariants import Invariant

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SYNTHEA = ROOT / "tests" / "data" / "synthea"


def load_resources(directory: Path) -> list[dict[str, Any]]:
    resources = []
    for path in sorted(directory.glob("*.json")):
        bundle = parse_json(path.read_bytes())
        resources += [entry["resource"] for entry in bundle["entry"] if "resource" in entry]
    return resources


def seconds(validator: ResourceValidator, resources: list[dict[str, Any]]) -> float:
    start = time.process_time()
    for resource in resources:
        validator.validate(resource, expected_type=resource["resourceType"])
    return time.process_time() - start


def rates(
    validator: ResourceValidator, resources: list[dict[str, Any]], repeat: int
) -> tuple[float, float]:
    """Resources/s without and with invariants, best of `repeat` passes each, the two
    alternating so that a change in the machine's load touches both alike."""
    best = {False: float("inf"), True: float("inf")}
    for _ in range(repeat):
        for check in (False, True):
            validator.check_invariants = check
            best[check] = min(best[check], seconds(validator, resources))
    validator.check_invariants = True
    return len(resources) / best[False], len(resources) / best[True]


def invariant_seconds(validator: ResourceValidator, resources: list[dict[str, Any]]) -> float:
    """CPU time spent inside invariant evaluation itself over one pass (each call timed, so
    this includes the timer's own small cost)."""
    spent = 0.0
    holds = Invariant.holds

    def timed(self: Invariant, node: Any, resource: Any, root: Any) -> bool:
        nonlocal spent
        start = time.process_time()
        try:
            return holds(self, node, resource, root)
        finally:
            spent += time.process_time() - start

    Invariant.holds = timed  # type: ignore[method-assign]
    try:
        seconds(validator, resources)
    finally:
        Invariant.holds = holds  # type: ignore[method-assign]
    return spent


def models_against_walk(resources: list[dict[str, Any]], repeat: int) -> tuple[float, float]:
    """CPU seconds per resource of validation building the fhir.resources models and of the
    walk alone, best of `repeat` alternating passes each (invariants on in both)."""
    validators = {
        True: ResourceValidator.from_profiles(ROOT / "profiles", models=True),
        False: ResourceValidator.from_profiles(ROOT / "profiles"),
    }
    for validator in validators.values():
        seconds(validator, resources[:500])
    best = {True: float("inf"), False: float("inf")}
    for _ in range(repeat):
        for models, validator in validators.items():
            best[models] = min(best[models], seconds(validator, resources))
    return best[True] / len(resources), best[False] / len(resources)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthea", type=Path, default=DEFAULT_SYNTHEA)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--models", action="store_true", help="compare the models-based validation with the walk"
    )
    args = parser.parse_args()

    resources = load_resources(args.synthea)
    if not resources:
        raise SystemExit(f"no Synthea Bundles in {args.synthea}")
    if args.models:
        models, walk = models_against_walk(resources, args.repeat)
        print(f"{len(resources)} Synthea resources from {args.synthea}")
        print(f"validation building the fhir.resources models: {models * 1e6:.0f} us (CPU) each")
        print(f"validation by the walk alone:                  {walk * 1e6:.0f} us (CPU) each")
        print(f"saved: {(models - walk) * 1e6:.0f} us per resource, {1 - walk / models:.1%}")
        return
    validator = ResourceValidator.from_profiles(ROOT / "profiles")
    seconds(validator, resources[:500])  # element tables and compiled expressions
    without, with_invariants = rates(validator, resources, args.repeat)

    inside_us = invariant_seconds(validator, resources) / len(resources) * 1e6
    cost_us = (1 / with_invariants - 1 / without) * 1e6
    print(f"{len(resources)} Synthea resources from {args.synthea}")
    print(f"validation without invariants: {without:,.0f} resources/s")
    print(f"validation with invariants:    {with_invariants:,.0f} resources/s")
    print(
        f"difference: {cost_us:.0f} us (CPU) per resource, "
        f"{cost_us / (1e6 / without):.1%} of validating without them"
    )
    print(
        f"time inside invariant evaluation: {inside_us:.0f} us (CPU) per resource, "
        f"{inside_us / (1e6 / with_invariants):.1%} of validating with them"
    )


if __name__ == "__main__":
    main()

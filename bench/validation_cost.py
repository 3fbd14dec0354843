"""What FHIRPath invariant checking costs: every resource of the Synthea Bundles validated
with and without the core invariants, in one process, best of `--repeat` alternating passes each.

    .venv/bin/python -m bench.validation_cost [--synthea DIR] [--repeat N] [--ingest-rate R]

Times are CPU time of this process (the machine may be shared). Prints resources/s for
both, the invariants' cost per resource, and that cost as a share of validation alone and
of the time one resource takes at the ingest rate given (resources/s of the standard run;
see README.md).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from cmfhir.resources import ResourceValidator, parse_json

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthea", type=Path, default=DEFAULT_SYNTHEA)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--ingest-rate", type=float, default=2482.0)
    args = parser.parse_args()

    resources = load_resources(args.synthea)
    if not resources:
        raise SystemExit(f"no Synthea Bundles in {args.synthea}")
    validator = ResourceValidator.from_profiles(ROOT / "profiles")
    seconds(validator, resources[:500])  # element tables and compiled expressions
    without, with_invariants = rates(validator, resources, args.repeat)

    cost_us = (1 / with_invariants - 1 / without) * 1e6
    share = cost_us / (1e6 / args.ingest_rate)
    print(f"{len(resources)} Synthea resources from {args.synthea}")
    print(f"validation without invariants: {without:,.0f} resources/s")
    print(f"validation with invariants:    {with_invariants:,.0f} resources/s")
    print(
        f"invariants cost {cost_us:.0f} us (CPU) per resource, "
        f"{cost_us / (1e6 / without):.1%} of validating without them"
    )
    print(
        f"= {share:.1%} of the {1e6 / args.ingest_rate:.0f} us one resource takes at "
        f"{args.ingest_rate:,.0f} resources/s ingest"
    )


if __name__ == "__main__":
    main()

"""Import against ingest, in one process: the CPU (this process's with its validating
children, and PostgreSQL's backends') per resource of ingest (a member's transaction Bundle
through `process_bundle`, as a `POST /` does minus the HTTP stack), of NDJSON import written
entry by entry (`import_lines(ready=False)`: each line versioned and indexed by the writer
and stored through `Repository.write`, as before the bulk path) and of NDJSON import as it
runs (`ready=True`: lines made ready where they are read, new resources COPYed), every line
a `PUT Type/id`; interleaved round by round (the order rotating) on the same caseload
generator after an untimed warm-up round, so the machine's load falls on all alike.

    python -m bench.import_cost --database-url postgresql://... [--members 40 --rounds 4]
    python -m bench.import_cost --data-dir .data/bench-import   # embedded PostgreSQL

Each member is written once, by one side (import: member bundles turned into NDJSON lines
with their urn:uuid references made `Type/id`). Prints JSON; `--profile FILE` also writes a
cProfile of the import side."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench.caseload import make_staff, member_bundle, staff_bundle

__all__ = ["as_lines", "main"]

Resource = dict[str, Any]


def _rewrite(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {k: _rewrite(v, names) for k, v in value.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in names:
            out["reference"] = names[ref]
        return out
    if isinstance(value, list):
        return [_rewrite(v, names) for v in value]
    return value


def as_lines(bundle: Resource) -> list[bytes]:
    """A member's transaction Bundle as NDJSON lines: each resource with the id its
    `urn:uuid:` fullUrl names, references to other entries made `Type/id`."""
    names = {}
    for entry in bundle["entry"]:
        full_url = entry.get("fullUrl", "")
        if full_url.startswith("urn:uuid:"):
            names[full_url] = f"{entry['resource']['resourceType']}/{full_url[9:]}"
    lines = []
    for entry in bundle["entry"]:
        resource = _rewrite(entry["resource"], names)
        full_url = entry.get("fullUrl", "")
        resource["id"] = full_url[9:] if full_url.startswith("urn:uuid:") else str(uuid.uuid4())
        lines.append(orjson.dumps(resource))
    return lines


def _own_cpu() -> float:
    """CPU seconds of this process and of its children (the import's validators)."""
    return time.process_time() + _children_cpu()


def _children_cpu() -> float:
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _postmaster(data_dir: Path) -> psutil.Process | None:
    """The embedded PostgreSQL's postmaster (the one started on `data_dir`)."""
    wanted = str(data_dir.resolve())
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or ())
        postgres = process.info["name"] in ("postgres", "postmaster")
        if postgres and wanted in cmdline and "-D" in cmdline:
            return process
    return None


def _postgres_cpu(postmaster: psutil.Process | None) -> float:
    """CPU seconds of the postmaster and its backends (those gone included)."""
    if postmaster is None:
        return 0.0
    total = 0.0
    for process in [postmaster, *postmaster.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
        if process is postmaster:
            total += times.children_user + times.children_system
    return total


_SIDES = ("ingest", "import_entries", "import")


async def _measure(
    args: argparse.Namespace, url: str, postmaster: psutil.Process | None
) -> dict[str, Any]:
    from cmfhir.app import open_context
    from cmfhir.config import Settings
    from cmfhir.exchange.import_validators import validator_pool
    from cmfhir.exchange.importing import ImportProgress, check_chunk, import_lines
    from cmfhir.interactions import process_bundle

    settings = Settings(database_url=url)
    staff = make_staff(args.members * (args.rounds + 1) * len(_SIDES))
    base = "http://localhost/fhir"
    sides: dict[str, dict[str, float]] = {
        side: {
            "resources": 0,
            "cpu_s": 0.0,
            "validators_cpu_s": 0.0,
            "postgres_cpu_s": 0.0,
            "wall_s": 0.0,
        }
        for side in _SIDES
    }
    profiles = {
        side: cProfile.Profile() if path else None
        for side, path in (("import", args.profile), ("ingest", args.profile_ingest))
    }
    async with open_context(settings) as ctx:
        validators = validator_pool(ctx, args.validators)
        if validators is not None:  # started (definitions loaded) before anything is timed
            n = args.validators
            list(validators.map(check_chunk, ["4.0"] * n, [[]] * n))
        await process_bundle(ctx, staff_bundle(staff), base=base, representation=False)
        member = 0
        # Round 0 warms every side up (models built, statements prepared) and is not counted.
        for turn in range(args.rounds + 1):
            for side in _SIDES[turn % 3 :] + _SIDES[: turn % 3]:
                size = args.members if turn else 3
                bundles = [member_bundle(args.seed, member + n, staff) for n in range(size)]
                member += size
                if side == "ingest":
                    bodies = [orjson.dumps(b) for b in bundles]
                    count = sum(len(b["entry"]) for b in bundles)
                else:
                    lines = [line for b in bundles for line in as_lines(b)]
                    count = len(lines)
                profile = profiles.get(side) if turn else None
                pg, cpu, wall = _postgres_cpu(postmaster), _own_cpu(), time.perf_counter()
                children = _children_cpu()
                if profile is not None:
                    profile.enable()
                if side == "ingest":
                    for body in bodies:
                        await process_bundle(
                            ctx, orjson.loads(body), base=base, representation=False
                        )
                else:
                    progress = await import_lines(
                        ctx,
                        lines,
                        ImportProgress(),
                        base=base,
                        batch=args.batch,
                        validators=validators,
                        ready=side == "import",
                    )
                    if progress.refused:
                        raise RuntimeError(f"{progress.refused} lines refused")
                if profile is not None:
                    profile.disable()
                if not turn:
                    continue
                figures = sides[side]
                figures["cpu_s"] += _own_cpu() - cpu
                figures["validators_cpu_s"] += _children_cpu() - children
                figures["wall_s"] += time.perf_counter() - wall
                figures["postgres_cpu_s"] += _postgres_cpu(postmaster) - pg
                figures["resources"] += count
        if validators is not None:
            validators.shutdown()
    for side, path in (("import", args.profile), ("ingest", args.profile_ingest)):
        profile = profiles[side]
        if profile is not None:
            profile.dump_stats(path)
    out: dict[str, Any] = {
        "members_per_round": args.members,
        "rounds": args.rounds,
        "batch": args.batch,
        "validators": args.validators,
    }
    for side, figures in sides.items():
        n = figures["resources"] or 1
        out[side] = {
            "resources": int(figures["resources"]),
            "cpu_ms_per_resource": round(1000 * figures["cpu_s"] / n, 3),
            "of_which_validators_ms": round(1000 * figures["validators_cpu_s"] / n, 3),
            "postgres_cpu_ms_per_resource": round(1000 * figures["postgres_cpu_s"] / n, 3),
            "wall_resources_per_second": round(n / figures["wall_s"], 1),
        }
    ingest = out["ingest"]["cpu_ms_per_resource"] + out["ingest"]["postgres_cpu_ms_per_resource"]
    for side in ("import_entries", "import"):
        both = out[side]["cpu_ms_per_resource"] + out[side]["postgres_cpu_ms_per_resource"]
        out[f"{side}_cpu_over_ingest_cpu"] = round(both / ingest, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--data-dir", type=Path, default=Path(".data/bench-import"))
    parser.add_argument("--members", type=int, default=20, help="members per side per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--seed", type=int, default=int(time.time()), help="new members each run")
    parser.add_argument("--profile", help="a cProfile of the import side, to this file")
    parser.add_argument("--profile-ingest", help="a cProfile of the ingest side, to this file")
    parser.add_argument(
        "--validators", type=int, default=0, help="import's validating processes (0: none)"
    )
    args = parser.parse_args(argv)
    url = args.database_url
    postmaster = None
    if url is None:  # PostgreSQL's CPU is measured only on the embedded one
        from cmfhir.store.database import embedded_url

        url = embedded_url(args.data_dir)
        postmaster = _postmaster(args.data_dir)
    print(json.dumps(asyncio.run(_measure(args, url, postmaster)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

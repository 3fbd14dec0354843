"""`python -m bench`: the cmfhir benchmark harness (see bench/README.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.gc_pauses import GC_MODES
from bench.runner import SCENARIOS, STANDARD_SCENARIOS, Options, run
from bench.soak import SoakOptions

QUICK_MEMBERS = 1_000
STANDARD_MEMBERS = 10_000


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown scenario(s) {unknown}; known: {SCENARIOS}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1,000 members, short phases")
    parser.add_argument("--members", type=int, help="members to generate (default 10,000)")
    parser.add_argument("--seed", type=int, default=1, help="caseload seed (default 1)")
    parser.add_argument(
        "--scenarios",
        type=_scenarios,
        default=STANDARD_SCENARIOS,
        help=f"of {','.join(SCENARIOS)} (default: all but audit and soak)",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="ingest clients (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="server workers (default 2)")
    parser.add_argument("--duration", type=float, help="seconds per read/search measurement")
    parser.add_argument("--synthea", type=Path, help="load Synthea Bundles from this directory")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(".data/bench"), help="parent of run data dirs"
    )
    parser.add_argument("--keep-data", action="store_true", help="keep the run's data dir")
    parser.add_argument(
        "--database-url", help="use this PostgreSQL instead of a fresh embedded one"
    )
    parser.add_argument(
        "--profile",
        type=_scenarios,
        default=(),
        help="py-spy the server workers during these scenarios (pip install py-spy)",
    )
    parser.add_argument(
        "--gzip",
        action="store_true",
        help="httpx clients accept gzip like a default client (default: identity, as wrk)",
    )
    parser.add_argument(
        "--ingest-fresh-connections",
        action="store_true",
        help="ingest opens a connection per Bundle (spread over the workers at each accept)",
    )
    parser.add_argument(
        "--soak-minutes", type=float, default=30.0, help="soak duration (default 30)"
    )
    parser.add_argument(
        "--soak-rate", type=float, default=50.0, help="soak requests/s, all clients (default 50)"
    )
    parser.add_argument(
        "--server-gc",
        choices=GC_MODES,
        help="log the server workers' garbage collections (freeze: and gc.freeze() them)",
    )
    parser.add_argument(
        "--audit",
        choices=("on", "off"),
        default="on",
        help="the server's audit trail (default on, as in production); the `audit` "
        "scenario runs read with it off and on",
    )
    parser.add_argument(
        "--background",
        choices=("apart", "in"),
        default="apart",
        help="where the background workers run: `apart` (default) in a `cmfhir worker` "
        "beside `cmfhir serve --no-workers`, `in` inside the serve workers",
    )
    parser.add_argument(
        "--no-soak-control",
        action="store_true",
        help="skip the soak's control phase against a freshly started server",
    )
    args = parser.parse_args(argv)
    soak_only = set(args.scenarios) == {"soak"}
    members = args.members or (QUICK_MEMBERS if args.quick or soak_only else STANDARD_MEMBERS)
    duration = args.duration or (1.0 if args.quick else 5.0)
    options = Options(
        members=members,
        seed=args.seed,
        scenarios=args.scenarios,
        concurrency=args.concurrency,
        workers=args.workers,
        read_seconds=duration,
        search_seconds=duration,
        data_root=args.data_dir,
        keep_data=args.keep_data,
        database_url=args.database_url,
        synthea=args.synthea,
        profile=args.profile,
        quick=args.quick,
        gzip=args.gzip,
        fresh_connections=args.ingest_fresh_connections,
        server_gc=args.server_gc,
        audit=args.audit,
        background=args.background,
        soak=SoakOptions(
            minutes=args.soak_minutes,
            rate=args.soak_rate,
            seed=args.seed,
            workers=args.workers,
            control=not args.no_soak_control,
        ),
    )
    run(options)
    return 0


if __name__ == "__main__":
    sys.exit(main())

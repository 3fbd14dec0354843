"""`cmfhir report <name> --organization ID --period 2026-10 --format csv|table|json`
(every row, or `--count N [--offset N]` for a page of them)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

__all__ = ["add_commands"]

_NAMES = (
    "caseload",
    "contact-compliance",
    "timeliness",
    "gaps",
    "member-experience",
    "tcm-encounters",
)


def _report(args: argparse.Namespace) -> int:
    from cmfhir.app import open_context
    from cmfhir.auth.principal import TRUSTED
    from cmfhir.config import Settings
    from cmfhir.errors import FhirError
    from cmfhir.reports.config import load_report_config
    from cmfhir.reports.render import as_csv, as_table
    from cmfhir.reports.run import Page, Scope, parse_period, run_report

    settings = Settings()

    async def run() -> Any:
        async with open_context(settings) as ctx:
            return await run_report(
                ctx.store,
                load_report_config(settings.profiles_dir),
                TRUSTED,
                args.name,
                Scope(args.organization, args.practitioner, args.group),
                parse_period(args.period),
                Page(args.offset, args.count),
            )

    try:
        report = asyncio.run(run())
    except FhirError as error:
        print(f"cmfhir report: {error.diagnostics}", file=sys.stderr)
        return 2
    if args.format == "csv":
        sys.stdout.write(as_csv(report))
    elif args.format == "json":
        sys.stdout.write(json.dumps(report.as_json(), indent=2) + "\n")
    else:
        sys.stdout.write(as_table(report))
    return 0


def _whole(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number, 0 or more")
    return int(value)


def add_commands(commands: Any) -> None:
    summary = "print a care-management report (docs/reports.md)"
    parser: argparse.ArgumentParser = commands.add_parser(
        "report", help=summary, description=summary
    )
    parser.add_argument("name", choices=_NAMES)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--organization", metavar="ID", help="an Organization's members")
    scope.add_argument("--practitioner", metavar="ID", help="a care manager's caseload")
    scope.add_argument("--group", metavar="ID", help="a Group's members")
    parser.add_argument(
        "--period", required=True, metavar="YYYY-MM[..YYYY-MM]", help="whole months"
    )
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument(
        "--count", type=_whole, metavar="N", help="this many rows (default: every row)"
    )
    parser.add_argument(
        "--offset", type=_whole, default=0, metavar="N", help="from this row (0: the first)"
    )
    parser.set_defaults(func=_report)

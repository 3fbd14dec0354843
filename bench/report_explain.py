"""PostgreSQL's own figures for each report (issue #15): EXPLAIN (ANALYZE) planning and
execution time of every report's SQL over a loaded caseload, for the whole organization and
narrowed as its supervisor and as one care manager, with the CPU time the server process
spent on the run (`time.process_time`). On a shared machine these say more than wall-clock
latencies: they count PostgreSQL's work, not the wait for a core.

Each report returns what `GET /reports/<name>` gives by default (its summary and the first
100 rows); `--all-rows` asks for every row (the CSV download's).

`python -m bench.report_explain (--data-dir DIR | --database-url URL) [--organization ID]
[--as PRACTITIONER]... [--period quarter|year] [--all-rows]`
(the database of a `python -m bench --keep-data` run; the supervisor Practitioner and role
that `bench/reports.py` writes must exist for the narrowed runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from bench.reports import REPORT_NAMES, _periods

__all__ = ["explain_reports"]


async def explain_reports(
    database_url: str | None,
    data_dir: Path,
    organization: str,
    principals: list[str],
    periods: list[str] | None = None,
    all_rows: bool = False,
) -> list[dict[str, Any]]:
    from cmfhir.app import open_context
    from cmfhir.auth.principal import OPEN, Principal
    from cmfhir.config import Settings
    from cmfhir.reports.config import load_report_config
    from cmfhir.reports.run import ALL_ROWS, Page, _parameters, parse_period, reads, run_report
    from cmfhir.reports.run import Scope as ReportScope
    from cmfhir.store.reporting import explain_report

    settings = Settings(
        data_dir=data_dir, **({"database_url": database_url} if database_url else {})
    )
    config = load_report_config(settings.profiles_dir)
    who: dict[str, Principal] = {"all": OPEN}
    for name in principals:
        who[name] = Principal("user", fhir_user=f"Practitioner/{name}", scopes=("user/*.rs",))
    rows = []
    async with open_context(settings) as ctx:
        page = ALL_ROWS if all_rows else Page(0, 100)
        for label, period in _periods().items():
            if periods and label not in periods:
                continue
            for report in REPORT_NAMES:
                for as_whom, principal in who.items():
                    scope = ReportScope(organization)
                    parsed = parse_period(period)
                    started = time.process_time()
                    wall = time.perf_counter()
                    found = await run_report(
                        ctx.store, config, principal, report, scope, parsed, page
                    )
                    cpu = time.process_time() - started
                    seconds = time.perf_counter() - wall
                    async with ctx.store.snapshot(principal) as repo:
                        explained = await explain_report(
                            repo,
                            report,
                            _parameters(config, scope, parsed, page),
                            reads(report, scope),
                        )
                    rows.append(
                        {
                            "report": report,
                            "period": label,
                            "as": as_whom,
                            "rows": found.total_rows,
                            "returned": len(found.rows),
                            "wall_s": round(seconds, 3),
                            "client_cpu_s": round(cpu, 3),
                            "planning_ms": round(sum(p["planning_ms"] for p in explained.values())),
                            "execution_ms": round(
                                sum(p["execution_ms"] for p in explained.values())
                            ),
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.report_explain", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--database-url")
    parser.add_argument("--organization", default="agency")
    parser.add_argument(
        "--as",
        dest="principals",
        action="append",
        default=[],
        help="also narrowed as this Practitioner id (user/*.rs); repeatable",
    )
    parser.add_argument(
        "--period", dest="periods", action="append", choices=("quarter", "year"), default=[]
    )
    parser.add_argument("--all-rows", action="store_true", help="every row, not the first 100")
    options = parser.parse_args()
    asyncio.run(
        explain_reports(
            options.database_url,
            options.data_dir,
            options.organization,
            options.principals,
            options.periods,
            options.all_rows,
        )
    )


if __name__ == "__main__":
    main()

"""The report scenario: a year of care-management activity is first written over the loaded
caseload (bench/report_data.py: monthly contacts by acuity tier, assessments, satisfaction
answers, enrollment changes), then every care-management report for the agency (all
generated members) runs over the caseload's last quarter and last year, over HTTP, each a
few times, then each once narrowed by the access predicate to what the agency's supervisor
may see. Target (issue #15): each report under 2 s for a 10,000-member organization."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench.caseload import AS_OF
from bench.report_data import add_report_activity

__all__ = ["REPORT_NAMES", "run_narrowed_reports", "run_reports"]

REPORT_NAMES = (
    "caseload",
    "contact-compliance",
    "timeliness",
    "gaps",
    "member-experience",
    "tcm-encounters",
)
TARGET_SECONDS = 2.0


def _periods() -> dict[str, str]:
    last = AS_OF.strftime("%Y-%m")
    quarter_start = (AS_OF.month - 3) % 12 + 1
    quarter_year = AS_OF.year - (1 if AS_OF.month <= 2 else 0)
    year_start = AS_OF.month % 12 + 1
    year_year = AS_OF.year - (0 if AS_OF.month == 12 else 1)
    return {
        "quarter": f"{quarter_year}-{quarter_start:02d}..{last}",
        "year": f"{year_year}-{year_start:02d}..{last}",
    }


def run_reports(root_url: str, organization: str, repeats: int = 3) -> list[dict[str, Any]]:
    """`root_url` is the server's root (not /fhir). One row per report and period: the
    median and slowest of `repeats` runs, the rows returned, and whether it met the target."""
    asyncio.run(add_report_activity(f"{root_url}/fhir"))
    rows = []
    with httpx.Client(base_url=root_url, timeout=120) as http:
        for label, period in _periods().items():
            for name in REPORT_NAMES:
                seconds = []
                count = 0
                for _ in range(repeats):
                    started = time.perf_counter()
                    response = http.get(
                        f"/reports/{name}", params={"organization": organization, "period": period}
                    )
                    seconds.append(time.perf_counter() - started)
                    response.raise_for_status()
                    # The summary over every row and the first page of rows (the JSON
                    # default); the count is of every row.
                    count = response.json()["page"]["total"]
                rows.append(
                    {
                        "report": name,
                        "period": f"{label} ({period})",
                        "rows": count,
                        "median_s": round(statistics.median(seconds), 3),
                        "max_s": round(max(seconds), 3),
                        "meets_target": max(seconds) <= TARGET_SECONDS,
                    }
                )
    return rows


def _put(http: httpx.Client, resource: dict[str, Any]) -> None:
    response = http.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    response.raise_for_status()


def run_narrowed_reports(
    root_url: str, database_url: str, data_dir: Path, organization: str
) -> list[dict[str, Any]]:
    """Each report once for the last quarter as the organization's supervisor (a `user/*.rs`
    token whose Practitioner holds a supervisor PractitionerRole there): the access
    predicate narrows every row the report reads. Run in-process (the harness's server has
    authorization off), through the same `run_report` the HTTP endpoint calls."""
    supervisor = "bench-supervisor"
    with httpx.Client(base_url=f"{root_url}/fhir", timeout=120) as http:
        _put(http, {"resourceType": "Practitioner", "id": supervisor, "active": True})
        _put(
            http,
            {
                "resourceType": "PractitionerRole",
                "id": f"{supervisor}-role",
                "active": True,
                "practitioner": {"reference": f"Practitioner/{supervisor}"},
                "organization": {"reference": f"Organization/{organization}"},
                "code": [{"coding": [{"system": _ROLE, "code": "supervisor"}]}],
            },
        )
    return asyncio.run(_narrowed(database_url, data_dir, organization, supervisor))


_ROLE = "https://cmfhir.org/fhir/CodeSystem/care-team-role"


async def _narrowed(
    database_url: str, data_dir: Path, organization: str, supervisor: str
) -> list[dict[str, Any]]:
    from cmfhir.app import open_context
    from cmfhir.auth.principal import Principal
    from cmfhir.config import Settings
    from cmfhir.reports.config import load_report_config
    from cmfhir.reports.run import Scope, parse_period, run_report

    settings = Settings(database_url=database_url, data_dir=data_dir)
    config = load_report_config(settings.profiles_dir)
    principal = Principal("user", fhir_user=f"Practitioner/{supervisor}", scopes=("user/*.rs",))
    period = _periods()["quarter"]
    rows = []
    async with open_context(settings) as ctx:
        for name in REPORT_NAMES:
            started = time.perf_counter()
            found = await run_report(
                ctx.store, config, principal, name, Scope(organization), parse_period(period)
            )
            seconds = time.perf_counter() - started
            rows.append(
                {
                    "report": name,
                    "period": f"quarter ({period}), as supervisor, in-process",
                    "rows": found.total_rows,
                    "median_s": round(seconds, 3),
                    "max_s": round(seconds, 3),
                    "meets_target": seconds <= TARGET_SECONDS,
                }
            )
    return rows
